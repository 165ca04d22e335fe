//! `medic record`: capture what the configured collectd sources deliver (network, PUTVAL
//! socket, unixsock) as a feed for `medic replay`, one JSON line per event, until the duration
//! is over or SIGINT/SIGTERM. Nothing reaches a rule and nothing runs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::event::{Ingested, now_ns};
use crate::replay::feed;
use crate::sources::putval::PutvalServer;
use crate::types_db::TypesDb;

pub struct Options {
    pub config: PathBuf,
    pub out: PathBuf,
    pub duration: Option<Duration>,
}

/// How many events were written.
pub async fn record(o: &Options, stop: impl Future<Output = ()>) -> anyhow::Result<u64> {
    let config = Config::load(&o.config).map_err(anyhow::Error::msg)?;
    if config.mqtt.is_some() {
        eprintln!(
            "medic record: MQTT messages are not recorded (only collectd's sources); add them \
             to the feed as {{\"kind\":\"mqtt\",...}} lines"
        );
    }
    // The feed may hold what hosts report about themselves: readable by its owner only.
    crate::os::write_private_file(&o.out, b"")
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&o.out)
        .with_context(|| format!("cannot open {}", o.out.display()))?;
    let mut out = std::io::BufWriter::new(file);

    let types = Arc::new(TypesDb::load(&config.ingest.types_db));
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
        !sources.is_empty(),
        "{}: no [ingest.network], [ingest.putval] or [ingest.unixsock] to record from",
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
        }
    }
    trigger.fire();
    for s in sources {
        let _ = s.await;
    }
    // What the sources handed over before they stopped.
    while let Ok(event) = events.try_recv() {
        written += write(&mut out, &event, &types)?;
    }
    out.flush()?;
    Ok(written)
}

fn write(out: &mut impl Write, event: &Ingested, types: &TypesDb) -> anyhow::Result<u64> {
    writeln!(out, "{}", feed::to_line(event, now_ns(), types))?;
    Ok(1)
}
