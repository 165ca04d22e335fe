//! collectd's network plugin: the binary protocol (`protocol`) and the UDP receiver: the socket
//! (`socket`), the thread that drains it (`reader`) and the decoding stage (`udp`).

pub mod protocol;
mod reader;
pub(crate) mod socket;
pub(crate) mod udp;
