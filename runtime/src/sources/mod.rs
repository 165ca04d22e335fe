//! Sources: everything that turns outside input into events for the engine. Each one stops
//! when the shutdown signal fires and drops its sender, so the engine drains and ends.
//!
//! Invariant: a source imports neither the engine nor an effect; it hands events to the ingest
//! queue and (MQTT remote commands) run requests to a closure the daemon gives it.

pub mod collectd;
pub(crate) mod mqtt;
pub mod probe;
pub mod putval;
pub mod unixsock;
