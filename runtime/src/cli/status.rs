//! `medic status`: the running daemon's `GET /status`, as a few tables for a terminal or as the
//! JSON itself (`--json`). The endpoint comes from the config's `[http]` (with its token) or
//! from `--url`.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::config::Config;

/// Where to ask.
pub enum Target<'a> {
    Config(&'a Path),
    Url {
        url: &'a str,
        token_file: Option<&'a Path>,
    },
}

pub fn status(target: Target<'_>, json: bool) -> anyhow::Result<String> {
    let (url, token) = endpoint(target)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, body) = runtime.block_on(crate::http::client::get(&url, token.as_deref()))?;
    if code != 200 {
        let why = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("{url} answered {code}: {why}");
    }
    if json {
        return Ok(format!("{body}\n"));
    }
    let status: Value =
        serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
    Ok(render(&status))
}

/// The `/status` URL and the token to send.
fn endpoint(target: Target<'_>) -> anyhow::Result<(String, Option<String>)> {
    match target {
        Target::Url { url, token_file } => {
            let url = url.trim_end_matches('/');
            let url = if url.ends_with("/status") {
                url.to_string()
            } else {
                format!("{url}/status")
            };
            Ok((url, token_file.map(read_token).transpose()?))
        }
        Target::Config(path) => {
            let config = Config::load(path)?;
            let http = config.http.with_context(|| {
                format!(
                    "{} has no [http] section: medic serves no status (or pass --url)",
                    path.display()
                )
            })?;
            let mut addr = http.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let token = http.token_file.as_deref().map(read_token).transpose()?;
            Ok((format!("http://{addr}/status"), token))
        }
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Tables for people: rules, sources, MQTT, commands.
fn render(s: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "medic {} on {}, up {} s, {} series",
        text(&s["version"]),
        text(&s["node"]),
        text(&s["uptime_s"]),
        text(&s["series"])
    );
    if let Some(m) = s["mqtt"].as_object() {
        let _ = writeln!(
            out,
            "MQTT {}: {}, {} in the outbox",
            text(&m["broker"]),
            if m["connected"] == true {
                "connected"
            } else {
                "DISCONNECTED"
            },
            text(&m["outbox"])
        );
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:<9} {:>10} {:>8} {:>10}  DETAIL",
        "RULE", "STATE", "EVENTS", "DROPPED", "LAST CALL"
    );
    for r in s["rules"].as_array().into_iter().flatten() {
        let detail = [&r["error"], &r["last_load_error"]]
            .into_iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:>10} {:>8} {:>8}µs  {}",
            text(&r["name"]),
            text(&r["state"]),
            text(&r["events"]),
            text(&r["dropped"]),
            text(&r["last_call_us"]),
            detail
        );
    }
    let _ = writeln!(
        out,
        "\n{:<9} {:<32} {:>10} {:>8} {:>8} {:>8}",
        "SOURCE", "LISTENER", "VALUES", "PER S", "REFUSED", "DROPPED"
    );
    for src in s["sources"].as_array().into_iter().flatten() {
        let refused: u64 = src["refused"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        let values =
            src["values"].as_u64().unwrap_or(0) + src["notifications"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<9} {:<32} {:>10} {:>8.1} {:>8} {:>8}{}",
            text(&src["kind"]),
            text(&src["listener"]),
            values,
            src["per_second"].as_f64().unwrap_or(0.0),
            refused,
            text(&src["dropped"]),
            if src["connected"] == false {
                "  not connected"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:<22} {:>8}  LAST",
        "COMMAND", "BREAKER", "RUNS"
    );
    for c in s["commands"].as_array().into_iter().flatten() {
        let breaker = &c["breaker"];
        let breaker = match breaker["state"].as_str() {
            Some("open") => format!("OPEN ({} left)", text(&breaker["remaining"])),
            Some("half_open") => "HALF-OPEN".into(),
            _ => format!(
                "closed ({}/{})",
                text(&breaker["failures"]),
                text(&breaker["opens_at"])
            ),
        };
        let last = match c["last"].as_object() {
            Some(l) => format!("{} (exit {})", text(&l["outcome"]), text(&l["code"])),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<28} {:<22} {:>8}  {}",
            format!("{}/{}", text(&c["service"]), text(&c["command"])),
            breaker,
            format!("{}/{}", text(&c["runs_in_window"]), text(&c["max_runs"])),
            last
        );
    }
    out
}

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's medic.toml: its `[http]` says where to ask and with which token.
    #[arg(long, short, required_unless_present = "url", conflicts_with = "url")]
    config: Option<std::path::PathBuf>,
    /// Ask this medic instead (e.g. http://127.0.0.1:9105).
    #[arg(long)]
    url: Option<String>,
    /// With --url: the bearer token's file.
    #[arg(long, requires = "url")]
    token_file: Option<std::path::PathBuf>,
    /// The JSON itself.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> std::process::ExitCode {
    let target = match (&a.config, &a.url) {
        (Some(c), _) => Target::Config(c),
        (None, Some(url)) => Target::Url {
            url,
            token_file: a.token_file.as_deref(),
        },
        (None, None) => unreachable!("clap requires --config or --url"),
    };
    match status(target, a.json) {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}
