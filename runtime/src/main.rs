//! The `medic` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medic::cli;
use medic::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "medic",
    version,
    about = "Fault-recovery daemon for collectd, with rules in WebAssembly"
)]
struct Cli {
    /// Log level for medic's own messages (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info", value_parser = ["trace", "debug", "info", "warn", "error"])]
    log_level: String,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(cli::run::Args),
    /// Check a config and have the running medic reload it (SIGHUP): the allow-list, MQTT
    /// grants and rule configs change at once; other changes are named and wait for a restart.
    Reload(cli::reload::Args),
    /// The audit history of the daemon running with this config, newest first.
    History(cli::history::Args),
    /// What the running daemon is doing (its `GET /status`): rules, sources, MQTT, commands.
    Status(cli::status::Args),
    /// Validate a config and load, init and describe every rule with it; exit 1 on any error.
    Check(cli::check::Args),
    /// Decode collectd network-protocol datagrams (one raw datagram per file, or live with
    /// --listen) and print one JSON object per value list or notification.
    Decode(cli::decode::Args),
    /// Capture what the configured collectd sources (network, PUTVAL socket, unixsock)
    /// deliver as a feed for `medic replay`, until --duration is over or SIGINT/SIGTERM.
    Record(cli::record::Args),
    /// Run the rules on a recorded feed in virtual time, executing nothing, and print each
    /// action as a JSON line. Exit 1 when the actions differ from --expect (or, without it,
    /// when a rule faulted), 2 when the feed, config or rules cannot be used.
    Replay(cli::replay::Args),
    /// Write a new rule crate that builds as it is: the SDK dependency, a small rule with a
    /// test, and a replay layout under tests/.
    NewRule(cli::new_rule::Args),
    /// Send a remote command over MQTT and wait for its result (lua-collectd-monitor format).
    /// Prints the result's message; exits with its code (1 when the code does not fit an exit
    /// status, 124 when no result came in time).
    Send(cli::send::SendArgs),
    /// Send a whole collectd.conf over MQTT for the target to check and put in place (as
    /// lua-collectd-monitor's send-config.lua) and wait for the result. Prints its message;
    /// exits 0 on success, 1 on another code (0x2000-0x2009, see README), 124 on no result.
    SendConfig(cli::send::SendConfigArgs),
    /// Print a medic.toml equivalent to a lua-collectd-monitor config.json.
    ImportLcm(cli::import_lcm::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Reload(args) => cli::reload::run(args),
        Command::History(args) => cli::history::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Decode(args) => cli::decode::run(args),
        Command::Record(args) => cli::record::run(args),
        Command::Replay(args) => cli::replay::run(args),
        Command::NewRule(args) => cli::new_rule::run(args),
        Command::Send(args) => cli::send::run_send(args),
        Command::SendConfig(args) => cli::send::run_send_config(args),
        Command::ImportLcm(args) => cli::import_lcm::run(args),
    }
}
