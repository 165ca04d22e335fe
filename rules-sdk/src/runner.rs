use std::rc::Rc;

use crate::{Action, Batch, Config, Ctx, Host, Rule, RuleInfo, SeriesInfo};

/// Series the host has described to this instance, indexed by the host's dense series number.
#[derive(Default)]
pub struct SeriesCache {
    slots: Vec<Option<Rc<SeriesInfo>>>,
}

impl SeriesCache {
    pub(crate) fn get(&self, id: u32) -> Option<Rc<SeriesInfo>> {
        self.slots.get(id as usize).and_then(Clone::clone)
    }

    pub(crate) fn insert(&mut self, id: u32, info: SeriesInfo) -> Rc<SeriesInfo> {
        let i = id as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let info = Rc::new(info);
        self.slots[i] = Some(info.clone());
        info
    }
}

/// Holds one rule instance between calls and adapts the component interface to [`Rule`]. The
/// export macro keeps one in a thread-local; the native test host owns one directly.
pub struct Runner<R> {
    name: &'static str,
    version: &'static str,
    rule: Option<R>,
    series: SeriesCache,
}

impl<R: Rule> Runner<R> {
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            rule: None,
            series: SeriesCache::default(),
        }
    }

    pub fn init(
        &mut self,
        host: &mut dyn Host,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        let mut ctx = Ctx::new(host, &mut self.series);
        self.rule = Some(R::init(Config::new(config), &mut ctx)?);
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
        let mut ctx = Ctx::new(host, &mut self.series);
        match &mut self.rule {
            Some(rule) => rule.on_batch(batch, &mut ctx),
            None => ctx.error("on-events called before a successful init; batch ignored"),
        }
        ctx.into_actions()
    }

    pub fn suspend(&mut self, host: &mut dyn Host) {
        if let Some(rule) = &mut self.rule {
            rule.suspend(&mut Ctx::new(host, &mut self.series));
        }
    }
}
