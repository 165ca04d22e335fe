//! Captures from real collectd 5.12 in the repository's `tests/fixtures/collectd/` (recaptured
//! by `scripts/capture-fixtures.py`).

pub fn path(name: &str) -> String {
    format!(
        "{}/../../tests/fixtures/collectd/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn text(name: &str) -> String {
    String::from_utf8(bytes(name)).unwrap()
}
