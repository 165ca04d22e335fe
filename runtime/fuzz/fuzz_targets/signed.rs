#![no_main]
//! Any payload that claims to be a signed command: refused with a code and a reason, or opened,
//! never a panic. The first byte picks how deep to go: an arbitrary envelope (the signature
//! almost never holds), or arbitrary request bytes signed with the sender's real key, so the
//! checks after the signature (node, nonce, expiry) and the request parser see fuzzed input.

use std::sync::LazyLock;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use medic::config::Sender;
use medic::mqtt::lcm::{Reply, parse_request};
use medic::mqtt::signed::{Senders, Signer, is_envelope, open};

static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[42; 32]));
static SENDERS: LazyLock<Senders> = LazyLock::new(|| {
    let scope = Sender {
        public_key_file: "unused".into(),
        commands: vec!["*".into()],
        replace_config: true,
    };
    Senders::from_keys(
        [("ops".to_string(), KEY.verifying_key(), scope)],
        Duration::from_secs(600),
        true,
    )
});
/// 2026-12-07T00:00:00Z: fixed, so a run is repeatable.
const NOW_NS: u64 = 1_796_601_600_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let envelope = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        Signer::from_key("ops", KEY.clone()).seal(rest)
    };
    let _ = is_envelope(&envelope);
    match open(&envelope, &SENDERS, "web-1", NOW_NS) {
        Ok(signed) => {
            assert!(signed.expires_ns > NOW_NS);
            let _ = SENDERS.scope(&signed.sender).map(|s| s.may_run("a", "b"));
            let _ = parse_request(&signed.request);
        }
        Err(refused) => {
            assert!(!refused.message.is_empty());
            if let Some(task_id) = refused.task_id {
                let _ = Reply::new(task_id, refused.code, refused.message).to_json();
            }
        }
    }
});
