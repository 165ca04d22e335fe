//! `medic decode`: print what collectd network datagrams carry, one JSON object per line, from
//! captured files or live from a socket. For debugging a collectd setup.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use crate::event::Identifier;
use crate::replay::feed;
use crate::sources::collectd::udp::AuthFile;
use crate::types_db::TypesDb;
use collectd_codec::network::{Credentials, Decoded, Item, SecurityLevel, cdtime_to_ns, decode};

pub struct Options {
    pub level: SecurityLevel,
    pub auth_file: Option<PathBuf>,
    pub types_db: Vec<PathBuf>,
}

/// Decode each file (one raw datagram each). Returns false if any could not be decoded; the
/// reason goes to stderr, naming the file.
pub fn files(options: &Options, files: &[PathBuf]) -> anyhow::Result<bool> {
    let credentials = credentials(options.auth_file.as_deref())?;
    let types = crate::types_db::load(&options.types_db);
    let mut ok = true;
    let mut out = std::io::stdout().lock();
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                ok = false;
                continue;
            }
        };
        let mut decoded = Vec::new();
        let result = decode(&bytes, options.level, &credentials, &mut decoded);
        for d in &decoded {
            writeln!(out, "{}", to_json(d, &types))?;
        }
        if let Err(e) = result {
            eprintln!("{}: {e}", file.display());
            ok = false;
        }
    }
    Ok(ok)
}

/// Print live traffic until interrupted.
pub async fn listen(options: &Options, addr: SocketAddr) -> anyhow::Result<()> {
    let socket = crate::sources::collectd::socket::bind(addr, None)?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut auth = AuthFile::load(options.auth_file.as_deref())?;
    let types = crate::types_db::load(&options.types_db);
    eprintln!("listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let mut decoded = Vec::new();
        let result = decode(&buf[..n], options.level, auth.credentials(), &mut decoded);
        let mut out = std::io::stdout().lock();
        for d in &decoded {
            writeln!(out, "{}", to_json(d, &types))?;
        }
        if let Err(e) = result {
            eprintln!("{from}: {e}");
        }
    }
}

fn credentials(path: Option<&Path>) -> anyhow::Result<Credentials> {
    Ok(AuthFile::load(path)?.credentials().clone())
}

fn secs(cdtime: u64) -> f64 {
    cdtime as f64 / (1u64 << 30) as f64
}

/// A value list in the feed's shape (`medic replay` reads what `decode` prints), plus how it
/// was secured.
pub fn to_json(d: &Decoded, types: &TypesDb) -> Json {
    match &d.item {
        Item::Values { fields, samples } => {
            let id = Identifier {
                host: fields.host.clone(),
                plugin: fields.plugin.clone(),
                plugin_instance: fields.plugin_instance.clone(),
                type_: fields.type_.clone(),
                type_instance: fields.type_instance.clone(),
            };
            let mut j = feed::values_json(
                &id,
                cdtime_to_ns(fields.time_hr),
                cdtime_to_ns(fields.interval_hr),
                &feed::ds_names(types, &fields.type_, samples.len()),
                samples,
            );
            j["security"] = json!(d.security.as_str());
            j
        }
        Item::Notification {
            fields,
            severity,
            message,
        } => {
            let mut j = json!({
                "kind": "notification",
                "severity": match severity { 1 => "failure", 2 => "warning", 4 => "okay", _ => "unknown" },
                "message": message,
                "time": secs(fields.time_hr),
                "security": d.security.as_str(),
            });
            for (key, value) in [
                ("host", &fields.host),
                ("plugin", &fields.plugin),
                ("plugin_instance", &fields.plugin_instance),
                ("type", &fields.type_),
                ("type_instance", &fields.type_instance),
            ] {
                if !value.is_empty() {
                    j[key] = json!(value);
                }
            }
            j
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "none", value_parser = super::security_level())]
    security_level: SecurityLevel,
    /// collectd AuthFile (`user: password` lines), for signed and encrypted data.
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// types.db for data-source names (repeatable).
    #[arg(long, default_value = "/usr/share/collectd/types.db")]
    types_db: Vec<PathBuf>,
    /// Listen on this address and print live traffic instead of reading files.
    #[arg(long, conflicts_with = "files")]
    listen: Option<SocketAddr>,
    #[arg(required_unless_present = "listen")]
    files: Vec<PathBuf>,
}

/// Exit 1 when a file could not be decoded (named on stderr).
pub fn run(a: Args) -> std::process::ExitCode {
    let options = Options {
        level: a.security_level,
        auth_file: a.auth_file,
        types_db: a.types_db,
    };
    if let Some(addr) = a.listen {
        let runtime = match super::runtime() {
            Ok(r) => r,
            Err(code) => return code,
        };
        return match runtime.block_on(listen(&options, addr)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => super::fail(format!("{e:#}")),
        };
    }
    match files(&options, &a.files) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => super::fail(format!("{e:#}")),
    }
}
