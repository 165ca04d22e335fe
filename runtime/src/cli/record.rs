//! `medic record`: capture what the configured collectd sources deliver (network, PUTVAL
//! socket, unixsock) and the MQTT messages on `--topic` filters as a feed for `medic replay`,
//! one JSON line per event, until the duration is over or SIGINT/SIGTERM. Nothing reaches a
//! rule and nothing runs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::event::{Ingested, MqttMessage, now_ns};
use crate::mqtt::link::{Backoff, Link, LinkEvent};
use crate::mqtt::options::Connect;
use crate::replay::feed;
use crate::sources::putval::PutvalServer;
use crate::types_db::TypesDb;

pub struct Options {
    pub config: PathBuf,
    pub out: PathBuf,
    pub duration: Option<Duration>,
    /// MQTT topic filters to record, on the config's `[mqtt]` broker.
    pub topics: Vec<String>,
}

/// How many events were written.
pub async fn record(o: &Options, stop: impl Future<Output = ()>) -> anyhow::Result<u64> {
    let config = Config::load(&o.config).map_err(anyhow::Error::msg)?;
    let mut mqtt = match (&config.mqtt, o.topics.is_empty()) {
        (_, true) => None,
        (None, false) => anyhow::bail!(
            "{}: --topic needs an [mqtt] section (the broker to record from)",
            o.config.display()
        ),
        (Some(m), false) => Some(mqtt_link(m, &config.daemon.node)?),
    };
    // The feed may hold what hosts report about themselves: readable by its owner only.
    crate::os::write_private_file(&o.out, b"")
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&o.out)
        .with_context(|| format!("cannot open {}", o.out.display()))?;
    let mut out = std::io::BufWriter::new(file);

    let types = Arc::new(crate::types_db::load(&config.ingest.types_db));
    let (ingest, mut events) = mpsc::channel::<Ingested>(65_536);
    let (mut trigger, shutdown) = crate::shutdown::channel();
    let mut sources = Vec::new();
    if let Some(p) = &config.ingest.putval {
        let interval = config.ingest.default_interval.as_nanos() as u64;
        let server = PutvalServer::bind(p, types.clone(), interval, ingest.clone())
            .with_context(|| format!("cannot listen on {}", p.socket.display()))?;
        eprintln!("medic record: PUTVAL socket {}", p.socket.display());
        sources.push(tokio::spawn(server.serve(shutdown.clone())));
    }
    if let Some(n) = &config.ingest.network {
        let (bound, tasks) =
            crate::sources::collectd::udp::start(n, ingest.clone(), shutdown.clone())?;
        eprintln!("medic record: collectd network on {bound:?}");
        sources.extend(tasks);
    }
    if let Some(u) = &config.ingest.unixsock {
        let poller = crate::sources::unixsock::Poller::new(u, ingest.clone());
        eprintln!("medic record: polling {}", u.socket.display());
        sources.push(tokio::spawn(poller.run(shutdown.clone())));
    }
    anyhow::ensure!(
        !sources.is_empty() || mqtt.is_some(),
        "{}: no [ingest.network], [ingest.putval] or [ingest.unixsock] to record from, and no \
         --topic",
        o.config.display()
    );
    drop(ingest);

    let until = async {
        match o.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop, until);
    let mut written = 0u64;
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut until => break,
            _ = flush.tick() => out.flush()?,
            Some(event) = events.recv() => {
                written += write(&mut out, &event, &types)?;
            }
            Some(event) = next_mqtt(&mut mqtt) => {
                let link = mqtt.as_ref().expect("an event came from it");
                match event {
                    LinkEvent::Connected { .. } => {
                        let qos = config.mqtt.as_ref().map_or(1, |m| m.qos);
                        let _ = link.client.subscribe(&o.topics, qos);
                        eprintln!("medic record: subscribed to {:?}", o.topics);
                    }
                    LinkEvent::Message(m) => {
                        link.client.ack(&m);
                        let event = Ingested::Mqtt(MqttMessage {
                            topic: m.topic.clone(),
                            payload: m.payload.clone(),
                        });
                        written += write(&mut out, &event, &types)?;
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(link) = &mqtt {
        link.client.disconnect();
    }
    trigger.fire();
    for s in sources {
        let _ = s.await;
    }
    if let Some(p) = &config.ingest.putval {
        let _ = std::fs::remove_file(&p.socket);
    }
    // What the sources handed over before they stopped.
    while let Ok(event) = events.try_recv() {
        written += write(&mut out, &event, &types)?;
    }
    out.flush()?;
    Ok(written)
}

/// A client of its own on the config's broker: a clean session under its own id, so it
/// never takes over (or leaves messages in) the daemon's session.
fn mqtt_link(m: &crate::config::Mqtt, node: &str) -> anyhow::Result<Link> {
    let mut connect = Connect::from_config(m, node)?;
    connect.client_id = format!("medic-record-{node}-{}", std::process::id());
    connect.clean_session = true;
    connect.last_will = None;
    let backoff = Backoff {
        first: m.reconnect_interval,
        max: m.max_reconnect_interval,
    };
    Link::start(&connect, backoff, "medic record")
}

async fn next_mqtt(link: &mut Option<Link>) -> Option<LinkEvent> {
    match link {
        Some(l) => l.events.recv().await,
        None => std::future::pending().await,
    }
}

fn write(out: &mut impl Write, event: &Ingested, types: &TypesDb) -> anyhow::Result<u64> {
    writeln!(out, "{}", feed::to_line(event, now_ns(), types))?;
    Ok(1)
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
    /// The feed to write (JSON lines, mode 0600, replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Stop after this long (e.g. 10m); default: until interrupted.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Also record MQTT messages on this topic filter (repeatable), from the config's
    /// [mqtt] broker.
    #[arg(long = "topic")]
    topics: Vec<String>,
}

pub fn run(a: Args) -> std::process::ExitCode {
    let options = Options {
        config: a.config,
        out: a.out,
        duration: a.duration,
        topics: a.topics,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let recorded = async {
        let stop = crate::daemon::signal();
        record(&options, stop).await
    };
    match runtime.block_on(recorded) {
        Ok(n) => {
            eprintln!(
                "medic record: {n} events written to {}",
                options.out.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}
