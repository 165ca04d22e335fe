#![no_main]
//! Any bytes, at every security level: the decoder must return, never panic or hang.

use libfuzzer_sys::fuzz_target;
use collectd_codec::network::{Credentials, SecurityLevel, decode};

fuzz_target!(|data: &[u8]| {
    let mut creds = Credentials::default();
    creds.insert("fixture-user", "fixture-secret");
    for level in [
        SecurityLevel::None,
        SecurityLevel::Sign,
        SecurityLevel::Encrypt,
    ] {
        let mut out = Vec::new();
        let _ = decode(data, level, &creds, &mut out);
        for d in out {
            let _ = d.item.into_record(0);
        }
    }
});
