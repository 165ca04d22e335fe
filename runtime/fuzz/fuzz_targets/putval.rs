#![no_main]
//! Any line on the PUTVAL socket: parsed or refused with a reply, never a panic.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use collectd_codec::text::{parse_line, success_reply};
use collectd_codec::types_db::TypesDb;

fn types() -> &'static TypesDb {
    static TYPES: OnceLock<TypesDb> = OnceLock::new();
    TYPES.get_or_init(|| TypesDb::load(&["/usr/share/collectd/types.db"]))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data)
        && let Ok(parsed) = parse_line(line, types(), 10_000_000_000, 1_700_000_000_000_000_000)
    {
        let _ = success_reply(&parsed);
    }
});
