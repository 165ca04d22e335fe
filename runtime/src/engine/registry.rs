//! The set of loaded rules and their hot reload. A `.wasm` that appears or changes in `rules.dir`
//! is compiled, instantiated, `init`ed and `describe`d, then swapped in between two batches; any
//! failure keeps the old version serving and is reported. A removed file unloads its rule.
//!
//! A build never seen before serves from a quick (Winch) compile at once; the optimizer thread
//! compiles it with Cranelift meanwhile, and the optimized build is swapped in the same way as a
//! new version (state carried through `suspend`, no event lost).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::compiler::{Compiler, Tier};
use super::dispatcher::RouteUpdate;
use super::driver::Backoff;
use super::port::EffectPort;
use super::queue::queue;
use super::routes::Routes;
use super::rule::{HostParts, RuleSpec, StartError, Subscription, rule_config, topics_granted};
use super::status::StatusBoard;
use super::worker::{Control, Worker, WorkerConfig, WorkerHandle, WorkerParts};
use crate::config::Rules as RulesConfig;

mod watch;

/// Quiet time after the last change to a file before it is loaded: long enough to coalesce a
/// copy's many writes, short enough to keep a reload well under 100 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

struct Loaded {
    hash: String,
    tier: Tier,
    path: PathBuf,
    worker: WorkerHandle,
    /// The config `init` got, files it names read in: compared with a fresh read when a
    /// watched file changes.
    config: Vec<(String, String)>,
}

/// A quick build for the optimizer thread to compile with Cranelift.
struct ToOptimize {
    path: PathBuf,
    bytes: Vec<u8>,
    hash: String,
}

/// An optimized build the optimizer thread finished (or failed to make).
struct Optimized {
    path: PathBuf,
    hash: String,
    outcome: Result<(), String>,
    took: Duration,
}

pub struct Registry {
    compiler: Arc<Compiler>,
    optimize: crossbeam_channel::Sender<ToOptimize>,
    optimized: crossbeam_channel::Receiver<Optimized>,
    host: HostParts,
    config: RulesConfig,
    effects: EffectPort,
    routes: Routes,
    status: StatusBoard,
    rules: HashMap<Arc<str>, Loaded>,
}

/// The outcome of loading one file.
#[derive(Debug, PartialEq)]
pub enum LoadResult {
    Started { version: String, tier: Tier },
    Swapped { version: String, tier: Tier },
    Unchanged,
}

/// Everything the registry is made of.
pub struct RegistryParts {
    pub compiler: Compiler,
    pub host: HostParts,
    pub config: RulesConfig,
    pub effects: EffectPort,
    pub routes: Routes,
    pub status: StatusBoard,
}

impl Registry {
    pub fn new(parts: RegistryParts) -> Self {
        let compiler = Arc::new(parts.compiler);
        let (optimize, optimized) = optimizer(compiler.clone());
        Self {
            compiler,
            optimize,
            optimized,
            host: parts.host,
            config: parts.config,
            effects: parts.effects,
            routes: parts.routes,
            status: parts.status,
            rules: HashMap::new(),
        }
    }

    /// Load every `.wasm` in the rules directory, in name order. A rule that fails is logged and
    /// skipped; the others still start.
    pub fn load_all(&mut self) -> anyhow::Result<()> {
        // A fresh install (or an imported config) has no rules yet: start with none, watching.
        if !self.config.dir.exists() {
            std::fs::create_dir_all(&self.config.dir).with_context(|| {
                format!(
                    "cannot create rules directory {}",
                    self.config.dir.display()
                )
            })?;
            tracing::info!(dir = %self.config.dir.display(), "created the (empty) rules directory");
        }
        for path in rule_files(&self.config.dir)? {
            self.load_logged(&path);
        }
        Ok(())
    }

    fn load_logged(&mut self, path: &Path) {
        let Some(name) = rule_name(path) else { return };
        let started = Instant::now();
        let loaded = self.load(path);
        self.forget_unused_builds();
        match loaded {
            Ok(LoadResult::Started { version, tier }) => tracing::info!(
                rule = name, version, file = %path.display(), took = ?started.elapsed(),
                tier = tier.name(), "rule loaded"
            ),
            Ok(LoadResult::Swapped { version, tier }) => {
                count_reload("ok");
                tracing::info!(
                    rule = name, version, file = %path.display(), took = ?started.elapsed(),
                    tier = tier.name(), "rule reloaded: new version serving"
                )
            }
            Ok(LoadResult::Unchanged) => {
                tracing::debug!(rule = name, "rule file touched but unchanged")
            }
            Err(e) => {
                let running = self.rules.contains_key(name);
                tracing::error!(
                    rule = name,
                    file = %path.display(),
                    "rule not loaded: {e:#}{}",
                    if running { "; the previous version keeps serving" } else { "" }
                );
                let build = std::fs::read(path).ok().map(|b| Compiler::hash(&b));
                self.host.record_fault(
                    name,
                    "load",
                    build.as_deref(),
                    format!("not loaded: {e:#}"),
                );
                count_reload("refused");
                self.status.load_failed(name, format!("{e:#}"));
            }
        }
    }

    /// Loaded builds are shared by hash; keep only those a rule uses.
    fn forget_unused_builds(&self) {
        self.compiler
            .keep_only(self.rules.values().map(|l| l.hash.as_str()));
    }

    /// Load or reload one rule file.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<LoadResult> {
        self.load_with(path, false)
    }

    /// `force`: swap in a fresh instance even when the build is unchanged (its config changed).
    fn load_with(&mut self, path: &Path, force: bool) -> anyhow::Result<LoadResult> {
        let name: Arc<str> = rule_name(path).context("not a .wasm file")?.into();
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let hash = Compiler::hash(&bytes);
        if !force && self.rules.get(&name).is_some_and(|l| l.hash == hash) {
            return Ok(LoadResult::Unchanged);
        }
        let config = rule_config(&self.config, &name)?;
        let compiled = self.compiler.compile_tiered(&bytes)?;
        let tier = compiled.tier;
        let spec = RuleSpec {
            name: name.clone(),
            config: config.clone(),
            topics_granted: topics_granted(&self.config, &name),
            compiled,
        };
        let instance = spec.instantiate(&self.host).map_err(StartError::from)?;

        if let Some(loaded) = self.rules.get_mut(&name) {
            let (reply_tx, reply) = crossbeam_channel::bounded(1);
            loaded
                .worker
                .control
                .send(Control::Swap {
                    spec,
                    instance,
                    reply: reply_tx,
                })
                .ok()
                .context("the rule's worker has stopped")?;
            let subscription = reply
                .recv_timeout(Duration::from_secs(30))
                .context("the rule's worker did not answer the swap")?
                .map_err(anyhow::Error::msg)?;
            loaded.hash = hash.clone();
            loaded.tier = tier;
            loaded.path = path.to_path_buf();
            loaded.config = config;
            let version = subscription.info.version.clone();
            self.status
                .loaded(&name, path.to_path_buf(), version.clone(), hash.clone());
            self.routes.send(RouteUpdate::Subscribe {
                rule: name,
                subscription: Arc::new(subscription),
            });
            self.optimize_later(tier, path, bytes, hash);
            return Ok(LoadResult::Swapped { version, tier });
        }

        let started = spec.start(instance)?;
        let version = started.subscription.info.version.clone();
        let subscription = Arc::new(started.subscription.clone());
        self.status
            .loaded(&name, path.to_path_buf(), version.clone(), hash.clone());
        let (events_tx, events_rx) = queue(self.config.queue_capacity);
        let routes = self.routes.clone();
        let rule = name.clone();
        let worker = Worker::spawn(WorkerParts {
            spec,
            started,
            host: self.host.clone(),
            events: events_rx,
            effects: self.effects.clone(),
            status: self.status.clone(),
            cfg: WorkerConfig {
                max_batch: self.config.max_batch,
                backoff: Backoff {
                    first: self.config.fault_backoff,
                    max: self.config.max_backoff,
                },
            },
            on_subscription: Box::new(move |subscription: Subscription| {
                routes.send(RouteUpdate::Subscribe {
                    rule: rule.clone(),
                    subscription: Arc::new(subscription),
                });
            }),
        })?;
        self.routes.send(RouteUpdate::Set {
            rule: name.clone(),
            subscription,
            queue: events_tx,
            max_batch: self.config.max_batch,
        });
        self.optimize_later(tier, path, bytes, hash.clone());
        let path = path.to_path_buf();
        self.rules.insert(
            name,
            Loaded {
                hash,
                tier,
                path,
                worker,
                config,
            },
        );
        Ok(LoadResult::Started { version, tier })
    }

    fn optimize_later(&self, tier: Tier, path: &Path, bytes: Vec<u8>, hash: String) {
        if tier == Tier::Quick {
            let _ = self.optimize.send(ToOptimize {
                path: path.to_path_buf(),
                bytes,
                hash,
            });
        }
    }

    /// Swap in an optimized build if the rule still runs the quick build of that file.
    fn take_optimized(&mut self, done: Optimized) {
        let Some(name) = rule_name(&done.path).map(Arc::<str>::from) else {
            return;
        };
        let current = self.rules.get(&name);
        if !current.is_some_and(|l| l.hash == done.hash && l.tier == Tier::Quick) {
            tracing::debug!(rule = &*name, "optimized build no longer wanted");
            return;
        }
        if let Err(e) = done.outcome {
            tracing::warn!(
                rule = &*name,
                "optimized compile failed; the quick build keeps serving: {e}"
            );
            return;
        }
        let started = Instant::now();
        match self.load_with(&done.path, true) {
            Ok(_) => tracing::info!(
                rule = &*name, compile = ?done.took, swap = ?started.elapsed(),
                "rule tiered up: optimized build serving"
            ),
            Err(e) => tracing::warn!(
                rule = &*name,
                "optimized build not swapped in; the quick build keeps serving: {e:#}"
            ),
        }
        self.forget_unused_builds();
    }

    /// Unload a rule whose file is gone: it stops receiving events, suspends, and its thread ends.
    pub fn unload(&mut self, name: &str) {
        let Some(loaded) = self.rules.remove(name) else {
            return;
        };
        self.routes.send(RouteUpdate::Remove { rule: name.into() });
        let _ = loaded.worker.control.send(Control::Stop);
        let _ = loaded.worker.thread.join();
        self.status.remove(name);
        self.forget_unused_builds();
        tracing::info!(rule = name, "rule unloaded (its file was removed)");
    }

    /// Take a new `[rules]` section (a reloaded config): every rule whose
    /// `[rules.config.NAME]` changed is re-initialised with it, keeping its state (the old
    /// instance suspends first, as on a hot reload). A rule whose new config it refuses keeps
    /// running with the old one.
    pub fn reconfigure(&mut self, config: RulesConfig) {
        let changed = self.differing(|name| rule_config(&config, name));
        let old = std::mem::replace(&mut self.config, config);
        for (name, path) in changed {
            if self.reinit(&name, &path, "config").is_err() {
                // Keep what the rule runs with on record, so a later reload compares right.
                match old.config.get(&*name) {
                    Some(table) => self.config.config.insert(name.to_string(), table.clone()),
                    None => self.config.config.remove(&*name),
                };
            }
        }
    }

    /// Files a rule config names changed (`{ file = … }`, `{ files = … }`): every rule whose
    /// files now read differently is re-initialised with them; one that refuses them (a script
    /// that does not compile) keeps running with what it had.
    pub fn files_changed(&mut self) {
        let changed = self.differing(|name| rule_config(&self.config, name));
        for (name, path) in changed {
            let _ = self.reinit(&name, &path, "files");
        }
    }

    /// Loaded rules whose config would now be different from the one they run with.
    fn differing(
        &self,
        config_of: impl Fn(&str) -> anyhow::Result<Vec<(String, String)>>,
    ) -> Vec<(Arc<str>, PathBuf)> {
        self.rules
            .iter()
            .filter(|(name, loaded)| config_of(name).ok().as_ref() != Some(&loaded.config))
            .map(|(name, loaded)| (name.clone(), loaded.path.clone()))
            .collect()
    }

    /// Swap in a fresh instance of a rule with its current config; refused, the old instance
    /// keeps serving and the refusal is logged and recorded as a fault of kind `what`.
    fn reinit(&mut self, name: &Arc<str>, path: &Path, what: &str) -> anyhow::Result<()> {
        match self.load_with(path, true) {
            Ok(_) => {
                tracing::info!(rule = &**name, "rule re-initialised with its new {what}");
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    rule = &**name,
                    "new {what} refused: {e:#}; the rule keeps running with its old {what}"
                );
                let build = self.rules.get(&**name).map(|l| l.hash.clone());
                self.host.record_fault(
                    name,
                    "config",
                    build.as_deref(),
                    format!("new {what} refused: {e:#}"),
                );
                self.status
                    .load_failed(name, format!("new {what} refused: {e:#}"));
                Err(e)
            }
        }
    }

    /// Have every rule take all the events already queued for it (shutdown, once the
    /// dispatcher has ended), so every command they will ask for has been asked for.
    pub fn drain_all(&self) {
        let replies: Vec<_> = self
            .rules
            .values()
            .filter_map(|loaded| {
                let (done, wait) = crossbeam_channel::bounded(1);
                loaded.worker.control.send(Control::Drain(done)).ok()?;
                Some(wait)
            })
            .collect();
        for wait in replies {
            let _ = wait.recv();
        }
    }

    /// Stop every rule: each delivers what it has batched (command results included),
    /// suspends, and its thread ends.
    pub fn stop_all(&mut self) {
        let names: Vec<Arc<str>> = self.rules.keys().cloned().collect();
        for name in names {
            if let Some(loaded) = self.rules.remove(&name) {
                self.routes.send(RouteUpdate::Remove { rule: name.clone() });
                let _ = loaded.worker.control.send(Control::Stop);
                let _ = loaded.worker.thread.join();
            }
        }
    }
}

/// The optimizer thread: compiles quick builds again with Cranelift, one at a time (a cold start
/// with many rules does not start a compile per rule at once), and reports each. It ends when
/// the registry drops its sender.
fn optimizer(
    compiler: Arc<Compiler>,
) -> (
    crossbeam_channel::Sender<ToOptimize>,
    crossbeam_channel::Receiver<Optimized>,
) {
    let (job_tx, jobs) = crossbeam_channel::unbounded::<ToOptimize>();
    let (done_tx, done) = crossbeam_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("rule-optimizer".into())
        .spawn(move || {
            for ToOptimize { path, bytes, hash } in jobs {
                let started = Instant::now();
                let outcome = compiler
                    .compile(&bytes)
                    .map(drop)
                    .map_err(|e| format!("{e:#}"));
                let took = started.elapsed();
                let _ = done_tx.send(Optimized {
                    path,
                    hash,
                    outcome,
                    took,
                });
            }
        });
    if let Err(e) = spawned {
        // Quick builds then keep serving; nothing is lost but speed.
        tracing::error!("cannot start the rule optimizer thread: {e}");
    }
    (job_tx, done)
}

/// `dir/*.wasm`, sorted.
pub fn rule_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read rules directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| rule_name(p).is_some() && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// A rule's name is its file stem: `cpu-high.wasm` is rule `cpu-high`, configured by
/// `[rules.config.cpu-high]`, so one build can be deployed several times with other configs.
pub fn rule_name(path: &Path) -> Option<&str> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (!stem.starts_with('.') && !stem.is_empty()).then_some(stem)
}

/// A new build taken (`ok`) or refused, for `medic_rule_reloads_total`.
fn count_reload(outcome: &'static str) {
    crate::metrics::metrics()
        .rule_reloads
        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
        .inc();
}
