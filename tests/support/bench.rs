//! What the benchmarks under benches/ share: the release binary, settings from the environment,
//! a process's CPU time, percentiles.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The release `medic` (`target/release/medic`), built by this call the first time in a
/// process (`cargo build --release -p medic --bin medic`: quick when it is up to date), so a
/// bench never measures a stale binary. The benches live in a crate of their own (so that
/// `cargo test` does not build their dependencies), where cargo gives no `CARGO_BIN_EXE_medic`.
pub fn release_medic() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "medic", "--bin", "medic"])
                .current_dir(crate::workspace())
                .status()
                .expect("cargo runs");
            assert!(status.success(), "cannot build the release medic");
            crate::target_dir().join("release/medic")
        })
        .clone()
}

/// `name` from the environment, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The `p` percentile (0..=1) of `sorted`, which must not be empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
