//! `medic run`: wires sources → engine → effects, runs until the shutdown future resolves, and
//! then stops everything in one order.
//!
//! # Shutdown order
//!
//! 1. The outside sources stop (UDP, PUTVAL, unixsock, MQTT commands and rule messages) and
//!    drop their ingest senders; the rules directory is no longer watched. A remote command
//!    that arrives from now on stays with the broker, unacknowledged, for the next start.
//! 2. The dispatcher routes what is queued and ends; each rule takes every event queued for it,
//!    so every command it will ask for has been asked for.
//! 3. Running commands may finish for `daemon.stop_timeout`; past it their process groups are
//!    killed (and named in the log). New requests are refused from now on; `run-remote`s still
//!    waiting for their node are answered "medic is stopping".
//! 4. Those results reach the rules, which then `suspend` (flushing their memory into state)
//!    and their threads end. The audit history is written out (killed commands: `interrupted`).
//! 5. The MQTT outbox is flushed (results of remote commands included) for a few seconds,
//!    `offline` is published and the session disconnected. What is left goes out after the
//!    next start.
//! 6. `run` returns `Ok`: medic exits 0.
//!
//! If the dispatcher thread dies (a panic: a bug), nothing would reach a rule again while
//! every source kept answering `Success`; medic then stops in the same order and `run`
//! returns an error, so it exits non-zero and systemd (`Restart=on-failure`) starts it afresh.
//!
//! SIGHUP reloads the config ([`reload`]): what can change live does, the rest is named.

mod reload;
mod steps;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, Mqtt};
use crate::effects::Effects;
use crate::effects::executor::{Executor, ExecutorHandle};
use crate::engine::registry::Registry;
use crate::engine::routes::TopicFilters;
use crate::engine::series::{SeriesLimits, SeriesTable};
use crate::engine::status::StatusBoard;
use crate::event::Ingested;
use crate::mqtt::link::Backoff;
use crate::mqtt::options::Connect;
use crate::mqtt::session::{self, Session, SessionHandle};
use crate::shutdown::{self, Shutdown};
use crate::store::Store;
use crate::store::history::History;
use steps::{
    RulesParts, open_store, prepare_process, start_collectd_sources, start_dispatcher,
    start_history, start_http, start_rules,
};

/// Values waiting for the dispatcher. Sources that can wait (PUTVAL clients) are slowed down
/// when it is full; the dispatcher itself never waits on a rule.
const INGEST_QUEUE: usize = 65_536;
/// How long the audit history may take to be written at shutdown.
const HISTORY_FLUSH: Duration = Duration::from_secs(3);
/// How long each sink may take to deliver what is queued at shutdown.
const SINK_FLUSH: Duration = Duration::from_secs(3);
/// How long the outbox may take to flush at shutdown.
const OUTBOX_FLUSH: Duration = Duration::from_secs(3);

/// Process-wide settings that only take hold before the first thread starts: `main` calls it
/// first thing for `medic run`.
pub fn before_threads() {
    crate::os::one_malloc_arena();
}

/// Run the daemon on the config read from `path` until `stop` resolves, then shut down in the
/// order above. SIGHUP meanwhile reloads `path`.
pub async fn run(
    config: Config,
    path: &Path,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Before anything starts: a SIGHUP must never find the default action (exit) in place.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let (mut trigger, shutdown) = shutdown::channel();
    let mut started = start(config.clone(), shutdown).await?;
    let pid_file = config.daemon.state_dir.join("medic.pid");
    // 0600, never through a link, whatever the umask: `medic reload` signals what it names.
    let pid = format!("{}\n", std::process::id());
    if let Err(e) = crate::os::write_private_file(&pid_file, pid.as_bytes()) {
        tracing::warn!(file = %pid_file.display(), "cannot write the pid file (medic reload needs it): {e}");
    }
    tracing::info!(
        node = config.daemon.node,
        rules = started.status.snapshot().len(),
        rules_dir = %config.rules.dir.display(),
        "medic running"
    );
    let mut in_effect = (*config).clone();
    tokio::pin!(stop);
    let mut dispatcher_died = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => in_effect = reload::apply(path, in_effect, &started.reload),
            _ = &mut started.dispatcher_ended => {
                tracing::error!(
                    "the dispatcher thread died (see the panic above): values no longer reach \
                     the rules; medic stops to be restarted"
                );
                dispatcher_died = true;
                break;
            }
        }
    }
    tracing::info!("shutting down");
    trigger.fire();
    started.stop(&config).await;
    let _ = std::fs::remove_file(&pid_file);
    if dispatcher_died {
        anyhow::bail!("the dispatcher thread died");
    }
    Ok(())
}

/// `[http]`'s limits, with the connection cap lowered to what the open-files limit leaves once
/// PUTVAL clients and commands have theirs.
fn http_limits(h: &crate::config::Http, nofile: u64, config: &Config) -> crate::http::Limits {
    let putval_clients = config.ingest.putval.as_ref().map_or(0, |p| p.max_clients);
    let max_connections = crate::http::connection_cap(h.max_connections, nofile, putval_clients);
    if max_connections < h.max_connections {
        tracing::warn!(
            configured = h.max_connections,
            max_connections,
            open_files_limit = nofile,
            "http.max_connections lowered: the open-files limit keeps {} descriptors for \
             PUTVAL clients and {} for commands, rules and the database",
            putval_clients,
            crate::http::RESERVED_FDS
        );
    }
    crate::http::Limits {
        header_timeout: h.header_timeout,
        idle_timeout: h.idle_timeout,
        request_timeout: h.request_timeout,
        max_connections,
    }
}

/// Everything that runs, held for the shutdown order.
struct Running {
    status: StatusBoard,
    reload: reload::Targets,
    sources: Vec<JoinHandle<()>>,
    /// The daemon's own sender of the ingest queue, dropped once the sources have ended.
    ingest: mpsc::Sender<Ingested>,
    dispatcher: std::thread::JoinHandle<()>,
    /// Resolves when the dispatcher thread ends; before shutdown that means it died.
    dispatcher_ended: oneshot::Receiver<()>,
    watcher: std::thread::JoinHandle<Registry>,
    executor: ExecutorHandle,
    effects: Effects,
    sink_tasks: Vec<JoinHandle<()>>,
    history: History,
    session: Option<SessionHandle>,
}

async fn start(config: Arc<Config>, shutdown: Shutdown) -> anyhow::Result<Running> {
    let nofile = prepare_process(&config)?;
    let types = Arc::new(crate::types_db::load(&config.ingest.types_db));
    let store = open_store(&config)?;
    let (sinks, sink_tasks) = crate::effects::sinks::Sinks::start(&config)?;
    let history = start_history(&config, &store, &sinks)?;
    let series = Arc::new(SeriesTable::with_limits(
        types.clone(),
        SeriesLimits {
            max_series: config.ingest.max_series,
            max_future_intervals: config.ingest.max_future_intervals,
            timeout_intervals: config.ingest.series_timeout,
        },
    ));
    let status = StatusBoard::default();

    let (commands, commands_rx) = mpsc::channel(crate::effects::COMMAND_QUEUE);
    let executor = Executor::new(config.clone())
        .with_store(store.clone())
        .with_history(history.clone());
    let executor_handle = executor.handle();
    tokio::spawn(executor.serve(commands_rx));

    let engine = start_dispatcher(&series, &status)?;
    let mut sources = Vec::new();
    let mut effects = Effects::new(crate::effects::Parts {
        sinks,
        commands,
        history: Some(history.clone()),
        collectd: config.notify.collectd_socket.clone().map(|socket| {
            crate::effects::collectd::CollectdNotify::start(socket, &config.daemon.node)
        }),
        grants: config.rules.grants.clone(),
    });
    let session = match &config.mqtt {
        Some(m) => {
            let ingest = &engine.ingest;
            let (session, handle) = start_mqtt(&config, m, &store, &effects, ingest, &shutdown)?;
            effects.with_mqtt(session.outbound);
            sources.extend(session.tasks);
            watch_rule_topics(engine.rule_topics, handle.clone());
            tracing::info!(broker = %m.broker, "MQTT client started");
            Some(handle)
        }
        None => None,
    };
    let (watcher, rules_tx) = start_rules(
        &config,
        RulesParts {
            store,
            series: series.clone(),
            history: history.clone(),
            effects: effects.clone(),
            routes: engine.routes,
            status: status.clone(),
        },
        &shutdown,
    )
    .await?;
    let inputs = start_collectd_sources(
        &config,
        &types,
        &series,
        &engine.ingest,
        &shutdown,
        &mut sources,
    )?;
    if !config.probes.is_empty() {
        let probes = crate::sources::probe::start(
            &config,
            effects.commands().clone(),
            engine.ingest.clone(),
            &shutdown,
        );
        sources.extend(probes);
        tracing::info!(probes = config.probes.len(), "probes scheduled");
    }
    if let Some(h) = &config.http {
        let server = start_http(
            &config,
            h,
            nofile,
            &status,
            &executor_handle,
            &effects,
            inputs,
        );
        sources.push(server.await?.serve(shutdown.clone()));
    }
    // From here the sources hold the ingest queue, and `ingest` stays in `Running` until they
    // have ended (shutdown step 1): the dispatcher then drains and ends. Kept rather than
    // dropped now, so a node with no source at all (rules on timers only, MQTT off) keeps its
    // dispatcher instead of seeing it end at once.
    let reload = reload::Targets {
        executor: executor_handle.clone(),
        mqtt: effects.mqtt().cloned(),
        rules: rules_tx,
        sinks: effects.sinks().clone(),
    };
    Ok(Running {
        status,
        reload,
        sources,
        ingest: engine.ingest,
        dispatcher: engine.thread,
        dispatcher_ended: engine.ended,
        watcher,
        executor: executor_handle,
        effects,
        sink_tasks,
        history,
        session,
    })
}

/// The bearer token in `path` (surrounding whitespace ignored).
fn read_token(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read http.token_file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        token.len() >= 16,
        "http.token_file {}: the token must be at least 16 characters",
        path.display()
    );
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "http.token_file can be read by other users: chmod 600 it"
        );
    }
    Ok(token.to_string())
}

/// The MQTT session with its inbound (source) and outbound (effect) sides.
struct MqttParts {
    outbound: crate::effects::mqtt::Outbound,
    tasks: Vec<JoinHandle<()>>,
}

fn start_mqtt(
    config: &Config,
    m: &Mqtt,
    store: &Store,
    effects: &Effects,
    ingest: &mpsc::Sender<Ingested>,
    shutdown: &Shutdown,
) -> anyhow::Result<(MqttParts, SessionHandle)> {
    let node = &config.daemon.node;
    let senders = crate::mqtt::signed::Senders::load(&m.auth, m.max_clock_skew)
        .context("cannot load the keys of [mqtt.auth.senders]")?;
    let signer = m
        .auth
        .key_file
        .as_deref()
        .map(|path| crate::mqtt::signed::Signer::load(node, path).map(Arc::new))
        .transpose()
        .context("cannot load mqtt.auth.key_file")?;
    if m.auth.require_signed {
        tracing::info!(
            senders = m.auth.senders.len(),
            "remote commands must be signed (mqtt.auth.require_signed)"
        );
    }
    let (mut session, handle) = Session::new(session::Parts {
        connect: Connect::from_config(m, node)?,
        backoff: Backoff {
            first: m.reconnect_interval,
            max: m.max_reconnect_interval,
        },
        store: store.clone(),
        qos: m.qos,
        status_topic: Mqtt::topic_for(&m.status_topic, node),
        outbox_limit: crate::store::OutboxLimit {
            messages: m.outbox_limit,
            bytes: m.outbox_max_bytes,
        },
    })?;
    let run_effects = effects.clone();
    let replacer = crate::effects::replace_config::Replacer::new(
        config.collectd.clone(),
        m.broker.tls,
        store.clone(),
        effects.history().cloned(),
    );
    let tasks = crate::sources::mqtt::start(
        crate::sources::mqtt::Parts {
            config: m.clone(),
            node: node.clone(),
            store: store.clone(),
            session: handle.clone(),
            run: Arc::new(move |request| run_effects.run(request)),
            replace: Arc::new(move |request| replacer.handle(request)),
            ingest: ingest.clone(),
            shutdown: shutdown.clone(),
            senders: Arc::new(senders),
            history: effects.history().cloned(),
            local_only: config
                .probes
                .iter()
                .filter(|(_, p)| !p.remote)
                .map(|(name, _)| crate::config::Probe::service(name))
                .collect(),
        },
        &mut session,
    );
    let outbound = crate::effects::mqtt::Outbound::start(
        m.clone(),
        node,
        signer,
        handle.clone(),
        &mut session,
    );
    tokio::spawn(session.run());
    Ok((MqttParts { outbound, tasks }, handle))
}

/// Keep the session subscribed to the union of the rules' topic filters.
fn watch_rule_topics(
    mut topics: tokio::sync::watch::Receiver<TopicFilters>,
    session: SessionHandle,
) {
    tokio::spawn(async move {
        loop {
            let now = topics.borrow_and_update().clone();
            session.want("rule topics", now);
            if topics.changed().await.is_err() {
                return;
            }
        }
    });
}

impl Running {
    /// Steps 1–6 of the shutdown order (the signal has fired).
    async fn stop(self, config: &Config) {
        // 1. Outside sources end on the signal; the watcher hands the rules back.
        for task in self.sources {
            let _ = task.await;
        }
        drop(self.ingest);
        let registry = tokio::task::spawn_blocking(move || self.watcher.join()).await;
        let Ok(Ok(registry)) = registry else {
            tracing::error!("the rules watcher thread panicked; rules stop without suspend");
            return;
        };
        if let Some(p) = &config.ingest.putval {
            let _ = std::fs::remove_file(&p.socket);
        }
        // 2. The dispatcher ends once the sources' senders are gone; rules take what it routed.
        let dispatcher = self.dispatcher;
        let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
        let registry = tokio::task::spawn_blocking(move || {
            registry.drain_all();
            registry
        })
        .await
        .expect("draining rules does not panic");
        // 3. Running commands finish, or are killed at the deadline.
        let grace = config.daemon.stop_timeout;
        let forced = self.executor.drain(grace).await;
        if !forced.is_empty() {
            tracing::warn!(
                killed = ?forced,
                "commands still running after daemon.stop_timeout ({grace:?}): process groups killed"
            );
        }
        if let Some(mqtt) = self.effects.mqtt() {
            let abandoned = mqtt.abandon_waiting().await;
            if abandoned > 0 {
                tracing::warn!(
                    abandoned,
                    "run-remote commands still waiting for their node: answered `medic is stopping`"
                );
            }
        }
        // 4. Results reach the rules; rules suspend.
        let mut registry = registry;
        let _ = tokio::task::spawn_blocking(move || {
            registry.stop_all();
            drop(registry);
        })
        .await;
        // What the rules emitted is delivered.
        self.effects.sinks().stop();
        drop(self.effects);
        for task in self.sink_tasks {
            if tokio::time::timeout(SINK_FLUSH, task).await.is_err() {
                tracing::warn!("a sink did not deliver what was queued in time");
            }
        }
        tracing::info!("rules suspended");
        // The audit rows of the last commands (killed ones say `interrupted`) are written.
        let history = self.history;
        let written = tokio::task::spawn_blocking(move || history.flush(HISTORY_FLUSH)).await;
        if !matches!(written, Ok(true)) {
            tracing::warn!("audit history not fully written at exit");
        }
        // 5. Flush the outbox, say offline.
        if let Some(session) = self.session {
            let left = session.close(OUTBOX_FLUSH).await;
            if left > 0 {
                tracing::warn!(
                    messages = left,
                    "MQTT outbox not empty at exit; it is sent after the next start"
                );
            }
        }
        tracing::info!(rules = self.status.snapshot().len(), "medic stopped");
    }
}

/// SIGINT or SIGTERM: what `medic run` stops on. The handlers are installed when this is
/// called (inside the runtime), not when the future is first polled: a signal that arrives
/// while the sources start must stop medic, not kill it by the default action.
pub fn signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// `run` stops when the future it is given resolves: no signal involved, and the whole
    /// shutdown order runs (the PUTVAL socket file is gone afterwards).
    /// A node with no source at all (only the HTTP side here) keeps running until told to stop:
    /// its dispatcher does not end (and look dead) for want of senders.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_sources_keeps_running() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[daemon]\nnode = \"t\"\nstate_dir = \"state\"\n[rules]\ndir = \"rules\"\n\
                    [ingest]\ntypes_db = []\n";
        let path = dir.path().join("medic.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let stop = tokio::time::sleep(Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(60), run(config, &path, stop))
            .await
            .expect("run returns once its stop future resolves")
            .expect("and returns Ok: the dispatcher did not die");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_stops_on_the_future_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[daemon]\nnode = \"t\"\nstate_dir = \"state\"\n[rules]\ndir = \"rules\"\n\
                    [ingest]\ntypes_db = []\n[ingest.putval]\nsocket = \"putval.sock\"\n";
        let path = dir.path().join("medic.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let socket = dir.path().join("putval.sock");
        let socket_path = socket.clone();
        // Stop once medic has answered one PUTVAL.
        let stop = async move {
            let stream = loop {
                match tokio::net::UnixStream::connect(&socket_path).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            };
            let (read, mut write) = stream.into_split();
            write.write_all(b"PUTVAL h/load/load N:1\n").await.unwrap();
            let mut reply = String::new();
            BufReader::new(read).read_line(&mut reply).await.unwrap();
            assert!(reply.starts_with("0 Success"), "{reply}");
        };
        tokio::time::timeout(Duration::from_secs(60), run(config, &path, stop))
            .await
            .expect("run returns once its stop future resolves")
            .expect("and returns Ok");
        assert!(!socket.exists(), "the socket file is removed at stop");
    }
}
