use std::rc::Rc;

use crate::{Action, Batch, Config, Ctx, Host, Rule, RuleInfo, SeriesInfo, SeriesMap};

/// Series the host has described to this instance, by the host's series number. Bounded: the
/// host forgets series that fall silent and numbers new ones afresh, so a cache that kept every
/// number would grow with churn until the instance ran out of memory. Two generations give an
/// approximate LRU at the cost of a map swap: what was not used during a whole generation is
/// asked of the host again if it ever comes back.
pub struct SeriesCache {
    /// Direct-mapped by the number's low bits, in front of the maps: the host numbers series
    /// in the order it first sees them, so the series of one rule rarely share a slot, and a
    /// hit costs one compare instead of a hash-map probe.
    recent: Box<[Option<Known>]>,
    current: SeriesMap<Rc<SeriesInfo>>,
    previous: SeriesMap<Rc<SeriesInfo>>,
    generation: usize,
}

/// A series number and what it stands for.
type Known = (u32, Rc<SeriesInfo>);

impl Default for SeriesCache {
    fn default() -> Self {
        Self::with_generation(SERIES_PER_GENERATION)
    }
}

/// Series kept per generation: the cache holds at most twice this many (plus `RECENT_SLOTS`).
const SERIES_PER_GENERATION: usize = 4096;
/// Slots of the direct-mapped front (a power of two).
const RECENT_SLOTS: usize = 1024;

impl SeriesCache {
    fn with_generation(generation: usize) -> Self {
        Self {
            recent: vec![None; RECENT_SLOTS].into_boxed_slice(),
            current: SeriesMap::default(),
            previous: SeriesMap::default(),
            generation,
        }
    }

    pub(crate) fn get(&mut self, id: u32) -> Option<Rc<SeriesInfo>> {
        let slot = id as usize % RECENT_SLOTS;
        if let Some((held, info)) = &self.recent[slot]
            && *held == id
        {
            return Some(info.clone());
        }
        let info = match self.current.get(&id) {
            Some(info) => info.clone(),
            None => {
                let info = self.previous.remove(&id)?;
                self.keep(id, info.clone());
                info
            }
        };
        self.recent[slot] = Some((id, info.clone()));
        Some(info)
    }

    pub(crate) fn insert(&mut self, id: u32, info: SeriesInfo) -> Rc<SeriesInfo> {
        let info = Rc::new(info);
        self.keep(id, info.clone());
        self.recent[id as usize % RECENT_SLOTS] = Some((id, info.clone()));
        info
    }

    fn keep(&mut self, id: u32, info: Rc<SeriesInfo>) {
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id, info);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Holds one rule instance between calls and adapts the component interface to [`Rule`]. The
/// export macro keeps one in a thread-local; the native test host owns one directly.
pub struct Runner<R> {
    name: &'static str,
    version: &'static str,
    rule: Option<R>,
    series: SeriesCache,
    /// The last batch, kept for its buffers: decoding the next one allocates nothing.
    batch: Batch,
    /// What the rule asked for in `init` (timers, mostly): the contract's `init` returns no
    /// actions, so they go out with the first `on-events` (the host calls it once, with
    /// nothing in it, right after a start).
    from_init: Vec<Action>,
}

impl<R: Rule> Runner<R> {
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            rule: None,
            series: SeriesCache::default(),
            batch: Batch::default(),
            from_init: Vec::new(),
        }
    }

    pub fn init(
        &mut self,
        host: &mut dyn Host,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        let mut ctx = Ctx::new(host, &mut self.series);
        let mut rule = R::init(Config::new(config), &mut ctx)?;
        for (key, detector) in rule.persisted() {
            detector.restore(&mut ctx, key);
        }
        self.from_init = ctx.into_actions();
        self.rule = Some(rule);
        Ok(())
    }

    pub fn describe(&self) -> RuleInfo {
        let subs = self.rule.as_ref().map(R::subscriptions).unwrap_or_default();
        RuleInfo {
            name: self.name.into(),
            version: self.version.into(),
            values: subs.values,
            notifications: subs.notifications,
            topics: subs.topics,
        }
    }

    pub fn on_events(&mut self, host: &mut dyn Host, batch: &Batch) -> Vec<Action> {
        // The host's call right after a start carries nothing: it is for `init`'s actions, and
        // rule code never sees an empty batch.
        if batch.events.is_empty() {
            return std::mem::take(&mut self.from_init);
        }
        let mut ctx = Ctx::new(host, &mut self.series);
        match &mut self.rule {
            Some(rule) => rule.on_batch(batch, &mut ctx),
            None => ctx.error("on-events called before a successful init; batch ignored"),
        }
        let actions = ctx.into_actions();
        if self.from_init.is_empty() {
            return actions;
        }
        let mut all = std::mem::take(&mut self.from_init);
        all.extend(actions);
        all
    }

    /// A batch as the host sends it (columns), turned back into events first.
    pub fn on_wire_events(
        &mut self,
        host: &mut dyn Host,
        wire: crate::__bindings::medic::rules::types::Batch,
    ) -> Vec<Action> {
        let mut batch = std::mem::take(&mut self.batch);
        batch.fill_from(wire);
        let actions = self.on_events(host, &batch);
        self.batch = batch;
        actions
    }

    pub fn suspend(&mut self, host: &mut dyn Host) {
        if let Some(rule) = &mut self.rule {
            let mut ctx = Ctx::new(host, &mut self.series);
            rule.suspend(&mut ctx);
            for (key, detector) in rule.persisted() {
                detector.save(&mut ctx, key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identifier;

    fn info(n: u32) -> SeriesInfo {
        SeriesInfo {
            identifier: Identifier::parse(&format!("h{n}/p/t")).unwrap(),
            ds_names: vec!["value".into()],
        }
    }

    #[test]
    fn the_series_cache_is_bounded_and_keeps_what_is_used() {
        let mut cache = SeriesCache::with_generation(4);
        for n in 0..100 {
            cache.insert(n, info(n));
            // Series 0 is used all along: it survives every generation.
            assert!(cache.get(0).is_some(), "lost at {n}");
        }
        assert!(cache.len() <= 8, "{}", cache.len());
        // Series 1 is still in the direct-mapped front; push it out with a colliding number.
        cache.insert(1 + RECENT_SLOTS as u32, info(1 + RECENT_SLOTS as u32));
        assert!(cache.get(1).is_none(), "unused series are forgotten");
        assert_eq!(cache.get(99).unwrap().identifier.host, "h99");
    }
}
