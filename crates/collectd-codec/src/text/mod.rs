//! collectd's text protocol (the `unixsock` plugin's): `PUTVAL` and `PUTNOTIF` parsed into
//! value lists and notifications, and the queries `GETVAL`, `LISTVAL` and `FLUSH` ([`query`])
//! answered, with collectd 5.12's replies, so `collectdctl`, `collectd-nagios`, the exec
//! plugin's conventions and `nc -U` one-liners work against a program that serves them.
//!
//! One line in, one [`Parsed`] (or the error text collectd puts after `-1 `) out; the socket,
//! and what happens to the values, are the caller's.
//!
//! ```
//! use collectd_codec::text::{Parsed, parse_line, success_reply};
//! use collectd_codec::types_db::TypesDb;
//!
//! let mut types = TypesDb::default();
//! types.add("load shortterm:GAUGE:0:5000, midterm:GAUGE:0:5000, longterm:GAUGE:0:5000");
//! let ten_seconds = 10_000_000_000;
//! let parsed = parse_line("PUTVAL web/load/load N:0.5:1:1.5", &types, ten_seconds, 42).unwrap();
//! let Parsed::Values(lists) = &parsed else { panic!("values") };
//! assert_eq!((lists[0].time, lists[0].samples.len()), (42, 3));
//! assert_eq!(success_reply(&parsed), "0 Success: 1 value has been dispatched.");
//!
//! let refused = parse_line("PUTVAL web/load/load N:x", &types, ten_seconds, 42).unwrap_err();
//! assert_eq!(refused, "Parsing the values string failed.");
//! ```

use crate::types_db::TypesDb;
use crate::{
    DsType, Identifier, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_VALUES, Notification, Sample, Severity,
    ValueList, secs_to_ns,
};

pub mod query;

pub use query::{LatestValues, Query};

/// Longest line collectd's unixsock plugin reads; a server answers longer ones with an error.
pub const MAX_LINE: usize = 64 * 1024;

/// What a line asks for, or the reply it gets.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Values(Vec<ValueList>),
    Notification(Notification),
    /// `GETVAL`, `LISTVAL` or `FLUSH`: answer with [`query::answer`].
    Query(Query),
}

/// Parse one protocol line. `Err` holds the reply text after `-1 `.
pub fn parse_line(
    line: &str,
    types: &TypesDb,
    default_interval_ns: u64,
    now: u64,
) -> Result<Parsed, String> {
    let tokens = tokenize(line)?;
    let Some((command, args)) = tokens.split_first() else {
        return Err("Unknown command: ".into());
    };
    if let Some(query) = query::parse(command, args) {
        return query.map(Parsed::Query);
    }
    match command.to_ascii_uppercase().as_str() {
        "PUTVAL" => putval(args, types, default_interval_ns, now).map(Parsed::Values),
        "PUTNOTIF" => putnotif(args).map(Parsed::Notification),
        _ => Err(format!("Unknown command: {command}")),
    }
}

/// Split on whitespace; double quotes group (with `\` escapes) and may start mid-token, as in
/// `message="disk full"`.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut token = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c != '"' {
                token.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e) => token.push(e),
                        None => return Err("Unterminated quoted string.".into()),
                    },
                    Some(c) => token.push(c),
                    None => return Err("Unterminated quoted string.".into()),
                }
            }
        }
        tokens.push(token);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    Ok(tokens)
}

fn putval(
    args: &[String],
    types: &TypesDb,
    default_interval_ns: u64,
    now: u64,
) -> Result<Vec<ValueList>, String> {
    let Some((ident_text, rest)) = args.split_first() else {
        return Err("Missing identifier and/or value-list.".into());
    };
    let identifier = Identifier::parse(ident_text)
        .ok_or_else(|| format!("Cannot parse identifier `{ident_text}'."))?;
    check_lengths(&identifier)?;
    let mut interval = default_interval_ns;
    let mut lists = Vec::new();
    for token in rest {
        if let Some((key, value)) = token.split_once('=') {
            if key.eq_ignore_ascii_case("interval") {
                interval = value
                    .parse::<f64>()
                    .ok()
                    .and_then(secs_to_ns)
                    .filter(|&ns| ns > 0)
                    .ok_or_else(|| format!("Cannot parse option interval: `{value}'."))?;
            }
            // `meta:…` and unknown options are ignored, as collectd does.
            continue;
        }
        lists.push(token.as_str());
    }
    if lists.is_empty() {
        return Err("Missing identifier and/or value-list.".into());
    }
    let count = lists[0].split(':').count().saturating_sub(1);
    if count > MAX_VALUES {
        return Err(format!("Too many values ({count}; at most {MAX_VALUES})."));
    }
    let sources = types
        .sources_or_fallback(&identifier.type_, count)
        .ok_or_else(|| format!("1 Type `{}' isn't defined.", identifier.type_))?;
    lists
        .into_iter()
        .map(|text| {
            let mut fields = text.split(':');
            let time = match fields.next() {
                Some("N") => now,
                Some(t) => t
                    .parse::<f64>()
                    .ok()
                    .and_then(secs_to_ns)
                    .filter(|&t| t > 0)
                    .ok_or(())?,
                None => return Err(()),
            };
            let samples = fields
                .zip(sources.iter())
                .map(|(v, ds)| sample(v, ds.ds_type))
                .collect::<Result<Vec<_>, ()>>()?;
            if samples.len() != sources.len() || text.split(':').count() != sources.len() + 1 {
                return Err(());
            }
            Ok(ValueList {
                identifier: identifier.clone(),
                time,
                interval,
                samples,
            })
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| "Parsing the values string failed.".into())
}

/// collectd keeps identifier parts in fixed buffers; a longer one is refused, never cut.
fn check_lengths(identifier: &Identifier) -> Result<(), String> {
    match identifier.too_long() {
        Some((part, length)) => Err(format!(
            "Identifier {part} too long ({length} bytes; at most {MAX_NAME_LEN})."
        )),
        None => Ok(()),
    }
}

fn sample(text: &str, ds_type: DsType) -> Result<Sample, ()> {
    Ok(match ds_type {
        DsType::Gauge if text == "U" => Sample::Gauge(f64::NAN),
        DsType::Gauge => Sample::Gauge(text.parse().map_err(drop)?),
        DsType::Derive => Sample::Derive(text.parse().map_err(drop)?),
        DsType::Counter => Sample::Counter(text.parse().map_err(drop)?),
        DsType::Absolute => Sample::Absolute(text.parse().map_err(drop)?),
    })
}

fn putnotif(args: &[String]) -> Result<Notification, String> {
    let mut severity = None;
    let mut time = None;
    let mut message = None;
    let mut identifier = Identifier::default();
    for token in args {
        let (key, value) = token.split_once('=').ok_or("Malformed option.")?;
        match key.to_ascii_lowercase().as_str() {
            "severity" => {
                severity = Some(match value.to_ascii_lowercase().as_str() {
                    "failure" => Severity::Failure,
                    "warning" => Severity::Warning,
                    "okay" => Severity::Okay,
                    _ => return Err("Error parsing option `severity'".into()),
                })
            }
            "time" => {
                time = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .and_then(secs_to_ns)
                        .ok_or("Error parsing option `time'")?,
                )
            }
            "message" => message = Some(value.to_string()),
            "host" => identifier.host = value.into(),
            "plugin" => identifier.plugin = value.into(),
            "plugin_instance" => identifier.plugin_instance = value.into(),
            "type" => identifier.type_ = value.into(),
            "type_instance" => identifier.type_instance = value.into(),
            // Typed meta data (`s:key=…`, `i:key=…`) and unknown options are ignored.
            _ => {}
        }
    }
    check_lengths(&identifier)?;
    let message = message
        .filter(|m| !m.is_empty())
        .ok_or("No message or message of length 0 given.")?;
    if message.len() > MAX_MESSAGE_LEN {
        return Err(format!(
            "Message too long ({} bytes; at most {MAX_MESSAGE_LEN}).",
            message.len()
        ));
    }
    let severity = severity.ok_or("Option `severity' missing.")?;
    let time = time.filter(|&t| t > 0).ok_or("Option `time' missing.")?;
    Ok(Notification {
        severity,
        time,
        message,
        identifier,
    })
}

/// The success reply collectd gives for a line (a query's is its answer).
pub fn success_reply(parsed: &Parsed) -> String {
    match parsed {
        Parsed::Values(v) if v.len() == 1 => "0 Success: 1 value has been dispatched.".into(),
        Parsed::Values(v) => format!("0 Success: {} values have been dispatched.", v.len()),
        Parsed::Notification(_) => "0 Success".into(),
        Parsed::Query(_) => "0 Success".into(),
    }
}

#[cfg(test)]
mod tests;
