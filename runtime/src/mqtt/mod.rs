//! The MQTT connection itself, shared by the inbound side (`sources::mqtt`: remote commands,
//! rule topics) and the outbound side (`effects::mqtt`: results, rule publishes, `run-remote`),
//! which never import each other: `link` drives rumqttc, `session` owns the subscriptions and the
//! persistent outbox, `lcm` is lua-collectd-monitor's message format both sides speak, `signed` its Ed25519
//! envelope.

pub mod lcm;
pub mod link;
pub mod options;
pub(crate) mod session;
pub mod signed;
mod tracker;
