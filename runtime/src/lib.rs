//! medic: a WebAssembly-extensible fault-recovery daemon for collectd.
//!
//! The modules follow the data path: `ingest` (sources) → `engine` (rules) → `actions`
//! (effects), with `store` for what must survive a restart and `daemon` wiring them together.

pub mod actions;
pub mod check;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod engine;
pub mod import_lcm;
pub mod ingest;
pub mod logging;
pub mod mqtt;
pub mod store;
#[cfg(test)]
mod test_fixtures;
