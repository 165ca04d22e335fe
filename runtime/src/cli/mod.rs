//! The subcommands other than `run`: each is a small program over the same parts the daemon
//! uses, so what they accept and print agrees with what the daemon does.

pub mod check;
pub mod decode;
pub mod history;
pub mod import_lcm;
pub mod new_rule;
pub mod record;
pub mod reload;
pub mod replay;
pub mod send;
pub mod status;
