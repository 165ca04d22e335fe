#![no_main]
//! Any types.db text: types taken or lines reported, never a panic.

use libfuzzer_sys::fuzz_target;
use collectd_codec::types_db::TypesDb;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut db = TypesDb::default();
    let _ = db.add(&text);
    let _ = db.sources_or_fallback("if_octets", 2);
});
