//! collectd's network plugin: the UDP receiver, with the socket (`socket`), the thread that
//! drains it (`reader`) and the decoding stage (`udp`, the binary protocol being
//! `collectd_codec::network`'s).

mod reader;
pub(crate) mod socket;
pub(crate) mod udp;
