//! collectd's network plugin: the binary protocol (`protocol`) and the UDP receiver (`udp`).

pub mod protocol;
pub(crate) mod udp;
