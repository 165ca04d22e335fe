//! medic: a WebAssembly-extensible fault-recovery daemon for collectd.
//!
//! The folders follow the data path: `sources` → `engine` (rules) → `effects`, with `mqtt` (the
//! connection both MQTT sides share), `store` (what survives a restart), `event` (the model all
//! of them share) and `config` at the bottom; `daemon` wires them together, `replay` runs the
//! rules on a recorded feed in virtual time, and `cli` holds the subcommands other than `run`.
//! ARCHITECTURE.md at the repository root is the map.

pub mod cli;
/// medic.toml as typed values: the `medic-config` crate, so by construction it imports nothing
/// of medic.
pub use medic_config as config;
pub mod daemon;
pub mod effects;
pub mod engine;
/// The event model every layer shares: the `medic-event` crate, so by construction it
/// imports nothing of medic.
pub use medic_event as event;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub(crate) mod os;
pub mod replay;
pub(crate) mod shutdown;
pub mod sources;
pub mod store;
#[cfg(test)]
mod test_fixtures;
pub mod types_db;
