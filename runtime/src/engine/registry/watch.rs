//! The registry's watch on the rules directory and on the files rule configs name: changes
//! (debounced) load, swap or unload rules; a config reload (SIGHUP) arrives here too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use super::{DEBOUNCE, Registry, rule_files, rule_name};
use crate::config::Rules as RulesConfig;
use crate::config::file_ref;
use crate::shutdown::Shutdown;

impl Registry {
    /// The directories holding files that rule configs name.
    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .config
            .config
            .values()
            .flat_map(|table| {
                let mut refs = Vec::new();
                table.values().for_each(|v| file_ref::refs_in(v, &mut refs));
                refs
            })
            .map(|r| r.watched_dir(&self.config.config_dir))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Watch the rules directory and apply changes until `shutdown` fires; then hand the
    /// registry back (its rules still running: the daemon stops them in its order). Blocks the
    /// calling thread (give it its own). `ready` is told once the watch is in place, so no
    /// change after it can be missed; a watch that cannot start is logged and the rules keep
    /// serving without hot reload.
    pub fn watch(
        mut self,
        shutdown: Shutdown,
        ready: crossbeam_channel::Sender<()>,
        reconfigure: crossbeam_channel::Receiver<RulesConfig>,
    ) -> Self {
        if let Err(e) = self.watch_until(&shutdown, &ready, &reconfigure) {
            tracing::error!("hot reload is off: {e:#}");
            let _ = ready.send(());
            // Config reloads still reach the rules.
            loop {
                crossbeam_channel::select! {
                    recv(reconfigure) -> config => match config {
                        Ok(config) => self.reconfigure(config),
                        Err(_) => {
                            let _ = shutdown.for_threads().recv();
                            break;
                        }
                    },
                    recv(self.optimized) -> done => if let Ok(done) = done {
                        self.take_optimized(done);
                    },
                    recv(shutdown.for_threads()) -> _ => break,
                }
            }
        }
        self
    }

    fn watch_until(
        &mut self,
        shutdown: &Shutdown,
        ready: &crossbeam_channel::Sender<()>,
        reconfigure: &crossbeam_channel::Receiver<RulesConfig>,
    ) -> anyhow::Result<()> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let _ = tx.send(result);
        })
        .context("cannot start the rules directory watcher")?;
        debouncer
            .watch(&self.config.dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", self.config.dir.display()))?;
        let mut watching = Vec::new();
        let mut file_dirs = self.watch_files(&mut debouncer, &mut watching);
        let _ = ready.send(());
        // A file that changed between `load_all` and the watch would be missed: look again.
        self.rescan();
        self.files_changed();
        loop {
            crossbeam_channel::select! {
                recv(rx) -> result => match result {
                    Ok(Ok(events)) => {
                        // Reads (ours included) raise access events: only changes count,
                        // and a file closed after writing (an edit in place) is one.
                        let (mut rules, files): (Vec<PathBuf>, Vec<PathBuf>) = events
                            .into_iter()
                            .filter(|e| match e.event.kind {
                                EventKind::Access(a) => {
                                    a == AccessKind::Close(AccessMode::Write)
                                }
                                _ => true,
                            })
                            .flat_map(|e| e.event.paths)
                            .partition(|p| rule_name(p).is_some());
                        rules.sort();
                        rules.dedup();
                        for path in rules {
                            self.apply_change(&path);
                        }
                        let in_watched = |p: &PathBuf| {
                            file_dirs.iter().any(|d| p.parent() == Some(d) || p == d)
                        };
                        if files.iter().any(in_watched) {
                            self.files_changed();
                        }
                    }
                    Ok(Err(errors)) => {
                        for e in errors {
                            tracing::warn!("rules directory watch error: {e}");
                        }
                        // Events may have been missed: rescan.
                        self.rescan();
                    }
                    Err(_) => break,
                },
                recv(reconfigure) -> config => if let Ok(config) = config {
                    self.reconfigure(config);
                    file_dirs = self.watch_files(&mut debouncer, &mut watching);
                },
                recv(self.optimized) -> done => if let Ok(done) = done {
                    self.take_optimized(done);
                },
                recv(shutdown.for_threads()) -> _ => break,
            }
        }
        drop(debouncer);
        Ok(())
    }

    /// Watch the directories of the files rule configs name (and no others), so an edited
    /// script reaches its rule like a new build does; returns them all (the rules directory,
    /// already watched, may be one). A directory that cannot be watched is logged; its files
    /// are still read at every config reload.
    fn watch_files<W: notify::Watcher, C: notify_debouncer_full::FileIdCache>(
        &self,
        debouncer: &mut notify_debouncer_full::Debouncer<W, C>,
        watching: &mut Vec<PathBuf>,
    ) -> Vec<PathBuf> {
        let wanted = self.watched_dirs();
        for dir in watching.iter().filter(|d| !wanted.contains(d)) {
            let _ = debouncer.unwatch(dir);
        }
        watching.retain(|d| wanted.contains(d));
        for dir in &wanted {
            if *dir == self.config.dir || watching.contains(dir) {
                continue;
            }
            match debouncer.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => watching.push(dir.clone()),
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    "cannot watch the files rule configs name here; they are read again \
                     only at a config reload: {e}"
                ),
            }
        }
        wanted
    }

    fn apply_change(&mut self, path: &Path) {
        if path.is_file() {
            self.load_logged(path);
        } else if let Some(name) = rule_name(path) {
            self.unload(name);
        }
    }

    fn rescan(&mut self) {
        let files = rule_files(&self.config.dir).unwrap_or_default();
        let present: Vec<&str> = files.iter().filter_map(|p| rule_name(p)).collect();
        let gone: Vec<Arc<str>> = self
            .rules
            .keys()
            .filter(|n| !present.contains(&&***n))
            .cloned()
            .collect();
        for name in gone {
            self.unload(&name);
        }
        for path in &files {
            self.load_logged(path);
        }
    }
}
