//! `medic run`: wires sources → engine → effects and runs until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::actions::Effects;
use crate::actions::executor::Executor;
use crate::config::Config;
use crate::engine::compiler::Compiler;
use crate::engine::dispatcher::Dispatcher;
use crate::engine::instance::Limits;
use crate::engine::registry::Registry;
use crate::engine::routes::Routes;
use crate::engine::rule::HostParts;
use crate::engine::series::SeriesTable;
use crate::engine::status::StatusBoard;
use crate::ingest::putval::PutvalServer;
use crate::ingest::types_db::TypesDb;
use crate::store::Store;

/// Values waiting for the dispatcher. Sources that can wait (PUTVAL clients) are slowed down
/// when it is full; the dispatcher itself never waits on a rule.
const INGEST_QUEUE: usize = 65_536;

pub fn limits(config: &Config) -> Limits {
    Limits {
        call_timeout: config.rules.call_timeout,
        memory_bytes: (config.rules.memory_limit_mib as usize).saturating_mul(1 << 20),
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let types = Arc::new(TypesDb::load(&config.ingest.types_db));
    let state = Store::open(&config.state_db())?;
    let series = Arc::new(SeriesTable::new(types.clone()));
    let status = StatusBoard::default();

    let (actions_tx, actions_rx) = mpsc::unbounded_channel();
    tokio::spawn(Executor::new(config.clone()).serve(actions_rx));

    let (routes_tx, routes_rx) = crossbeam_channel::unbounded();
    let (routes, rule_topics) = Routes::new(routes_tx);
    let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_QUEUE);
    let dispatcher = Dispatcher::new(series.clone(), routes_rx, status.clone());
    let dispatcher = std::thread::Builder::new()
        .name("dispatcher".into())
        .spawn(move || dispatcher.run(ingest_rx))?;

    let compiler = Compiler::new(Some(config.cache_dir()))?;
    let (mqtt_tx, mqtt_rx) = mpsc::unbounded_channel();
    let mqtt = match &config.mqtt {
        Some(m) => {
            let running = crate::mqtt::service::start(crate::mqtt::service::Parts {
                config: config.clone(),
                store: state.clone(),
                actions: actions_tx.clone(),
                ingest: ingest_tx.clone(),
                rule_topics,
                requests: mqtt_rx,
            })?;
            tracing::info!(broker = m.broker, "MQTT client started");
            Some(running)
        }
        None => None,
    };
    let effects = Effects {
        commands: actions_tx,
        mqtt: mqtt.as_ref().map(|_| mqtt_tx),
    };
    let host = HostParts {
        state,
        series,
        limits: limits(&config),
    };
    let mut registry = Registry::new(
        compiler,
        host,
        config.rules.clone(),
        effects,
        routes,
        status.clone(),
    );
    registry.load_all()?;
    let loaded = status.snapshot().len();
    let (stop_watch, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (ready_tx, ready) = crossbeam_channel::bounded::<()>(1);
    let watcher = std::thread::Builder::new()
        .name("rules-watch".into())
        .spawn(move || {
            if let Err(e) = registry.watch(stop_rx, ready_tx) {
                tracing::error!("hot reload is off: {e:#}");
            }
        })?;
    // Without the watch, rules still serve: say so, but do not refuse to start.
    let _ = tokio::task::spawn_blocking(move || ready.recv()).await;

    if let Some(p) = &config.ingest.putval {
        let mode = u32::from_str_radix(&p.mode, 8).unwrap_or(0o660);
        let interval = config.ingest.default_interval.as_nanos() as u64;
        let server =
            PutvalServer::bind(&p.socket, mode, types.clone(), interval, ingest_tx.clone())
                .with_context(|| format!("cannot listen on {}", p.socket.display()))?;
        tracing::info!(socket = %p.socket.display(), "PUTVAL/PUTNOTIF socket ready");
        tokio::spawn(server.serve());
    }
    if let Some(n) = &config.ingest.network {
        let stats = Arc::new(crate::ingest::udp::NetworkStats::default());
        let bound = crate::ingest::udp::start(n, ingest_tx.clone(), stats)?;
        tracing::info!(
            listen = ?bound,
            security_level = ?n.security_level,
            "collectd network receiver ready"
        );
    }
    if let Some(u) = &config.ingest.unixsock {
        let poller = crate::ingest::unixsock::Poller::new(u, ingest_tx.clone())?;
        tokio::spawn(poller.run());
    }
    drop(ingest_tx);

    tracing::info!(
        node = config.daemon.node,
        rules = loaded,
        rules_dir = %config.rules.dir.display(),
        "medic running"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: suspending rules");
    drop(stop_watch);
    let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
    if let Some(p) = &config.ingest.putval {
        let _ = std::fs::remove_file(&p.socket);
    }
    if let Some(mqtt) = mqtt {
        mqtt.stop().await;
    }
    drop(dispatcher);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
