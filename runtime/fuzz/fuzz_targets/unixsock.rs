#![no_main]
//! Any reply from a unixsock peer, line by line: read or skipped, never a panic.

use libfuzzer_sys::fuzz_target;
use medic::sources::unixsock::{parse_getval_line, parse_listval_line, parse_status};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = parse_status(line);
        let _ = parse_listval_line(line);
        let _ = parse_getval_line(line);
    }
});
