//! The named steps of `daemon::start`, in the order it takes them: the process, the store and
//! history, the dispatcher, the rules, collectd's sources, the HTTP side.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{INGEST_QUEUE, http_limits, read_token};
use crate::config::Config;
use crate::effects::Effects;
use crate::effects::executor::ExecutorHandle;
use crate::engine::compiler::Compiler;
use crate::engine::dispatcher::Dispatcher;
use crate::engine::instance::Limits;
use crate::engine::registry::{Registry, RegistryParts};
use crate::engine::routes::{Routes, TopicFilters};
use crate::engine::rule::HostParts;
use crate::engine::series::SeriesTable;
use crate::engine::status::StatusBoard;
use crate::http::SourceInfo;
use crate::shutdown::Shutdown;
use crate::sources::putval::PutvalServer;
use crate::store::Store;
use crate::store::history::{History, Retention};

/// What medic asks of the OS before anything starts: accounts for `user`/`group` commands
/// checked, SIGXFSZ caught, the open-files limit raised. Returns that limit.
pub(super) fn prepare_process(config: &Config) -> anyhow::Result<u64> {
    crate::effects::executor::check_accounts(config).map_err(anyhow::Error::msg)?;
    crate::os::catch_file_size_signal().context("cannot catch SIGXFSZ")?;
    Ok(match crate::os::raise_nofile_limit() {
        Ok(limit) => {
            tracing::debug!(limit, "open files limit");
            limit
        }
        Err(e) => {
            tracing::warn!("cannot raise the open files limit: {e}");
            1024
        }
    })
}

/// The state database, with the audit rows a crash left `running` marked `interrupted`.
pub(super) fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::open(&config.state_db())?;
    match store.history_interrupt_running() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            commands = n,
            "commands that were running when medic last stopped (crash or kill) are recorded as \
             interrupted"
        ),
        Err(e) => store.report("the audit history cannot be updated", &e),
    }
    Ok(store)
}

/// The audit history's writer thread, forwarding to `[history] forward`'s sink when set.
pub(super) fn start_history(
    config: &Config,
    store: &Store,
    sinks: &crate::effects::sinks::Sinks,
) -> anyhow::Result<History> {
    let history = History::start(
        store.clone(),
        Retention {
            max_age: config.history.max_age,
            max_rows: config.history.max_rows,
        },
    )?;
    Ok(match config.history.forward.clone() {
        Some(sink) => {
            let sinks = sinks.clone();
            history.forwarding(Arc::new(move |entry| {
                sinks.forward(&sink, entry.to_json().to_string().into_bytes())
            }))
        }
        None => history,
    })
}

/// The engine's entry: the ingest queue and the dispatcher thread behind it.
pub(super) struct Engine {
    pub(super) ingest: mpsc::Sender<crate::event::Ingested>,
    pub(super) routes: Routes,
    pub(super) rule_topics: tokio::sync::watch::Receiver<TopicFilters>,
    pub(super) thread: std::thread::JoinHandle<()>,
    pub(super) ended: oneshot::Receiver<()>,
}

pub(super) fn start_dispatcher(
    series: &Arc<SeriesTable>,
    status: &StatusBoard,
) -> anyhow::Result<Engine> {
    let (routes_tx, routes_rx) = crossbeam_channel::unbounded();
    let (routes, rule_topics) = Routes::new(routes_tx);
    let (ingest, ingest_rx) = mpsc::channel(INGEST_QUEUE);
    let dispatcher = Dispatcher::new(series.clone(), routes_rx, status.clone());
    let (gone, ended) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("dispatcher".into())
        .spawn(move || {
            // Dropped however the thread ends, a panic included.
            let _gone = gone;
            dispatcher.run(ingest_rx)
        })?;
    Ok(Engine {
        ingest,
        routes,
        rule_topics,
        thread,
        ended,
    })
}

/// What the rules' registry is built from.
pub(super) struct RulesParts {
    pub(super) store: Store,
    pub(super) series: Arc<SeriesTable>,
    pub(super) history: History,
    pub(super) effects: Effects,
    pub(super) routes: Routes,
    pub(super) status: StatusBoard,
}

/// Load every rule, then hand the registry to the `rules-watch` thread (hot reload); returns
/// once it watches. The sender takes reload requests (SIGHUP).
pub(super) async fn start_rules(
    config: &Config,
    parts: RulesParts,
    shutdown: &Shutdown,
) -> anyhow::Result<(
    std::thread::JoinHandle<Registry>,
    crossbeam_channel::Sender<crate::config::Rules>,
)> {
    let mut registry = Registry::new(RegistryParts {
        compiler: Compiler::new(Some(config.cache_dir()))?,
        host: HostParts {
            state: parts.store,
            held: Default::default(),
            series: parts.series,
            clock: Default::default(),
            limits: Limits::from_config(&config.rules),
            history: Some(parts.history),
        },
        config: config.rules.clone(),
        effects: parts.effects.port(),
        routes: parts.routes,
        status: parts.status,
    });
    registry.load_all()?;
    let (ready_tx, ready) = crossbeam_channel::bounded::<()>(1);
    let (rules_tx, rules_rx) = crossbeam_channel::unbounded();
    let watch_shutdown = shutdown.clone();
    let watcher = std::thread::Builder::new()
        .name("rules-watch".into())
        .spawn(move || registry.watch(watch_shutdown, ready_tx, rules_rx))?;
    let _ = tokio::task::spawn_blocking(move || ready.recv()).await;
    Ok((watcher, rules_tx))
}

/// collectd's feeds: the PUTVAL socket, the network listeners, the unixsock poller. Their tasks
/// go to `sources`; returns what the HTTP side lists for each.
pub(super) fn start_collectd_sources(
    config: &Config,
    types: &Arc<crate::types_db::TypesDb>,
    series: &Arc<SeriesTable>,
    ingest: &mpsc::Sender<crate::event::Ingested>,
    shutdown: &Shutdown,
    sources: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Vec<SourceInfo>> {
    let mut inputs = Vec::new();
    if let Some(p) = &config.ingest.putval {
        let interval = config.ingest.default_interval.as_nanos() as u64;
        let server = PutvalServer::bind(p, types.clone(), interval, ingest.clone())
            .with_context(|| format!("cannot listen on {}", p.socket.display()))?
            .with_latest(series.clone());
        tracing::info!(socket = %p.socket.display(), "PUTVAL/PUTNOTIF socket ready");
        inputs.push(SourceInfo {
            kind: "putval",
            listener: p.socket.display().to_string(),
            reasons: crate::sources::putval::REFUSAL_REASONS,
        });
        sources.push(tokio::spawn(server.serve(shutdown.clone())));
    }
    if let Some(n) = &config.ingest.network {
        use crate::sources::collectd::udp;
        let (bound, tasks) = udp::start(n, ingest.clone(), shutdown.clone())?;
        sources.extend(tasks);
        inputs.extend(bound.iter().map(|addr| SourceInfo {
            kind: "network",
            listener: addr.to_string(),
            reasons: udp::REFUSAL_REASONS,
        }));
        tracing::info!(
            listen = ?bound,
            security_level = ?n.security_level,
            "collectd network receiver ready"
        );
    }
    if let Some(u) = &config.ingest.unixsock {
        let poller = crate::sources::unixsock::Poller::new(u, ingest.clone());
        sources.push(tokio::spawn(poller.run(shutdown.clone())));
        inputs.push(SourceInfo {
            kind: "unixsock",
            listener: u.socket.display().to_string(),
            reasons: crate::sources::unixsock::REFUSAL_REASONS,
        });
    }
    Ok(inputs)
}

/// The read-only HTTP side, bound and ready to serve.
pub(super) async fn start_http(
    config: &Config,
    h: &crate::config::Http,
    nofile: u64,
    status: &StatusBoard,
    executor: &ExecutorHandle,
    effects: &Effects,
    inputs: Vec<SourceInfo>,
) -> anyhow::Result<crate::http::Server> {
    let commands = executor.clone();
    let parts = crate::http::Parts {
        node: config.daemon.node.clone(),
        listen: h.listen,
        token: h.token_file.as_deref().map(read_token).transpose()?,
        board: status.clone(),
        commands: Arc::new(move || commands.commands()),
        sinks: {
            let sinks = effects.sinks().clone();
            Arc::new(move || sinks.view())
        },
        store: Store::open_read_only(&config.state_db())?,
        sources: inputs,
        mqtt_broker: config.mqtt.as_ref().map(|m| m.broker.to_string()),
        limits: http_limits(h, nofile, config),
    };
    let server = crate::http::Server::bind(parts)
        .await
        .with_context(|| format!("cannot listen on http.listen {}", h.listen))?;
    tracing::info!(
        listen = %server.local_addr()?,
        token = h.token_file.is_some(),
        "HTTP status endpoints ready"
    );
    Ok(server)
}
