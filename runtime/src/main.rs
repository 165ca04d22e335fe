//! The `medic` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medic::cli::decode;
use medic::config::{Config, MqttProtocol, SecurityLevel};
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
    Run {
        /// The medic.toml to use.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config and have the running medic reload it (SIGHUP): the allow-list, MQTT
    /// grants and rule configs change at once; other changes are named and wait for a restart.
    Reload {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The audit history of the daemon running with this config, newest first.
    History {
        #[arg(long, short)]
        config: PathBuf,
        /// Only decisions taken this long ago or less (e.g. 1h, 30m, 2d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only decisions of this rule (or `mqtt:<task id>`).
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// Only what did not succeed: failed, timed out, interrupted, refused.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line, every field.
        #[arg(long)]
        json: bool,
    },
    /// What the running daemon is doing (its `GET /status`): rules, sources, MQTT, commands.
    Status {
        /// The daemon's medic.toml: its `[http]` says where to ask and with which token.
        #[arg(long, short, required_unless_present = "url", conflicts_with = "url")]
        config: Option<PathBuf>,
        /// Ask this medic instead (e.g. http://127.0.0.1:9105).
        #[arg(long)]
        url: Option<String>,
        /// With --url: the bearer token's file.
        #[arg(long, requires = "url")]
        token_file: Option<PathBuf>,
        /// The JSON itself.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config and load, init and describe every rule with it; exit 1 on any error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Decode collectd network-protocol datagrams (one raw datagram per file, or live with
    /// --listen) and print one JSON object per value list or notification.
    Decode {
        #[arg(long, default_value = "none", value_parser = security_level())]
        security_level: SecurityLevel,
        /// collectd AuthFile (`user: password` lines), for signed and encrypted data.
        #[arg(long)]
        auth_file: Option<PathBuf>,
        /// types.db for data-source names (repeatable).
        #[arg(long, default_value = "/usr/share/collectd/types.db")]
        types_db: Vec<PathBuf>,
        /// Listen on this address and print live traffic instead of reading files.
        #[arg(long, conflicts_with = "files")]
        listen: Option<std::net::SocketAddr>,
        #[arg(required_unless_present = "listen")]
        files: Vec<PathBuf>,
    },
    /// Capture what the configured collectd sources (network, PUTVAL socket, unixsock)
    /// deliver as a feed for `medic replay`, until --duration is over or SIGINT/SIGTERM.
    Record {
        #[arg(long, short)]
        config: PathBuf,
        /// The feed to write (JSON lines, mode 0600, replaced if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Stop after this long (e.g. 10m); default: until interrupted.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Also record MQTT messages on this topic filter (repeatable), from the config's
        /// [mqtt] broker.
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Run the rules on a recorded feed in virtual time, executing nothing, and print each
    /// action as a JSON line. Exit 1 when the actions differ from --expect (or, without it,
    /// when a rule faulted), 2 when the feed, config or rules cannot be used.
    Replay {
        /// The medic.toml whose rule configs, allow-list, policy and MQTT grants apply.
        #[arg(long, short)]
        config: PathBuf,
        /// A directory of .wasm rules or one .wasm file (default: the config's rules.dir).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Compare the actions with this file (JSON lines, as replay prints them).
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Let every admitted command "exit" at once with this status and hand the rule that
        /// result (default: no result, nothing ran; refused commands always give theirs).
        #[arg(long, allow_negative_numbers = true)]
        assume_exit: Option<i32>,
        /// For a directory of datagrams: the security level they were sent with.
        #[arg(long, default_value = "none", value_parser = security_level())]
        security_level: SecurityLevel,
        /// For a directory of datagrams: collectd's AuthFile, to read encrypted ones.
        #[arg(long)]
        auth_file: Option<PathBuf>,
        /// JSON lines (as `medic record` or `medic decode` write them; `-` for stdin), or a
        /// directory of collectd network datagrams (`.bin`).
        feed: PathBuf,
    },
    /// Write a new rule crate that builds as it is: the SDK dependency, a small rule with a
    /// test, and a replay layout under tests/.
    NewRule {
        /// The rule's name (its crate, .wasm file stem and config table): lower case, digits, `_`.
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The rules-sdk directory of medic's sources (default: the one medic was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Send a remote command over MQTT and wait for its result (lua-collectd-monitor format).
    /// Prints the result's message; exits with its code (1 when the code does not fit an exit
    /// status, 124 when no result came in time).
    Send(SendArgs),
    /// Send a whole collectd.conf over MQTT for the target to check and put in place (as
    /// lua-collectd-monitor's send-config.lua) and wait for the result. Prints its message;
    /// exits 0 on success, 1 on another code (0x2000-0x2009, see README), 124 on no result.
    SendConfig(SendConfigArgs),
    /// Print a medic.toml equivalent to a lua-collectd-monitor config.json.
    ImportLcm {
        /// lua-collectd-monitor's config.json.
        config: PathBuf,
        /// `daemon.state_dir` of the generated config.
        #[arg(long, default_value = "/var/lib/medic")]
        state_dir: PathBuf,
        /// `rules.dir` of the generated config.
        #[arg(long, default_value = "/etc/medic/rules")]
        rules_dir: PathBuf,
        /// lua-collectd-monitor's local handler scripts (its LocalMonitorConfigDir, which is
        /// taken from the config when this is not given): every `*.lua` there runs in the
        /// lcm-lua rule.
        #[arg(long)]
        local_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct SendArgs {
    service: String,
    command: String,
    #[command(flatten)]
    to: BrokerArgs,
}

#[derive(clap::Args)]
struct SendConfigArgs {
    /// The collectd.conf to send.
    file: PathBuf,
    #[command(flatten)]
    to: BrokerArgs,
}

/// Where a request goes and how long to wait for its result.
#[derive(clap::Args)]
struct BrokerArgs {
    /// mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    broker: String,
    #[arg(long)]
    user: Option<String>,
    /// Visible to every local user in the process list: prefer --password-file or the
    /// MEDIC_MQTT_PASSWORD environment variable.
    #[arg(long, requires = "user", conflicts_with = "password_file")]
    password: Option<String>,
    /// A file whose first line is the password.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Command topic; default `medic/<node>/command` with --node.
    #[arg(long, required_unless_present = "node")]
    topic: Option<String>,
    /// Result topic; default `medic/<node>/result` with --node.
    #[arg(long, required_unless_present = "node")]
    result_topic: Option<String>,
    /// The target medic's node name, for the default topics.
    #[arg(long)]
    node: Option<String>,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// MQTT protocol version: 3.1.1 or 5.
    #[arg(long, value_enum, default_value_t = MqttProtocol::V311)]
    protocol: MqttProtocol,
    /// How long to wait for the result.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Task id to send (default: derived from the clock). Re-sending one gets its recorded result.
    #[arg(long)]
    task_id: Option<u64>,
    /// PEM CA bundle to verify an mqtts:// broker (default: the system roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Do not verify the broker's certificate.
    #[arg(long)]
    insecure: bool,
    /// Sign the request with this Ed25519 private key (PEM, `openssl genpkey -algorithm
    /// ed25519`), for a target with [mqtt.auth]; needs --node (the request names its target).
    #[arg(long, requires = "node")]
    key: Option<PathBuf>,
    /// The sender name the target knows the key by (`[mqtt.auth.senders.NAME]`); default: this
    /// machine's hostname.
    #[arg(long, requires = "key")]
    sender: Option<String>,
    /// How long a signed request stays valid (at most the target's mqtt.auth.max_validity).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "key")]
    valid_for: std::time::Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Run { config: path } => {
            medic::daemon::before_threads();
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(format!("cannot start the async runtime: {e}")),
            };
            let run = async {
                let stop = medic::daemon::signal();
                medic::daemon::run(config, &path, stop).await
            };
            match runtime.block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Decode {
            security_level,
            auth_file,
            types_db,
            listen,
            files,
        } => {
            let options = decode::Options {
                level: security_level,
                auth_file,
                types_db,
            };
            decode_command(options, listen, files)
        }
        Command::Send(args) => {
            let (service, command) = (args.service, args.command);
            send_command(args.to, move |task_id| {
                medic::mqtt::lcm::command_request(task_id, &service, &command)
            })
        }
        Command::SendConfig(args) => {
            let text = match std::fs::read_to_string(&args.file) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", args.file.display())),
            };
            send_command(args.to, move |task_id| {
                medic::mqtt::lcm::config_request(task_id, &text)
            })
        }
        Command::Record {
            config,
            out,
            duration,
            topics,
        } => {
            let options = medic::cli::record::Options {
                config,
                out,
                duration,
                topics,
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(format!("cannot start the async runtime: {e}")),
            };
            let record = async {
                let stop = medic::daemon::signal();
                medic::cli::record::record(&options, stop).await
            };
            match runtime.block_on(record) {
                Ok(n) => {
                    eprintln!(
                        "medic record: {n} events written to {}",
                        options.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::NewRule { name, dir, sdk } => {
            use medic::cli::new_rule::{default_sdk, new_rule};
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let Some(sdk) = sdk.or_else(default_sdk) else {
                return fail(
                    "where is the rules SDK? give --sdk the rules-sdk directory of medic's sources",
                );
            };
            match new_rule(&name, &dir, &sdk) {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                    println!(
                        "next: cd {} && cargo test && cargo build --target wasm32-wasip2 --release",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Replay {
            config,
            rules,
            expect,
            assume_exit,
            security_level,
            auth_file,
            feed,
        } => {
            use medic::cli::replay::{Options, Verdict, replay};
            let options = Options {
                config,
                rules,
                feed,
                expect,
                level: security_level,
                auth_file,
                replay: medic::replay::Options { assume_exit },
            };
            match replay(&options) {
                Ok(Verdict::Passed) => ExitCode::SUCCESS,
                Ok(Verdict::Failed) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("medic: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::History {
            config,
            since,
            rule,
            service,
            failed,
            limit,
            json,
        } => {
            let filter = medic::cli::history::Filter {
                since,
                rule,
                service,
                failed,
                limit,
            };
            match medic::cli::history::history(&config, filter, json) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Status {
            config,
            url,
            token_file,
            json,
        } => {
            use medic::cli::status::{Target, status};
            let target = match (&config, &url) {
                (Some(c), _) => Target::Config(c),
                (None, Some(url)) => Target::Url {
                    url,
                    token_file: token_file.as_deref(),
                },
                (None, None) => unreachable!("clap requires --config or --url"),
            };
            match status(target, json) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Reload { config } => match medic::cli::reload::reload(&config) {
            Ok(pid) => {
                println!("medic (pid {pid}) asked to reload {}", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("{e:#}")),
        },
        Command::ImportLcm {
            config,
            state_dir,
            rules_dir,
            local_dir,
        } => {
            let json = match std::fs::read_to_string(&config) {
                Ok(j) => j,
                Err(e) => return fail(format!("cannot read {}: {e}", config.display())),
            };
            let paths = medic::cli::import_lcm::Paths {
                state_dir: &state_dir,
                rules_dir: &rules_dir,
                local_dir: local_dir.as_deref(),
            };
            match medic::cli::import_lcm::convert(&json, &config, &paths) {
                Ok(toml) => {
                    print!("{toml}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Check { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match medic::cli::check::check(&config) {
                Ok((report, ok)) => {
                    print!("{report}");
                    if ok {
                        println!("{}: ok", path.display());
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
    }
}

/// Send the request `request` makes for a task id, signed when `--key` is given.
fn send_command(
    a: BrokerArgs,
    request: impl FnOnce(u64) -> serde_json::Map<String, serde_json::Value>,
) -> ExitCode {
    use medic::cli::send;
    use medic::mqtt::lcm;
    if a.password.is_some() {
        eprintln!(
            "medic: warning: --password is visible to other users in the process list; \
             use --password-file or MEDIC_MQTT_PASSWORD"
        );
    }
    let from_env = std::env::var("MEDIC_MQTT_PASSWORD").ok();
    let inline = a
        .password
        .as_ref()
        .or(from_env.as_ref().filter(|_| a.password_file.is_none()));
    let password = match medic::mqtt::options::password(inline, a.password_file.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(format!("{e:#}")),
    };
    let topic_for = |given: &Option<String>, kind: &str| {
        given
            .clone()
            .unwrap_or_else(|| format!("medic/{}/{kind}", a.node.as_deref().unwrap_or_default()))
    };
    let task_id = a.task_id.unwrap_or_else(send::fresh_task_id);
    let request = request(task_id);
    let payload = match &a.key {
        Some(key) => {
            let sender = a.sender.clone().unwrap_or_else(medic::config::hostname);
            match medic::mqtt::signed::Signer::load(&sender, key) {
                Ok(signer) => {
                    signer.sign(request, a.node.as_deref().unwrap_or_default(), a.valid_for)
                }
                Err(e) => return fail(format!("--key: {e:#}")),
            }
        }
        None => serde_json::to_vec(&request).expect("a request always serializes"),
    };
    let options = send::SendOptions {
        broker: a.broker.clone(),
        credentials: a.user.clone().map(|u| (u, password.unwrap_or_default())),
        ca_file: a.ca_file.clone(),
        insecure: a.insecure,
        topic: topic_for(&a.topic, "command"),
        result_topic: topic_for(&a.result_topic, "result"),
        qos: a.qos,
        protocol: a.protocol,
        timeout: a.timeout,
        task_id,
        payload,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(send::send(options)) {
        Ok(reply) => {
            print!("{}", reply.message);
            if !reply.message.is_empty() && !reply.message.ends_with('\n') {
                println!();
            }
            if reply.code != 0 {
                let meaning = lcm::code::describe(reply.code).unwrap_or("command failed");
                eprintln!("medic: code {} ({meaning})", reply.code);
            }
            ExitCode::from(u8::try_from(reply.code).unwrap_or(1))
        }
        Err(e @ send::SendError::Timeout { .. }) => {
            eprintln!("medic: {e}");
            ExitCode::from(124)
        }
        Err(e) => fail(e),
    }
}

fn decode_command(
    options: decode::Options,
    listen: Option<std::net::SocketAddr>,
    files: Vec<PathBuf>,
) -> ExitCode {
    if let Some(addr) = listen {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot start the async runtime: {e}")),
        };
        return match runtime.block_on(decode::listen(&options, addr)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{e:#}")),
        };
    }
    match decode::files(&options, &files) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(format!("{e:#}")),
    }
}

/// `--security-level`, spelled as in collectd's config, with the choices in `--help`.
fn security_level() -> impl clap::builder::TypedValueParser<Value = SecurityLevel> {
    use clap::builder::TypedValueParser;
    let names = SecurityLevel::ALL.map(SecurityLevel::as_str);
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| name.parse().expect("one of the possible values"))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("medic: {message}");
    ExitCode::FAILURE
}
