//! Sources: everything that turns outside input into values and notifications for the engine.

pub mod network;
pub mod putval;
pub mod types_db;
pub mod udp;
pub mod unixsock;
pub mod value;
