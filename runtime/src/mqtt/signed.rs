//! Signed remote commands: an Ed25519 envelope around lua-collectd-monitor's request.
//!
//! ```json
//! {"sender": "ops", "payload": "<base64 of the request's JSON bytes>",
//!  "signature": "<base64 of Ed25519(key, \"medic-command-v1\n\" ++ those bytes)>"}
//! ```
//! The request inside is the usual `{task_id, timestamp, service, command}` (or `config`) with
//! three more fields: `node` (the target's `daemon.node`), `nonce` (16 to 128 characters of
//! `[A-Za-z0-9_-]`, never used twice by a sender within its validity) and `expires` (RFC 3339,
//! at most `mqtt.auth.max_validity` ahead). The exact bytes are signed, so a sender needs no
//! JSON canonical form; the context prefix keeps a signature made for anything else (a result,
//! another protocol) from passing as a command.
//!
//! `open` checks everything that needs no state, in this order: envelope, sender, signature,
//! node, expiry. The nonce (state: the database) and the sender's scope (the request's content)
//! are the caller's, after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Auth, Sender};
use crate::mqtt::lcm::code;

/// What every signature covers before the request's bytes.
pub const CONTEXT: &[u8] = b"medic-command-v1\n";
/// Nonce length bounds, in characters of `[A-Za-z0-9_-]`.
pub const NONCE_MIN: usize = 16;
pub const NONCE_MAX: usize = 128;
/// Longest sender name accepted (it is echoed in logs and the history).
const MAX_SENDER: usize = 64;

/// The senders this node trusts, with their keys loaded.
pub struct Senders {
    keys: BTreeMap<String, (VerifyingKey, Sender)>,
    /// `max_validity` plus the clock skew allowed (`mqtt.max_clock_skew`): a sender whose clock
    /// runs ahead must not have its longest-lived requests refused.
    max_ahead: Duration,
    pub require_signed: bool,
}

impl Senders {
    /// Read every sender's public key; a key that cannot be read, or a file others may write,
    /// is a start error.
    pub fn load(auth: &Auth, clock_skew: Duration) -> anyhow::Result<Self> {
        let mut keys = BTreeMap::new();
        for (name, sender) in &auth.senders {
            let path = &sender.public_key_file;
            let pem = read_key_file(path, false)?;
            let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "mqtt.auth.senders.{name}.public_key_file {}: not an Ed25519 public key in \
                     PEM ({e})",
                    path.display()
                )
            })?;
            keys.insert(name.clone(), (key, sender.clone()));
        }
        Ok(Self {
            keys,
            max_ahead: auth.max_validity + clock_skew,
            require_signed: auth.require_signed,
        })
    }

    /// Senders built in code (tests, fuzzing); `max_ahead` as `load` computes it.
    pub fn from_keys(
        keys: impl IntoIterator<Item = (String, VerifyingKey, Sender)>,
        max_ahead: Duration,
        require_signed: bool,
    ) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|(name, key, sender)| (name, (key, sender)))
                .collect(),
            max_ahead,
            require_signed,
        }
    }

    pub fn scope(&self, sender: &str) -> Option<&Sender> {
        self.keys.get(sender).map(|(_, s)| s)
    }
}

/// A request whose signature, node and expiry held.
#[derive(Debug, PartialEq)]
pub struct Signed {
    pub sender: String,
    /// The request's JSON bytes, as signed.
    pub request: Vec<u8>,
    /// Its `task_id`, to address a refusal of what comes after (nonce, scope).
    pub task_id: Option<Value>,
    pub nonce: String,
    /// Unix nanoseconds: the nonce is kept until then.
    pub expires_ns: u64,
}

/// Why a request was refused before it was read: a reply code, a message, and what could be
/// found to answer and record it by (untrusted when the signature did not hold).
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub code: i64,
    pub message: String,
    pub task_id: Option<Value>,
    pub sender: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    sender: String,
    payload: String,
    signature: String,
}

/// Whether `payload` is a signed envelope (a JSON object with a `signature`), without
/// checking anything else.
pub fn is_envelope(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        signature: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(payload).is_ok_and(|p| p.signature.is_some())
}

/// Verify a signed envelope for `node` at `now_ns`.
pub fn open(payload: &[u8], senders: &Senders, node: &str, now_ns: u64) -> Result<Signed, Refused> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|e| Refused {
        code: code::BAD_SIGNATURE,
        message: format!("not a signed envelope ({{\"sender\", \"payload\", \"signature\"}}): {e}"),
        task_id: None,
        sender: None,
    })?;
    let request = BASE64
        .decode(envelope.payload.as_bytes())
        .map_err(|e| Refused {
            code: code::BAD_SIGNATURE,
            message: format!("`payload` is not base64: {e}"),
            task_id: None,
            sender: None,
        })?;
    // Untrusted until the signature holds: used only to address the refusal.
    let claimed_task = crate::mqtt::lcm::task_id_of(&request);
    let sender = shown_sender(&envelope.sender);
    let refuse = |code, message: String| Refused {
        code,
        message,
        task_id: claimed_task.clone(),
        sender: Some(sender.clone()),
    };
    let Some((key, _)) = senders.keys.get(&envelope.sender) else {
        return Err(refuse(
            code::BAD_SIGNATURE,
            format!("unknown sender `{sender}` (not in [mqtt.auth.senders])"),
        ));
    };
    let signature = BASE64
        .decode(envelope.signature.as_bytes())
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or_else(|| {
            refuse(
                code::BAD_SIGNATURE,
                "`signature` is not a base64 Ed25519 signature (64 bytes)".into(),
            )
        })?;
    let mut signed = Vec::with_capacity(CONTEXT.len() + request.len());
    signed.extend_from_slice(CONTEXT);
    signed.extend_from_slice(&request);
    if key.verify_strict(&signed, &signature).is_err() {
        return Err(refuse(
            code::BAD_SIGNATURE,
            format!("the signature does not verify with sender `{sender}`'s key"),
        ));
    }
    let fields: Value = serde_json::from_slice(&request)
        .map_err(|e| refuse(code::INVALID_REQUEST, format!("invalid JSON: {e}")))?;
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    match text("node") {
        Some(n) if n == node => {}
        Some(other) => {
            return Err(refuse(
                code::WRONG_NODE,
                format!(
                    "signed for node `{}`, not this one (`{node}`)",
                    shown_sender(other)
                ),
            ));
        }
        None => {
            return Err(refuse(
                code::WRONG_NODE,
                "a signed request must name its target `node`".into(),
            ));
        }
    }
    let nonce = match text("nonce") {
        Some(n)
            if (NONCE_MIN..=NONCE_MAX).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            n.to_string()
        }
        _ => {
            return Err(refuse(
                code::INVALID_REQUEST,
                format!(
                    "a signed request needs a `nonce` of {NONCE_MIN} to {NONCE_MAX} characters \
                     of A-Z a-z 0-9 - _"
                ),
            ));
        }
    };
    let expires = text("expires")
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
        .ok_or_else(|| {
            refuse(
                code::EXPIRED,
                "a signed request needs `expires` (RFC 3339, e.g. 2026-12-07T21:00:00Z)".into(),
            )
        })?;
    let expires_ns = u64::try_from(expires.as_nanosecond()).unwrap_or(0);
    if expires_ns <= now_ns {
        return Err(refuse(
            code::EXPIRED,
            format!("the request expired at {expires}"),
        ));
    }
    let ahead = Duration::from_nanos(expires_ns - now_ns);
    if ahead > senders.max_ahead {
        return Err(refuse(
            code::EXPIRED,
            format!(
                "the request is valid for {}s; mqtt.auth.max_validity and mqtt.max_clock_skew \
                 allow {}s",
                ahead.as_secs(),
                senders.max_ahead.as_secs()
            ),
        ));
    }
    Ok(Signed {
        sender: envelope.sender,
        request,
        task_id: claimed_task,
        nonce,
        expires_ns,
    })
}

/// A sender name fit for a log line and a reply: bounded, printable.
fn shown_sender(name: &str) -> String {
    name.chars()
        .take(MAX_SENDER)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A node's own key, for the requests it signs (`run-remote`, `medic send --key`).
pub struct Signer {
    sender: String,
    key: SigningKey,
}

impl Signer {
    /// Read a private key (PEM PKCS#8); a file others may read is refused.
    pub fn load(sender: &str, path: &Path) -> anyhow::Result<Self> {
        let pem = read_key_file(path, true)?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an Ed25519 private key in PEM ({e}; `openssl genpkey -algorithm ed25519` \
                 writes one)",
                path.display()
            )
        })?;
        Ok(Self {
            sender: sender.to_string(),
            key,
        })
    }

    pub fn from_key(sender: &str, key: SigningKey) -> Self {
        Self {
            sender: sender.to_string(),
            key,
        }
    }

    /// Sign `request` (a JSON object: `task_id`, `service`, … ) for `node`, valid for
    /// `validity`: adds `node`, a fresh `nonce` and `expires`, and wraps it.
    pub fn sign(
        &self,
        mut request: serde_json::Map<String, Value>,
        node: &str,
        validity: Duration,
    ) -> Vec<u8> {
        // Whole seconds, rounded down: never valid for longer than asked.
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(validity).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::MAX);
        let expires = jiff::Timestamp::from_second(expires.as_second()).unwrap_or(expires);
        request.insert("node".into(), node.into());
        request.insert("nonce".into(), fresh_nonce().into());
        request.insert("expires".into(), expires.to_string().into());
        let bytes = serde_json::to_vec(&request).expect("a JSON map always serializes");
        self.seal(&bytes)
    }

    /// Wrap exactly these request bytes in a signed envelope.
    pub fn seal(&self, request: &[u8]) -> Vec<u8> {
        let mut signed = Vec::with_capacity(CONTEXT.len() + request.len());
        signed.extend_from_slice(CONTEXT);
        signed.extend_from_slice(request);
        let signature = self.key.sign(&signed);
        serde_json::to_vec(&serde_json::json!({
            "sender": self.sender,
            "payload": BASE64.encode(request),
            "signature": BASE64.encode(signature.to_bytes()),
        }))
        .expect("an envelope always serializes")
    }
}

/// 128 random bits, hex.
fn fresh_nonce() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key file's text. Private keys (`private`) must not be readable by others; no key file may
/// be writable by others (a key swapped in is a sender let in), nor be a link.
fn read_key_file(path: &Path, private: bool) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        meta.file_type().is_file(),
        "{}: not a regular file (links are not followed for keys)",
        path.display()
    );
    let mode = meta.mode() & 0o777;
    anyhow::ensure!(
        mode & 0o022 == 0,
        "{}: others may write it (mode {mode:04o}); chmod go-w",
        path.display()
    );
    anyhow::ensure!(
        !private || mode & 0o077 == 0,
        "{}: a private key others may read (mode {mode:04o}); chmod 600",
        path.display()
    );
    anyhow::ensure!(
        meta.len() <= 16 * 1024,
        "{}: too large for a key",
        path.display()
    );
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "web-1";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn senders() -> Senders {
        let scope = Sender {
            public_key_file: "/dev/null".into(),
            commands: vec!["nginx/*".into()],
            replace_config: false,
        };
        Senders::from_keys(
            [("ops".to_string(), key(1).verifying_key(), scope)],
            Duration::from_secs(630),
            true,
        )
    }

    fn request() -> serde_json::Map<String, Value> {
        serde_json::json!({"task_id": 7, "service": "nginx", "command": "restart"})
            .as_object()
            .unwrap()
            .clone()
    }

    fn now() -> u64 {
        crate::event::now_ns()
    }

    #[test]
    fn a_signed_request_opens_with_its_bytes_nonce_and_expiry() {
        let sealed = Signer::from_key("ops", key(1)).sign(request(), NODE, Duration::from_secs(60));
        assert!(is_envelope(&sealed));
        let signed = open(&sealed, &senders(), NODE, now()).unwrap();
        assert_eq!(signed.sender, "ops");
        assert_eq!(signed.nonce.len(), 32);
        let inner: Value = serde_json::from_slice(&signed.request).unwrap();
        assert_eq!(inner["service"], "nginx");
        assert_eq!(inner["node"], NODE);
        assert!(signed.expires_ns > now());
    }

    #[test]
    fn each_failure_has_its_code() {
        let ops = Signer::from_key("ops", key(1));
        let stranger = Signer::from_key("ops", key(2));
        let unknown = Signer::from_key("eve", key(1));
        let minute = Duration::from_secs(60);
        let cases: Vec<(Vec<u8>, i64, &str)> = vec![
            (stranger.sign(request(), NODE, minute), code::BAD_SIGNATURE, "does not verify"),
            (unknown.sign(request(), NODE, minute), code::BAD_SIGNATURE, "unknown sender `eve`"),
            (ops.sign(request(), "db-1", minute), code::WRONG_NODE, "`db-1`, not this one"),
            (
                ops.sign(request(), NODE, Duration::from_secs(3600)),
                code::EXPIRED,
                "mqtt.auth.max_validity and mqtt.max_clock_skew allow 630s",
            ),
            (
                ops.seal(br#"{"task_id":7,"node":"web-1","nonce":"0123456789abcdef","expires":"2020-01-01T00:00:00Z"}"#),
                code::EXPIRED,
                "expired at 2020",
            ),
            (
                ops.seal(br#"{"task_id":7,"node":"web-1","nonce":"short","expires":"2999-01-01T00:00:00Z"}"#),
                code::INVALID_REQUEST,
                "`nonce`",
            ),
            (br#"{"signature": 1}"#.to_vec(), code::BAD_SIGNATURE, "not a signed envelope"),
            (
                br#"{"sender":"ops","payload":"%%%","signature":"AA=="}"#.to_vec(),
                code::BAD_SIGNATURE,
                "not base64",
            ),
        ];
        for (payload, expected, says) in cases {
            let refused = open(&payload, &senders(), NODE, now()).unwrap_err();
            assert_eq!(refused.code, expected, "{}", refused.message);
            assert!(
                refused.message.contains(says),
                "{says}: {}",
                refused.message
            );
        }
        // The task id is found for the reply, even from a request that did not verify.
        let refused = open(
            &stranger.sign(request(), NODE, minute),
            &senders(),
            NODE,
            now(),
        );
        assert_eq!(refused.unwrap_err().task_id, Some(Value::from(7)));
    }

    #[test]
    fn a_changed_byte_breaks_the_signature() {
        let sealed = Signer::from_key("ops", key(1)).sign(request(), NODE, Duration::from_secs(60));
        let mut envelope: Value = serde_json::from_slice(&sealed).unwrap();
        let inner = BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let changed = String::from_utf8(inner)
            .unwrap()
            .replace("restart", "stop!!!");
        envelope["payload"] = BASE64.encode(changed).into();
        let refused = open(
            &serde_json::to_vec(&envelope).unwrap(),
            &senders(),
            NODE,
            now(),
        );
        assert_eq!(refused.unwrap_err().code, code::BAD_SIGNATURE);
    }

    #[test]
    fn scopes() {
        let s = |commands: &[&str]| Sender {
            public_key_file: "k".into(),
            commands: commands.iter().map(|c| c.to_string()).collect(),
            replace_config: false,
        };
        assert!(s(&["*"]).may_run("a", "b"));
        assert!(s(&["a/*"]).may_run("a", "b"));
        assert!(!s(&["a/*"]).may_run("ab", "b"));
        assert!(s(&["a/b"]).may_run("a", "b"));
        assert!(!s(&["a/b"]).may_run("a", "c"));
        assert!(!s(&[]).may_run("a", "b"));
    }

    #[test]
    fn key_files_others_may_change_or_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "x").unwrap();
        for (mode, private, ok) in [
            (0o600, true, true),
            (0o644, true, false),
            (0o644, false, true),
            (0o666, false, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                read_key_file(&path, private).is_ok(),
                ok,
                "{mode:o} {private}"
            );
        }
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_key_file(&link, false).is_err());
    }
}
