//! collectd's wire formats, for programs that talk to collectd or stand in for it.
//!
//! - [`network`]: the `network` plugin's binary protocol (collectd 5.x), decoding datagrams into
//!   value lists and notifications with signatures (HMAC-SHA-256) checked and encryption
//!   (AES-256-OFB) removed as collectd's own receiver does, at its `SecurityLevel`s.
//! - [`types_db`]: `types.db` files, which give each value type its data sources.
//! - [`text`]: the `unixsock` plugin's text protocol, `PUTVAL`, `PUTNOTIF`, `GETVAL`, `LISTVAL`
//!   and `FLUSH`, with collectd 5.12's replies byte for byte.
//! - [`Identifier`], [`ValueList`], [`Notification`]: the data model all three share, with
//!   collectd's limits.
//!
//! Nothing here does I/O on a socket or a clock: callers pass the bytes and "now", so the same
//! code serves a daemon, a replay and a fuzzer. No input makes any function here panic.
//!
//! ```
//! use collectd_codec::network::{Credentials, SecurityLevel, decode};
//! use collectd_codec::{Record, Sample};
//!
//! // A datagram as collectd's network plugin sends it: host, plugin, type, one gauge.
//! let mut datagram = Vec::new();
//! let mut part = |kind: u16, body: &[u8]| {
//!     datagram.extend(kind.to_be_bytes());
//!     datagram.extend((4 + body.len() as u16).to_be_bytes());
//!     datagram.extend(body);
//! };
//! part(0x0000, b"web\0"); // host
//! part(0x0002, b"load\0"); // plugin
//! part(0x0004, b"gauge\0"); // type
//! let mut values = vec![0, 1, 1]; // one value, a gauge (type 1), little-endian
//! values.extend(0.5f64.to_le_bytes());
//! part(0x0006, &values);
//!
//! let mut out = Vec::new();
//! decode(&datagram, SecurityLevel::None, &Credentials::default(), &mut out).unwrap();
//! let now_ns = 1_764_500_000_000_000_000; // the time of a value list sent without one
//! let Ok(Record::Values(list)) = out.remove(0).item.into_record(now_ns) else {
//!     panic!("one value list")
//! };
//! assert_eq!(list.identifier.to_string(), "web/load/gauge");
//! assert_eq!(list.samples, [Sample::Gauge(0.5)]);
//! assert_eq!(list.time, now_ns);
//! ```

#![forbid(unsafe_code)]

pub mod identifier;
mod model;
#[cfg(feature = "network")]
pub mod network;
#[cfg(feature = "text")]
pub mod text;
#[cfg(feature = "types-db")]
pub mod types_db;

pub use identifier::Identifier;
pub use model::{
    DsType, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_VALUES, Notification, Record, Sample, Severity,
    ValueList, secs_to_ns,
};

#[cfg(test)]
pub(crate) mod test_fixtures;
