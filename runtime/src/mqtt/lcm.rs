//! lua-collectd-monitor's message format, so its senders work with medic unchanged:
//! `{"task_id", "timestamp", "service", "command"}` in, `{"task_id", "timestamp", "message",
//! "code"}` out. Unlike the original, every reply carries `task_id` and `code`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{CommandResult as Outcome, Refusal};

/// Reply codes. Below 0x1000 a code is the command's own exit status (or a shell-style status
/// when it did not exit: 124 timed out, 127 could not start, 128+N killed by signal N).
pub mod code {
    /// lua-collectd-monitor: no services are configured.
    pub const NO_SERVICES: i64 = 0x1001;
    /// lua-collectd-monitor: the service is not configured.
    pub const UNKNOWN_SERVICE: i64 = 0x1002;
    /// lua-collectd-monitor: the service has no such command.
    pub const UNKNOWN_COMMAND: i64 = 0x1003;
    /// medic: the request is not valid JSON or lacks `service`/`command`/a usable `task_id`.
    pub const INVALID_REQUEST: i64 = 0x1004;
    /// medic: the policy gate refused (the command is already running for another task or a
    /// rule, or is cooling down).
    pub const REFUSED: i64 = 0x1005;
    /// lua-collectd-monitor: a command with this task id is still running.
    pub const DUPLICATE_RUNNING: i64 = 0x1100;
    /// medic: the request's `timestamp` is older than `mqtt.max_age` (or missing when it is set).
    pub const STALE: i64 = 0x1101;
    /// medic: medic stopped while the command ran; whether it completed is unknown.
    pub const INTERRUPTED: i64 = 0x1102;
    pub const TIMED_OUT: i64 = 124;
    pub const CANNOT_START: i64 = 127;

    // Signed commands (`[mqtt.auth]`, `mqtt::signed`): medic's own.
    /// Not a well-formed envelope, an unknown sender, or a signature that does not verify.
    pub const BAD_SIGNATURE: i64 = 0x1200;
    /// `mqtt.auth.require_signed` is on and the request is not signed.
    pub const UNSIGNED: i64 = 0x1201;
    /// The sender used this nonce before (a replayed request).
    pub const REPLAYED: i64 = 0x1202;
    /// `expires` has passed, is missing, or is further ahead than `mqtt.auth.max_validity`.
    pub const EXPIRED: i64 = 0x1203;
    /// Signed for another node.
    pub const WRONG_NODE: i64 = 0x1204;
    /// The sender may not ask for this (`mqtt.auth.senders.NAME.commands`/`replace_config`).
    pub const OUT_OF_SCOPE: i64 = 0x1205;

    // Replacing collectd's config: lua-collectd-monitor's codes.
    /// A replacement is already in progress.
    pub const CONFIG_IN_PROGRESS: i64 = 0x2000;
    pub const CONFIG_CANNOT_WRITE: i64 = 0x2001;
    /// `collectd -T` refused the new config; the live one is untouched.
    pub const CONFIG_BROKEN: i64 = 0x2002;
    pub const CONFIG_CANNOT_STOP: i64 = 0x2003;
    /// collectd was told to stop but its pid did not go.
    pub const CONFIG_PID_REMAINS: i64 = 0x2004;
    pub const CONFIG_CANNOT_BACK_UP: i64 = 0x2005;
    pub const CONFIG_CANNOT_REPLACE: i64 = 0x2006;
    /// collectd did not start on the new config; the old one is back and collectd runs on it.
    pub const CONFIG_RECOVERED: i64 = 0x2007;
    /// It did not start on the old config either.
    pub const CONFIG_CANNOT_RECOVER: i64 = 0x2008;
    pub const CONFIG_NO_NEW_PID: i64 = 0x2009;

    /// A short meaning, for `medic send` and logs.
    pub fn describe(code: i64) -> Option<&'static str> {
        Some(match code {
            0 => "success",
            NO_SERVICES => "no services configured",
            UNKNOWN_SERVICE => "unknown service",
            UNKNOWN_COMMAND => "unknown command",
            INVALID_REQUEST => "invalid request",
            REFUSED => "refused by policy",
            BAD_SIGNATURE => "bad signature or unknown sender",
            UNSIGNED => "unsigned request refused",
            REPLAYED => "replayed request (nonce used before)",
            EXPIRED => "signed request expired",
            WRONG_NODE => "signed for another node",
            OUT_OF_SCOPE => "not within the sender's scope",
            DUPLICATE_RUNNING => "a command with this task id is still running",
            STALE => "request too old",
            INTERRUPTED => "interrupted by a medic restart",
            TIMED_OUT => "timed out",
            CANNOT_START => "command could not start",
            CONFIG_IN_PROGRESS => "a config replacement is already in progress",
            CONFIG_CANNOT_WRITE => "cannot write the new config",
            CONFIG_BROKEN => "the new config is broken",
            CONFIG_CANNOT_STOP => "cannot stop collectd",
            CONFIG_PID_REMAINS => "collectd's pid did not go",
            CONFIG_CANNOT_BACK_UP => "cannot back up the config",
            CONFIG_CANNOT_REPLACE => "cannot replace the config",
            CONFIG_RECOVERED => "collectd failed on the new config; the old one runs again",
            CONFIG_CANNOT_RECOVER => "collectd failed on the new config and on the old one",
            CONFIG_NO_NEW_PID => "no new pid of collectd",
            _ => return None,
        })
    }
}

/// A remote request as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// A JSON number or string, echoed back as it came.
    pub task_id: Value,
    pub timestamp: Option<String>,
    pub ask: Ask,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// `{"service", "command"}`: run an allow-listed command.
    Run { service: String, command: String },
    /// `{"config"}`: replace collectd's config with this text (send-config.lua).
    ReplaceConfig(String),
}

impl Request {
    /// The task id as a dedupe key: its JSON text, so `7` and `"7"` stay distinct.
    pub fn key(&self) -> String {
        self.task_id.to_string()
    }
}

/// Why a request could not be read; with the task id when one could be found, so the sender
/// can still be answered.
#[derive(Debug, PartialEq)]
pub struct Invalid {
    pub task_id: Option<Value>,
    pub message: String,
}

/// The reply to a remote command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub task_id: Value,
    pub timestamp: String,
    pub message: String,
    pub code: i64,
}

impl Reply {
    pub fn new(task_id: Value, code: i64, message: impl Into<String>) -> Self {
        Self {
            task_id,
            timestamp: now_timestamp(),
            message: message.into(),
            code,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply always serializes")
    }
}

/// Longest task id (as a string), service and command name, and timestamp accepted: a reply
/// echoes them, so a request can never make medic publish more than a small reply.
pub const MAX_FIELD_LEN: usize = 128;

/// Read a request. A task id must be a non-negative integer or a non-empty string.
pub fn parse_request(payload: &[u8]) -> Result<Request, Invalid> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| Invalid {
        task_id: scan_task_id(payload),
        message: format!("invalid JSON: {e}"),
    })?;
    let Value::Object(map) = value else {
        return Err(Invalid {
            task_id: None,
            message: "the request must be a JSON object".into(),
        });
    };
    let task_id = match map.get("task_id") {
        Some(Value::Number(n)) if n.is_u64() => Value::Number(n.clone()),
        Some(Value::String(s)) if s.len() > MAX_FIELD_LEN => {
            return Err(Invalid {
                task_id: None,
                message: format!(
                    "`task_id` is {} bytes long; at most {MAX_FIELD_LEN} are answered",
                    s.len()
                ),
            });
        }
        Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
        Some(other) => {
            return Err(Invalid {
                task_id: None,
                message: format!(
                    "`task_id` must be a non-negative integer or a string, not {other}"
                ),
            });
        }
        None => {
            return Err(Invalid {
                task_id: None,
                message: "`task_id` is missing".into(),
            });
        }
    };
    let text = |field: &str| match map.get(field) {
        Some(Value::String(s)) if s.len() > MAX_FIELD_LEN => Err(format!(
            "`{field}` is {} bytes long; at most {MAX_FIELD_LEN} are allowed",
            s.len()
        )),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("`{field}` must be a non-empty string")),
        None => Err(format!("`{field}` is missing")),
    };
    let invalid = |message: String| Invalid {
        task_id: Some(task_id.clone()),
        message,
    };
    let ask = match map.get("config") {
        Some(_) if map.contains_key("service") || map.contains_key("command") => {
            return Err(invalid(
                "a request has either `config` or `service` and `command`".into(),
            ));
        }
        Some(Value::String(text)) if !text.trim().is_empty() => Ask::ReplaceConfig(text.clone()),
        Some(_) => return Err(invalid("`config` must be collectd.conf's text".into())),
        None => match (text("service"), text("command")) {
            (Ok(service), Ok(command)) => Ask::Run { service, command },
            (Err(message), _) | (_, Err(message)) => return Err(invalid(message)),
        },
    };
    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_FIELD_LEN => Some(s.clone()),
        Some(_) => {
            return Err(Invalid {
                task_id: Some(task_id),
                message: format!(
                    "`timestamp` must be an ISO 8601 string of at most {MAX_FIELD_LEN} bytes"
                ),
            });
        }
    };
    Ok(Request {
        task_id,
        timestamp,
        ask,
    })
}

/// The `task_id` a request would be answered by, whether or not the request is valid: to
/// address a refusal.
pub fn task_id_of(payload: &[u8]) -> Option<Value> {
    parse_request(payload)
        .map(|r| Some(r.task_id))
        .unwrap_or_else(|invalid| invalid.task_id)
}

/// Find `"task_id": <digits>` in text that is not valid JSON (truncated, a stray comma), so
/// the sender still gets an error reply instead of waiting for its timeout.
fn scan_task_id(payload: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(payload).ok()?;
    let after = &text[text.find("\"task_id\"")? + "\"task_id\"".len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let digits: &str = &after[..after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len())];
    digits.parse::<u64>().ok().map(Value::from)
}

/// How old a request is, from its ISO 8601 `timestamp`; `Err` when it cannot be read, or
/// when it lies further in the future than clocks may differ (`max_skew`): a far-future stamp
/// must never pass for fresh.
pub fn age(
    timestamp: &str,
    now: jiff::Timestamp,
    max_skew: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let t: jiff::Timestamp = timestamp
        .parse()
        .map_err(|e| format!("`timestamp` {timestamp:?} is not ISO 8601: {e}"))?;
    let span = now.duration_since(t);
    if span.is_negative() {
        let ahead = std::time::Duration::try_from(-span).unwrap_or(std::time::Duration::MAX);
        if ahead > max_skew {
            return Err(format!(
                "`timestamp` {timestamp:?} is {}s in the future; clocks may differ by {}s \
                 (mqtt.max_clock_skew)",
                ahead.as_secs(),
                max_skew.as_secs()
            ));
        }
        return Ok(std::time::Duration::ZERO);
    }
    Ok(span.try_into().unwrap_or(std::time::Duration::ZERO))
}

/// Now, as lua-collectd-monitor writes it: `2020-11-26T00:41:19Z`.
pub fn now_timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A command as `run-remote` and `medic send` publish it.
pub fn command_payload(task_id: u64, service: &str, command: &str) -> Vec<u8> {
    serde_json::to_vec(&command_request(task_id, service, command))
        .expect("a command always serializes")
}

/// The same request as a JSON object, for a signer to add its fields to.
pub fn command_request(
    task_id: u64,
    service: &str,
    command: &str,
) -> serde_json::Map<String, Value> {
    let mut request = serde_json::Map::new();
    request.insert("task_id".into(), task_id.into());
    request.insert("timestamp".into(), now_timestamp().into());
    request.insert("service".into(), service.into());
    request.insert("command".into(), command.into());
    request
}

/// What send-config.lua sends: a whole collectd.conf.
pub fn config_payload(task_id: u64, config: &str) -> Vec<u8> {
    serde_json::to_vec(&config_request(task_id, config)).expect("a request always serializes")
}

/// The same request as a JSON object, for a signer to add its fields to.
pub fn config_request(task_id: u64, config: &str) -> serde_json::Map<String, Value> {
    let mut request = serde_json::Map::new();
    request.insert("task_id".into(), task_id.into());
    request.insert("timestamp".into(), now_timestamp().into());
    request.insert("config".into(), config.into());
    request
}

/// The reply code and message for an executor outcome.
pub fn outcome_reply(outcome: &Outcome) -> (i64, String) {
    if let Some(refusal) = &outcome.refusal {
        // lua-collectd-monitor's own words for the codes it defines: its senders may match on
        // them (its `mqtt-thread.lua`).
        return match refusal {
            Refusal::NoServices => (
                code::NO_SERVICES,
                format!(
                    "Cannot handle \"{}\" command: No service is configured!",
                    outcome.command
                ),
            ),
            Refusal::UnknownService(service) => (
                code::UNKNOWN_SERVICE,
                format!("Cannot find the service settings for: {service}"),
            ),
            Refusal::UnknownCommand { service, command } => (
                code::UNKNOWN_COMMAND,
                format!("Cannot find {command} command for {service}"),
            ),
            Refusal::AlreadyRunning { .. }
            | Refusal::CoolingDown { .. }
            | Refusal::RateLimited { .. }
            | Refusal::CircuitOpen { .. }
            | Refusal::CircuitTrial { .. }
            | Refusal::TooManyRunning { .. }
            | Refusal::Stopping => (code::REFUSED, refusal.to_string()),
        };
    }
    let message = match &outcome.run.error {
        Some(e) if outcome.run.output.is_empty() => e.clone(),
        Some(e) => format!("{}\n[medic: {e}]", outcome.run.output.trim_end()),
        // As lua-collectd-monitor: the output without its trailing newline (`Hello World!`).
        None => outcome
            .run
            .output
            .strip_suffix('\n')
            .unwrap_or(&outcome.run.output)
            .to_string(),
    };
    let code = match (outcome.run.timed_out, outcome.run.code, outcome.run.signal) {
        (true, _, _) => code::TIMED_OUT,
        (false, Some(c), _) => i64::from(c),
        (false, None, Some(sig)) => 128 + i64::from(sig),
        (false, None, None) => code::CANNOT_START,
    };
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_lua_collectd_monitor_requests() {
        let r = parse_request(
            br#"{"task_id": 3126260400, "timestamp": "2020-11-26T00:41:19Z", "service": "hello", "command": "exec"}"#,
        )
        .unwrap();
        assert_eq!(r.task_id, Value::from(3126260400u64));
        assert_eq!(r.key(), "3126260400");
        assert_eq!(
            r.ask,
            Ask::Run {
                service: "hello".into(),
                command: "exec".into()
            }
        );
        let now: jiff::Timestamp = "2020-11-26T00:42:19Z".parse().unwrap();
        let skew = Duration::from_secs(30);
        assert_eq!(
            age(r.timestamp.as_deref().unwrap(), now, skew).unwrap(),
            Duration::from_secs(60)
        );
        // Slightly ahead (clocks differ) is fresh; far ahead is refused.
        assert_eq!(
            age("2020-11-26T00:42:40Z", now, skew).unwrap(),
            Duration::ZERO
        );
        let err = age("2099-01-01T00:00:00Z", now, skew).unwrap_err();
        assert!(err.contains("in the future"), "{err}");
        let s = parse_request(br#"{"task_id": "a-1", "service": "s", "command": "c"}"#).unwrap();
        assert_eq!(s.key(), "\"a-1\"");
    }

    #[test]
    fn reads_send_config_requests() {
        let r = parse_request(
            br#"{"task_id": 9, "timestamp": "2020-11-26T00:41:19Z", "config": "Interval 10\n"}"#,
        )
        .unwrap();
        assert_eq!(
            r.ask,
            Ask::ReplaceConfig(
                "Interval 10
"
                .into()
            )
        );
        for (payload, why) in [
            (&br#"{"task_id": 9, "config": ""}"#[..], "`config` must be"),
            (br#"{"task_id": 9, "config": 5}"#, "`config` must be"),
            (
                br#"{"task_id": 9, "config": "x", "service": "s", "command": "c"}"#,
                "either `config` or",
            ),
        ] {
            let e = parse_request(payload).unwrap_err();
            assert_eq!(e.task_id, Some(Value::from(9)));
            assert!(e.message.contains(why), "{}", e.message);
        }
        let sent: Value = serde_json::from_slice(&config_payload(
            7,
            "Interval 1
",
        ))
        .unwrap();
        assert_eq!(
            sent["config"],
            "Interval 1
"
        );
        assert_eq!(sent["task_id"], 7);
    }

    #[test]
    fn invalid_requests_keep_the_task_id_when_it_can_be_read() {
        let e = parse_request(br#"{"task_id": 42, "service": "hello", "command": }"#).unwrap_err();
        assert_eq!(e.task_id, Some(Value::from(42)));
        assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
        let e = parse_request(br#"{"task_id": 43, "service": "hello"}"#).unwrap_err();
        assert_eq!(e.task_id, Some(Value::from(43)));
        assert_eq!(e.message, "`command` is missing");
        let e = parse_request(b"hello").unwrap_err();
        assert_eq!(e.task_id, None);
        let e = parse_request(br#"{"task_id": -1, "service": "a", "command": "b"}"#).unwrap_err();
        assert_eq!(e.task_id, None);
        let e = parse_request(b"[1]").unwrap_err();
        assert_eq!(e.message, "the request must be a JSON object");
        // Nothing long is echoed back: long fields are refused, a long task id is not answered.
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let e = parse_request(
            format!(r#"{{"task_id": 44, "service": "{long}", "command": "b"}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.task_id, Some(Value::from(44)));
        assert_eq!(
            e.message,
            "`service` is 129 bytes long; at most 128 are allowed"
        );
        let e = parse_request(
            format!(r#"{{"task_id": "{long}", "service": "a", "command": "b"}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.task_id, None);
        let e = parse_request(
            format!(r#"{{"task_id": 45, "timestamp": "{long}", "service": "a", "command": "b"}}"#)
                .as_bytes(),
        )
        .unwrap_err();
        assert!(!e.message.contains(&long), "{}", e.message);
    }

    #[test]
    fn replies_have_the_original_field_names_and_a_utc_timestamp() {
        let r = Reply::new(Value::from(7), 0, "Hello World!\n");
        let text = String::from_utf8(r.to_json()).unwrap();
        assert!(text.starts_with(r#"{"task_id":7,"timestamp":""#), "{text}");
        assert!(
            text.ends_with(r#"Z","message":"Hello World!\n","code":0}"#),
            "{text}"
        );
    }

    fn outcome() -> Outcome {
        Outcome {
            action_id: 1,
            service: "s".into(),
            command: "c".into(),
            refusal: None,
            run: crate::event::RunResult {
                code: Some(0),
                signal: None,
                output: "ok\n".into(),
                error: None,
                timed_out: false,
                interrupted: false,
                duration: Duration::ZERO,
            },
        }
    }

    /// Every code lua-collectd-monitor defines, with its reply text word for word.
    #[test]
    fn refusals_read_as_lua_collectd_monitor_words_them() {
        let refused = |r: Refusal| {
            let mut o = outcome();
            o.run.code = None;
            o.run.output.clear();
            o.run.error = Some(r.to_string());
            o.refusal = Some(r);
            outcome_reply(&o)
        };
        assert_eq!(
            refused(Refusal::NoServices),
            (
                0x1001,
                "Cannot handle \"c\" command: No service is configured!".into()
            )
        );
        assert_eq!(
            refused(Refusal::UnknownService("web".into())),
            (0x1002, "Cannot find the service settings for: web".into())
        );
        assert_eq!(
            refused(Refusal::UnknownCommand {
                service: "web".into(),
                command: "reboot".into()
            }),
            (0x1003, "Cannot find reboot command for web".into())
        );
        assert_eq!(
            refused(Refusal::Stopping),
            (0x1005, "medic is stopping".into())
        );
    }

    #[test]
    fn outcomes_map_to_codes() {
        assert_eq!(outcome_reply(&outcome()), (0, "ok".into()));
        let mut o = outcome();
        o.run.output = "two\nlines\n\n".into();
        assert_eq!(
            outcome_reply(&o),
            (0, "two\nlines\n".into()),
            "one newline only"
        );
        o.run.code = Some(3);
        assert_eq!(outcome_reply(&o).0, 3);
        let mut o = outcome();
        o.run.code = None;
        o.run.signal = Some(9);
        o.run.timed_out = true;
        o.run.error = Some("timed out after 1s; process group killed".into());
        assert_eq!(
            outcome_reply(&o),
            (
                124,
                "ok\n[medic: timed out after 1s; process group killed]".into()
            )
        );
        o.run.timed_out = false;
        o.run.error = None;
        assert_eq!(outcome_reply(&o).0, 137);
        let mut o = outcome();
        o.run.code = None;
        o.run.output.clear();
        o.run.error = Some("cannot start".into());
        assert_eq!(outcome_reply(&o), (127, "cannot start".into()));
    }
}
