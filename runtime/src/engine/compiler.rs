//! Turns `.wasm` files into ready-to-instantiate rules: one wasmtime engine per compiler tier, an
//! epoch ticker for call deadlines, and an on-disk cache of compiled components (compiling takes
//! hundreds of milliseconds per rule; loading a cached one, a fraction of one).
//!
//! Two tiers: a build medic has never seen is first compiled by Winch, wasmtime's baseline
//! compiler (tens of milliseconds, slower code), so it serves at once; the registry then has
//! Cranelift compile it in the background and swaps the optimized build in. Cached builds are
//! always the optimized ones.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, OptLevel};

use super::instance::{EPOCH_TICK, HostState, add_to_linker};

/// The version of the rule contract (`rules-sdk/wit/rules.wit`) this host speaks.
pub const RULES_CONTRACT: &str = "0.4.0";

/// Which compiler produced a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Winch: compiled in a fraction of Cranelift's time, runs slower; replaced in the background.
    Quick,
    /// Cranelift, optimized for speed; what the cache holds.
    Optimized,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Quick => "quick",
            Tier::Optimized => "optimized",
        }
    }
}

/// One compiler tier's engine, and the host linked into it.
struct Backend {
    engine: Engine,
    linker: Linker<HostState>,
}

impl Backend {
    fn new(config: &wasmtime::Config) -> anyhow::Result<Self> {
        let engine = Engine::new(config).map_err(|e| anyhow!("wasm engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker)?;
        Ok(Self { engine, linker })
    }
}

pub struct Compiler {
    engine: Engine,
    linker: Linker<HostState>,
    /// The Winch tier, where the platform has it.
    quick: Option<Backend>,
    cache_dir: Option<PathBuf>,
    /// Engine settings that a cached artifact must have been produced with.
    engine_hash: String,
    ticker_stop: Arc<AtomicBool>,
    /// Builds loaded in this process, by hash: rules deployed under several names share one
    /// (one mapping of the compiled code rather than one per name). Pruned by the registry to
    /// the builds its rules use ([`Compiler::keep_only`]).
    loaded: Mutex<HashMap<String, InstancePre<HostState>>>,
}

impl Drop for Compiler {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled rule, linked against the host, not yet instantiated.
pub struct Compiled {
    pub pre: InstancePre<HostState>,
    /// SHA-256 of the `.wasm`, hex: identifies the build in logs, status and every decision's
    /// audit row (shared, not copied, per decision).
    pub hash: Arc<str>,
    pub from_cache: bool,
    pub tier: Tier,
}

impl Compiler {
    /// `cache_dir = None` compiles every time (as `medic check` may, on a read-only system).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Rules are synchronous: turning off async support halves the cost of a call.
            .concurrency_support(false)
            .cranelift_opt_level(OptLevel::Speed);
        if std::env::var_os("MEDIC_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let Backend { engine, linker } = Backend::new(&config)?;
        config.strategy(wasmtime::Strategy::Winch);
        let quick = match Backend::new(&config) {
            Ok(backend) => Some(backend),
            Err(e) => {
                tracing::debug!("no quick compiler tier on this platform: {e:#}");
                None
            }
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let engines: Vec<Engine> = std::iter::once(engine.clone())
            .chain(quick.as_ref().map(|q| q.engine.clone()))
            .collect();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })
            .context("cannot start the epoch ticker thread")?;
        if let Some(dir) = &cache_dir {
            crate::os::own_private_dir(dir)
                .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
        }
        Ok(Self {
            engine,
            linker,
            quick,
            cache_dir,
            engine_hash,
            ticker_stop,
            loaded: Mutex::default(),
        })
    }

    /// Read, compile (or load from cache) and link a rule file. Errors say which step failed.
    pub fn compile_file(&self, path: &Path) -> anyhow::Result<Compiled> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.compile(&bytes)
    }

    /// The identity of a build: SHA-256 of the file, hex.
    pub fn hash(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Compiled> {
        let hash = Self::hash(bytes);
        if let Some(pre) = self.loaded().get(&hash) {
            return Ok(Compiled {
                pre: pre.clone(),
                hash: hash.into(),
                from_cache: true,
                tier: Tier::Optimized,
            });
        }
        let (component, from_cache) = self.component(bytes, &hash)?;
        self.check_contract(&component)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow!(
                "the rule needs something medic does not provide (it may be built for another \
                 medic version or another WASI world): {e:#}"
            )
        })?;
        self.loaded().insert(hash.clone(), pre.clone());
        Ok(Compiled {
            pre,
            hash: hash.into(),
            from_cache,
            tier: Tier::Optimized,
        })
    }

    /// The optimized build when it is at hand (loaded, or in the cache); else a quick one to
    /// serve while [`Compiler::compile`] makes the optimized one. Without a quick tier, or when
    /// the quick compiler cannot take this rule, the optimized build, compiled now.
    pub fn compile_tiered(&self, bytes: &[u8]) -> anyhow::Result<Compiled> {
        let hash = Self::hash(bytes);
        let cached = self.cache_path(&hash).is_some_and(|p| p.exists());
        if cached || self.loaded().contains_key(&hash) {
            return self.compile(bytes);
        }
        match self.compile_quick(bytes) {
            Ok(Some(compiled)) => Ok(compiled),
            Ok(None) => self.compile(bytes),
            Err(e) => {
                tracing::debug!("quick compile failed, compiling optimized: {e:#}");
                self.compile(bytes)
            }
        }
    }

    /// A Winch build (never cached, never shared): `None` where there is no quick tier.
    pub fn compile_quick(&self, bytes: &[u8]) -> anyhow::Result<Option<Compiled>> {
        let Some(quick) = &self.quick else {
            return Ok(None);
        };
        let component = compile_with(&quick.engine, bytes)?;
        self.check_contract(&component)?;
        let pre = quick
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow!("{e:#}"))?;
        Ok(Some(Compiled {
            pre,
            hash: Self::hash(bytes).into(),
            from_cache: false,
            tier: Tier::Quick,
        }))
    }

    /// A rule built against another version of `medic:rules` would fail to link with a message
    /// about a missing import; say what it is and what to do instead.
    fn check_contract(&self, component: &Component) -> anyhow::Result<()> {
        let ty = component.component_type();
        let names: Vec<&str> = ty
            .exports(&self.engine)
            .map(|(name, _)| name)
            .chain(ty.imports(&self.engine).map(|(name, _)| name))
            .collect();
        let other = names.iter().find_map(|name| {
            let version = name.strip_prefix("medic:rules/")?.split_once('@')?.1;
            (version != RULES_CONTRACT).then_some(version)
        });
        match other {
            Some(version) => Err(anyhow!(
                "the rule is built against medic:rules@{version}; this medic speaks \
                 medic:rules@{RULES_CONTRACT}: rebuild the rule with the current medic rules SDK \
                 (medic-rules-sdk) and `cargo build --target wasm32-wasip2`"
            )),
            None => Ok(()),
        }
    }

    /// Forget the loaded builds no rule uses any more (an instance still running one keeps it
    /// alive until it goes).
    pub fn keep_only<'a>(&self, in_use: impl IntoIterator<Item = &'a str>) {
        let in_use: std::collections::HashSet<&str> = in_use.into_iter().collect();
        self.loaded()
            .retain(|hash, _| in_use.contains(hash.as_str()));
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, InstancePre<HostState>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_path(&self, hash: &str) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_hash)))
    }

    fn component(&self, bytes: &[u8], hash: &str) -> anyhow::Result<(Component, bool)> {
        let cached = self.cache_path(hash);
        if let Some(path) = &cached
            && path.exists()
        {
            match self.load_cached(path) {
                Ok(c) => return Ok((c, true)),
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    "cached compiled rule not used, recompiling: {e:#}"
                ),
            }
        }
        let component = compile_with(&self.engine, bytes)?;
        if let Some(path) = cached
            && let Err(e) = write_atomically(&path, &component)
        {
            tracing::warn!(file = %path.display(), "cannot cache compiled rule: {e:#}");
        }
        Ok((component, false))
    }
}

impl Compiler {
    /// A cached build is native code medic will run: it is loaded only from a directory and a
    /// file that medic owns and no one else can write, and only when its bytes still have the
    /// SHA-256 recorded when medic wrote it.
    fn load_cached(&self, path: &Path) -> anyhow::Result<Component> {
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [dir, path] {
            if let Some(why) = crate::os::untrusted(p) {
                return Err(anyhow!("{why}"));
            }
        }
        let recorded = std::fs::read_to_string(digest_path(path))
            .context("its recorded digest cannot be read")?;
        let bytes = std::fs::read(path)?;
        if recorded.trim() != hex(&Sha256::digest(&bytes)) {
            return Err(anyhow!(
                "its content does not match the digest recorded at compile time"
            ));
        }
        // SAFETY: the file was written by `Component::serialize` of this same engine
        // configuration (its name carries the engine's compatibility hash), sits in a directory
        // only medic can write (so it cannot change between the check and the mapping), and its
        // bytes are the ones medic recorded. Mapped from the file, not copied: its pages stay
        // shared and reclaimable.
        unsafe { Component::deserialize_file(&self.engine, path) }.map_err(|e| anyhow!("{e:#}"))
    }
}

/// `<name>.cwasm.sha256`, beside the cached build.
fn digest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    name.into()
}

fn write_atomically(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(|e| anyhow!("{e:#}"))?;
    let put = |to: &Path, content: &[u8]| -> std::io::Result<()> {
        let tmp = to.with_extension("tmp");
        crate::os::write_private_file(&tmp, content)?;
        std::fs::rename(&tmp, to)
    };
    // The digest first: a build without its digest is never loaded.
    put(&digest_path(path), hex(&Sha256::digest(&bytes)).as_bytes())?;
    put(path, &bytes)?;
    Ok(())
}

/// Compile with either tier's engine, after a look at the header that names the usual mistakes.
fn compile_with(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    check_header(bytes)?;
    Component::new(engine, bytes).map_err(|e| {
        anyhow!(
            "not a valid wasm component: {}",
            one_line(&format!("{e:#}"))
        )
    })
}

/// What the first bytes say, before a compiler sees them.
fn check_header(bytes: &[u8]) -> anyhow::Result<()> {
    if !bytes.starts_with(b"\0asm") {
        return Err(anyhow!(
            "not a valid wasm component: the file does not start with the wasm header \
             (truncated, or not wasm at all)"
        ));
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(anyhow!(
            "this is a core wasm module, not a component: build the rule with \
             `cargo build --target wasm32-wasip2` and the medic rules SDK"
        ));
    }
    Ok(())
}

/// Parser errors pretty-print byte arrays over many lines; a log line needs one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_one_in_the_wit_file() {
        let wit = include_str!("../../../rules-sdk/wit/rules.wit");
        assert!(
            wit.contains(&format!("package medic:rules@{RULES_CONTRACT};")),
            "RULES_CONTRACT does not match rules.wit's package line"
        );
    }
}
