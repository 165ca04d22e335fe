#![no_main]
//! Any medic.toml: a config or an error with its place, never a panic.

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use medic::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("medic.toml"), Path::new("/etc/medic"));
    }
});
