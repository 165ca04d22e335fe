//! Per-series detectors: the episode bookkeeping every rule would otherwise write by hand.
//!
//! Each detector keeps state only for the series that are in an episode (or have history it
//! needs), keyed by the host's series number; entries of series not seen for
//! [`EXPIRE_AFTER`] are dropped, so a rule's memory does not grow with churned hosts. Their
//! state survives a hot reload or a restart when the rule lists them in `Rule::persisted`
//! (see [`Persist`]): it is stored by identifier (series numbers are the host's, and change
//! across restarts) and picked up when each series is seen again.
//!
//! Times are the values' own times (nanoseconds), so detectors behave the same on a replayed
//! feed as live.

use std::collections::HashMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{CommandResult, Ctx, SeriesMap, Values};

/// A detector whose state outlives an instance (a hot reload, a tier-up, a restart), kept in
/// the rule's state under a key. List such detectors in [`crate::Rule::persisted`]: the SDK
/// restores them right after `init` and saves them when the instance is suspended, so a rule
/// never writes that bookkeeping itself.
pub trait Persist {
    fn save(&self, ctx: &mut Ctx, key: &str);
    fn restore(&mut self, ctx: &mut Ctx, key: &str);
}

/// Series not seen for this long are forgotten by every detector.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What a detector reports for a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The condition has held as long as asked: act now (once per episode).
    Fired,
    /// Back to normal after having fired.
    Recovered,
}

/// Per-series entries with the time each series was last seen, forgetting the silent ones, and
/// a store for entries restored by identifier that wait for their series to come back.
#[derive(Debug)]
struct Tracked<T> {
    live: SeriesMap<(u64, T)>,
    restored: HashMap<String, T>,
    observed: u32,
}

impl<T> Default for Tracked<T> {
    fn default() -> Self {
        Self {
            live: SeriesMap::default(),
            restored: HashMap::new(),
            observed: 0,
        }
    }
}

/// How many observations between two sweeps for silent series.
const SWEEP_EVERY: u32 = 4096;

impl<T: Serialize + DeserializeOwned> Tracked<T> {
    /// The entry of this series (taking a restored one the first time it is seen), if any.
    #[inline]
    fn take(&mut self, values: &Values<'_>) -> Option<T> {
        // Most series of most rules are in no episode at all.
        if self.live.is_empty() && self.restored.is_empty() {
            return None;
        }
        self.sweep(values.list.time);
        match self.live.remove(&values.list.series) {
            Some((_, entry)) => Some(entry),
            None if self.restored.is_empty() => None,
            None => self.restored.remove(&values.identifier().to_string()),
        }
    }

    fn put(&mut self, values: &Values<'_>, entry: T) {
        self.live
            .insert(values.list.series, (values.list.time, entry));
    }

    fn sweep(&mut self, now: u64) {
        self.observed = self.observed.wrapping_add(1);
        if !self.observed.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let horizon = now.saturating_sub(EXPIRE_AFTER.as_nanos() as u64);
        self.live.retain(|_, (seen, _)| *seen >= horizon);
    }

    fn save(&self, ctx: &mut Ctx, key: &str) {
        let mut by_identifier: HashMap<String, &T> =
            self.restored.iter().map(|(k, v)| (k.clone(), v)).collect();
        for (&series, (_, entry)) in &self.live {
            if let Some(info) = ctx.series(series) {
                by_identifier.insert(info.identifier.to_string(), entry);
            }
        }
        ctx.set_state(key, &by_identifier);
    }

    fn restore(&mut self, ctx: &mut Ctx, key: &str) {
        self.restored = ctx.state(key).unwrap_or_default();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.len() + self.restored.len()
    }
}

/// Which side of the level is the problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    Above,
    Below,
}

/// A level crossing: fires once a series has stayed past `level` for `hold`, and recovers only
/// once it is back past `clear` (hysteresis: a value between the two changes nothing).
#[derive(Debug, Clone, Copy)]
pub struct Crossing {
    pub direction: Direction,
    pub level: f64,
    pub clear: f64,
    pub hold: Duration,
}

impl Crossing {
    /// `clear` defaults to `level`; one on the wrong side of `level` is refused.
    pub fn new(
        direction: Direction,
        level: f64,
        clear: Option<f64>,
        hold: Duration,
    ) -> Result<Self, String> {
        let clear = clear.unwrap_or(level);
        match direction {
            Direction::Above if clear > level => Err(format!(
                "`clear` ({clear}) must not be above `above` ({level})"
            )),
            Direction::Below if clear < level => Err(format!(
                "`clear` ({clear}) must not be below `below` ({level})"
            )),
            _ => Ok(Self {
                direction,
                level,
                clear,
                hold,
            }),
        }
    }

    #[inline]
    pub fn crossed(&self, v: f64) -> bool {
        match self.direction {
            Direction::Above => v > self.level,
            Direction::Below => v < self.level,
        }
    }

    #[inline]
    pub fn cleared(&self, v: f64) -> bool {
        match self.direction {
            Direction::Above => v <= self.clear,
            Direction::Below => v >= self.clear,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Episode {
    /// Crossed since this time (ns), not for long enough yet.
    Pending(u64),
    Fired,
}

/// [`Crossing`] applied to every series a rule sees.
#[derive(Debug)]
pub struct Level {
    pub crossing: Crossing,
    episodes: Tracked<Episode>,
}

impl Level {
    pub fn new(crossing: Crossing) -> Self {
        Self {
            crossing,
            episodes: Tracked::default(),
        }
    }

    /// Feed one value of a series (`v`: the number compared, usually `Value::current`).
    #[inline]
    pub fn observe(&mut self, values: &Values<'_>, v: f64) -> Option<Change> {
        let c = self.crossing;
        let now = values.list.time;
        let (next, change) = match self.episodes.take(values) {
            None if !c.crossed(v) => (None, None),
            None if c.hold.is_zero() => (Some(Episode::Fired), Some(Change::Fired)),
            None => (Some(Episode::Pending(now)), None),
            Some(Episode::Fired) if c.cleared(v) => (None, Some(Change::Recovered)),
            Some(Episode::Pending(_)) if c.cleared(v) => (None, None),
            Some(Episode::Pending(since))
                if c.crossed(v) && now.saturating_sub(since) >= c.hold.as_nanos() as u64 =>
            {
                (Some(Episode::Fired), Some(Change::Fired))
            }
            Some(episode) => (Some(episode), None),
        };
        if let Some(episode) = next {
            self.episodes.put(values, episode);
        }
        change
    }
}

/// The open episodes, by identifier.
impl Persist for Level {
    fn save(&self, ctx: &mut Ctx, key: &str) {
        self.episodes.save(ctx, key);
    }

    fn restore(&mut self, ctx: &mut Ctx, key: &str) {
        self.episodes.restore(ctx, key);
    }
}

/// Flapping-tolerant: fires when at least `m` of a series' last `n` values crossed, recovers
/// when none of its last `n` did.
#[derive(Debug)]
pub struct MOfN {
    m: u32,
    n: u32,
    windows: Tracked<Window>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Window {
    /// The last `n` outcomes, newest in bit 0.
    bits: u64,
    fired: bool,
}

impl MOfN {
    /// `1 <= m <= n <= 64`.
    pub fn new(m: u32, n: u32) -> Result<Self, String> {
        if !(1..=n).contains(&m) || n > 64 {
            return Err(format!("need 1 <= m <= n <= 64, got m = {m}, n = {n}"));
        }
        Ok(Self {
            m,
            n,
            windows: Tracked::default(),
        })
    }

    pub fn observe(&mut self, values: &Values<'_>, crossed: bool) -> Option<Change> {
        let mask = if self.n == 64 {
            u64::MAX
        } else {
            (1u64 << self.n) - 1
        };
        let mut w = self.windows.take(values).unwrap_or_default();
        w.bits = ((w.bits << 1) | u64::from(crossed)) & mask;
        let change = match (w.fired, w.bits.count_ones() >= self.m, w.bits == 0) {
            (false, true, _) => {
                w.fired = true;
                Some(Change::Fired)
            }
            (true, _, true) => {
                w.fired = false;
                Some(Change::Recovered)
            }
            _ => None,
        };
        // A clean window that has not fired holds nothing worth keeping.
        if w.bits != 0 || w.fired {
            self.windows.put(values, w);
        }
        change
    }
}

/// The windows of the series that crossed lately, by identifier.
impl Persist for MOfN {
    fn save(&self, ctx: &mut Ctx, key: &str) {
        self.windows.save(ctx, key);
    }

    fn restore(&mut self, ctx: &mut Ctx, key: &str) {
        self.windows.restore(ctx, key);
    }
}

/// Missing data, as collectd means it: a series that has sent nothing for `k` of its own
/// intervals. Feed every value list with [`Missing::seen`]; call [`Missing::check`] from a
/// timer (it says when to call it next).
#[derive(Debug)]
pub struct Missing {
    k: u32,
    /// Per series: last time, interval, and whether it is reported missing.
    series: SeriesMap<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    time: u64,
    interval: u64,
    missing: bool,
}

impl Missing {
    pub fn new(k: u32) -> Self {
        Self {
            k: k.max(1),
            series: SeriesMap::default(),
        }
    }

    /// A value list arrived: `Recovered` if its series was reported missing.
    pub fn seen(&mut self, values: &Values<'_>) -> Option<Change> {
        let seen = Seen {
            time: values.list.time,
            interval: values.list.interval,
            missing: false,
        };
        let before = self.series.insert(values.list.series, seen);
        before
            .is_some_and(|b| b.missing)
            .then_some(Change::Recovered)
    }

    /// The series that went missing since the last check (by series number), and when the next
    /// one could (`None` when no series is watched). Series missing for [`EXPIRE_AFTER`] are
    /// forgotten.
    pub fn check(&mut self, now: u64) -> (Vec<u32>, Option<u64>) {
        let horizon = now.saturating_sub(EXPIRE_AFTER.as_nanos() as u64);
        self.series.retain(|_, s| s.time >= horizon);
        let mut gone = Vec::new();
        let mut next: Option<u64> = None;
        for (&series, s) in &mut self.series {
            let due = s
                .time
                .saturating_add(s.interval.saturating_mul(u64::from(self.k)));
            if s.missing {
                continue;
            }
            if due <= now {
                s.missing = true;
                gone.push(series);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        gone.sort_unstable();
        (gone, next)
    }
}

/// An escalation ladder driven by command results: on trouble with `key` (a series, a device,
/// a service), run the first step; each time a step's command fails (non-zero exit, signal,
/// refused by the policy gate, not started), run the next; when the last step has failed, say
/// so once ([`Climb::Exhausted`]: notify someone). A success, or the trouble clearing, ends the
/// climb. The host's policy gate still has the last word on every step.
#[derive(Debug)]
pub struct Ladder {
    steps: Vec<(String, String)>,
    climbs: HashMap<String, Rung>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rung {
    step: usize,
    /// Asked for `steps[step]` and waiting for its result.
    waiting: bool,
}

/// What a command result did to a climb.
#[derive(Debug, Clone, PartialEq)]
pub enum Climb {
    /// The step worked: the climb is over.
    Resolved { key: String },
    /// The step failed; the next one was asked for.
    Escalated { key: String, step: usize },
    /// The last step failed too.
    Exhausted { key: String },
}

impl Ladder {
    /// `steps`: `(service, command)` pairs from the config's allow-list, gentlest first.
    pub fn new(steps: Vec<(String, String)>) -> Result<Self, String> {
        if steps.is_empty() {
            return Err("an escalation ladder needs at least one step".into());
        }
        Ok(Self {
            steps,
            climbs: HashMap::new(),
        })
    }

    /// Trouble with `key`: start a climb at the first step, unless one is under way (its
    /// current step is waiting for a result, or the ladder is exhausted). Returns whether a
    /// command was asked for.
    pub fn trouble(&mut self, key: &str, reason: &str, ctx: &mut Ctx) -> bool {
        if self.climbs.contains_key(key) {
            return false;
        }
        self.climbs.insert(
            key.to_string(),
            Rung {
                step: 0,
                waiting: true,
            },
        );
        let (service, command) = &self.steps[0];
        ctx.run(service, command, reason);
        true
    }

    /// The trouble with `key` is over: forget its climb.
    pub fn resolved(&mut self, key: &str) {
        self.climbs.remove(key);
    }

    /// Hand every command result here; one that answers a waiting step moves its climb. The
    /// oldest climb waiting on that command takes it.
    pub fn result(&mut self, result: &CommandResult, ctx: &mut Ctx) -> Option<Climb> {
        let mut waiting: Vec<&String> = self
            .climbs
            .iter()
            .filter(|(_, r)| {
                r.waiting && {
                    let (service, command) = &self.steps[r.step];
                    *service == result.service && *command == result.command
                }
            })
            .map(|(k, _)| k)
            .collect();
        waiting.sort();
        let key = waiting.first()?.to_string();
        let ok = result.code == Some(0) && result.error.is_none();
        if ok {
            self.climbs.remove(&key);
            return Some(Climb::Resolved { key });
        }
        let rung = self.climbs.get_mut(&key)?;
        if rung.step + 1 >= self.steps.len() {
            rung.waiting = false;
            return Some(Climb::Exhausted { key });
        }
        rung.step += 1;
        let (service, command) = &self.steps[rung.step];
        let why = match (&result.error, result.code, result.signal) {
            (Some(e), _, _) => e.clone(),
            (None, Some(code), _) => format!("exit {code}"),
            (None, None, Some(signal)) => format!("signal {signal}"),
            (None, None, None) => "no exit status".into(),
        };
        ctx.run(
            service,
            command,
            format!(
                "{key}: step {} failed ({why}); escalating",
                self.steps[rung.step - 1].1
            ),
        );
        Some(Climb::Escalated {
            key,
            step: rung.step,
        })
    }
}

/// The climbs under way. A step that was waiting for its result still is: the host delivers
/// results to the rule's next instance.
impl Persist for Ladder {
    fn save(&self, ctx: &mut Ctx, key: &str) {
        ctx.set_state(key, &self.climbs);
    }

    fn restore(&mut self, ctx: &mut Ctx, key: &str) {
        self.climbs = ctx.state(key).unwrap_or_default();
    }
}

/// Rule-side debounce: at most one "go" per key (a series, a device, a host: whatever the rule
/// picks) per `every`. The host's cooldown still applies per command, whoever asks; this one is
/// per key and decided before asking. Keys quiet for longer than `every` are forgotten.
#[derive(Debug)]
pub struct Cooldown {
    every: u64,
    last: HashMap<String, u64>,
    since_sweep: u32,
}

impl Cooldown {
    pub fn new(every: Duration) -> Self {
        Self {
            every: every.as_nanos() as u64,
            last: HashMap::new(),
            since_sweep: 0,
        }
    }

    /// Whether `key` may go at `now` (ns): never went, or went `every` or more ago. A "yes"
    /// starts its cooldown.
    pub fn ready(&mut self, key: &str, now: u64) -> bool {
        self.since_sweep += 1;
        if self.since_sweep >= 1024 {
            self.since_sweep = 0;
            let every = self.every;
            self.last.retain(|_, t| now.saturating_sub(*t) < every);
        }
        match self.last.get_mut(key) {
            Some(t) if now.saturating_sub(*t) < self.every => false,
            Some(t) => {
                *t = now;
                true
            }
            None => {
                self.last.insert(key.to_string(), now);
                true
            }
        }
    }
}

/// When each key last went.
impl Persist for Cooldown {
    fn save(&self, ctx: &mut Ctx, key: &str) {
        ctx.set_state(key, &self.last);
    }

    fn restore(&mut self, ctx: &mut Ctx, key: &str) {
        self.last = ctx.state(key).unwrap_or_default();
    }
}

/// Where a series is heading: the least-squares slope (units per second) of its values over the
/// last `window`, once they span at least half of it and number at least three. Keeps at most
/// [`Trend::MAX_SAMPLES`] per series (older ones go first); NaN values are skipped.
#[derive(Debug)]
pub struct Trend {
    window: u64,
    series: SeriesMap<std::collections::VecDeque<(u64, f64)>>,
    observed: u32,
}

impl Trend {
    pub const MAX_SAMPLES: usize = 512;

    pub fn new(window: Duration) -> Self {
        Self {
            window: window.as_nanos() as u64,
            series: SeriesMap::default(),
            observed: 0,
        }
    }

    /// Add `v` (the series' value at its list's time); the slope per second, if known yet.
    pub fn observe(&mut self, values: &Values<'_>, v: f64) -> Option<f64> {
        let now = values.list.time;
        self.sweep(now);
        let samples = self.series.entry(values.list.series).or_default();
        if v.is_finite() && samples.back().is_none_or(|&(t, _)| t < now) {
            samples.push_back((now, v));
        }
        let oldest = now.saturating_sub(self.window);
        while samples.front().is_some_and(|&(t, _)| t < oldest) || samples.len() > Self::MAX_SAMPLES
        {
            samples.pop_front();
        }
        let span = samples.back()?.0 - samples.front()?.0;
        if samples.len() < 3 || span < self.window / 2 {
            return None;
        }
        slope(samples)
    }

    fn sweep(&mut self, now: u64) {
        self.observed = self.observed.wrapping_add(1);
        if !self.observed.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let horizon = now.saturating_sub(EXPIRE_AFTER.as_nanos() as u64);
        self.series
            .retain(|_, s| s.back().is_some_and(|&(t, _)| t >= horizon));
    }
}

/// Least squares over `(time ns, value)`, in units per second; times taken relative to the
/// first so the sums stay exact enough.
fn slope(samples: &std::collections::VecDeque<(u64, f64)>) -> Option<f64> {
    let t0 = samples.front()?.0;
    let n = samples.len() as f64;
    let (mut st, mut sv, mut stt, mut stv) = (0.0, 0.0, 0.0, 0.0);
    for &(t, v) in samples {
        let t = (t - t0) as f64 / 1e9;
        st += t;
        sv += v;
        stt += t * t;
        stv += t * v;
    }
    let den = n * stt - st * st;
    (den > 0.0).then(|| (n * stv - st * sv) / den)
}

/// How long until a value `v` moving at `slope` per second reaches `level`; `None` when it is
/// moving away from it or not at all (`Some(ZERO)` when it is there already).
pub fn time_to(v: f64, slope: f64, level: f64) -> Option<Duration> {
    let gap = level - v;
    if gap == 0.0 {
        return Some(Duration::ZERO);
    }
    if slope == 0.0 || gap.signum() != slope.signum() || !(gap / slope).is_finite() {
        return None;
    }
    Duration::try_from_secs_f64(gap / slope).ok()
}

/// Increments of counters between successive value lists of a series, aware of wraps and
/// resets: a counter that went down by what looks like a 32-bit wrap counts the wrap (as
/// collectd does); any other decrease of a counter or derive is a reset (the process behind
/// it restarted) and gives no increment, only a new starting point. Gauges give their
/// difference, absolute values themselves (they reset on every read).
#[derive(Debug, Default)]
pub struct Delta {
    last: SeriesMap<crate::Sample>,
}

impl Delta {
    /// The increment of data source `index` of this list since the series' previous list.
    pub fn observe(&mut self, values: &Values<'_>, index: usize) -> Option<f64> {
        use crate::Sample;
        let now = values.values.get(index)?.sample;
        let before = self.last.insert(values.list.series, now);
        match (before?, now) {
            (Sample::Gauge(a), Sample::Gauge(b)) => Some(b - a),
            (_, Sample::Absolute(b)) => Some(b as f64),
            (Sample::Counter(a), Sample::Counter(b)) if b >= a => Some((b - a) as f64),
            (Sample::Counter(a), Sample::Counter(b)) => {
                let wrapped = u64::from(u32::MAX) - a + b + 1;
                (a <= u64::from(u32::MAX) && wrapped < u64::from(u32::MAX) / 2)
                    .then_some(wrapped as f64)
            }
            (Sample::Derive(a), Sample::Derive(b)) if b >= a => Some((b - a) as f64),
            // A reset, or the series changed kind.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;
    use crate::{Identifier, SeriesInfo, Value, ValueList};

    const S: u64 = 1_000_000_000;

    fn info(host: &str) -> SeriesInfo {
        SeriesInfo {
            identifier: Identifier::parse(&format!("{host}/load/load")).unwrap(),
            ds_names: vec!["value".into()],
        }
    }

    /// Run `f` with a `Values` for series `series` (`h<series>/load/load`) at `t` seconds
    /// (10 s interval).
    fn at<R>(series: u32, t: u64, f: impl FnOnce(&Values<'_>) -> R) -> R {
        at_as(series, &format!("h{series}"), t, f)
    }

    /// The same for a series whose host is `host`.
    fn at_as<R>(series: u32, host: &str, t: u64, f: impl FnOnce(&Values<'_>) -> R) -> R {
        let list = ValueList {
            series,
            time: t * S,
            interval: 10 * S,
            first: 0,
            count: 0,
        };
        let info = info(host);
        let values: [Value; 0] = [];
        f(&Values::new(&list, &values, &info))
    }

    fn above(level: f64, clear: f64, hold_s: u64) -> Level {
        Level::new(
            Crossing::new(
                Direction::Above,
                level,
                Some(clear),
                Duration::from_secs(hold_s),
            )
            .unwrap(),
        )
    }

    #[test]
    fn level_fires_after_the_hold_once_and_recovers_past_clear() {
        let mut l = above(10.0, 8.0, 20);
        assert_eq!(at(1, 0, |v| l.observe(v, 11.0)), None, "crossed, not held");
        assert_eq!(at(1, 10, |v| l.observe(v, 12.0)), None);
        assert_eq!(at(1, 20, |v| l.observe(v, 12.0)), Some(Change::Fired));
        assert_eq!(at(1, 30, |v| l.observe(v, 13.0)), None, "once per episode");
        assert_eq!(at(1, 40, |v| l.observe(v, 9.0)), None, "inside the band");
        assert_eq!(at(1, 50, |v| l.observe(v, 8.0)), Some(Change::Recovered));
        assert_eq!(at(1, 60, |v| l.observe(v, 11.0)), None, "a new episode");
    }

    #[test]
    fn level_restarts_the_hold_when_the_value_clears_and_keeps_series_apart() {
        let mut l = above(10.0, 8.0, 20);
        at(1, 0, |v| l.observe(v, 11.0));
        at(2, 0, |v| l.observe(v, 11.0));
        assert_eq!(
            at(1, 10, |v| l.observe(v, 7.0)),
            None,
            "cleared while pending"
        );
        assert_eq!(
            at(1, 20, |v| l.observe(v, 11.0)),
            None,
            "the hold starts over"
        );
        assert_eq!(at(2, 20, |v| l.observe(v, 11.0)), Some(Change::Fired));
        assert_eq!(at(1, 40, |v| l.observe(v, 11.0)), Some(Change::Fired));
    }

    #[test]
    fn crossing_refuses_a_clear_level_on_the_wrong_side() {
        let e = Crossing::new(Direction::Below, 5.0, Some(4.0), Duration::ZERO).unwrap_err();
        assert!(e.contains("must not be below"), "{e}");
        assert!(Crossing::new(Direction::Above, 5.0, Some(6.0), Duration::ZERO).is_err());
    }

    #[test]
    fn open_episodes_survive_a_restart_by_identifier() {
        let mut host = TestHost::default();
        let a = host.intern("h1/load/load", &["value"]);
        let mut cache = crate::runner::SeriesCache::default();
        let mut l = above(10.0, 8.0, 0);
        at_as(a, "h1", 0, |v| l.observe(v, 11.0));
        {
            let mut ctx = Ctx::new(&mut host, &mut cache);
            l.save(&mut ctx, "episodes");
        }
        // After a restart the host numbers series afresh: h1 is now 7.
        let mut restored = above(10.0, 8.0, 0);
        {
            let mut ctx = Ctx::new(&mut host, &mut cache);
            restored.restore(&mut ctx, "episodes");
        }
        assert_eq!(
            at(3, 10, |v| restored.observe(v, 1.0)),
            None,
            "another series"
        );
        assert_eq!(
            at_as(7, "h1", 10, |v| restored.observe(v, 12.0)),
            None,
            "still fired"
        );
        assert_eq!(
            at_as(7, "h1", 20, |v| restored.observe(v, 1.0)),
            Some(Change::Recovered)
        );
    }

    #[test]
    fn silent_series_are_forgotten() {
        let mut l = above(10.0, 8.0, 0);
        for series in 0..100 {
            at(series, 0, |v| l.observe(v, 11.0));
        }
        assert_eq!(l.episodes.len(), 100);
        let later = EXPIRE_AFTER.as_secs() + 10;
        for i in 0..SWEEP_EVERY as u64 {
            at(1000, later + i, |v| l.observe(v, 1.0));
        }
        assert_eq!(
            l.episodes.len(),
            0,
            "only series seen within a day are kept"
        );
    }

    #[test]
    fn m_of_n_tolerates_flapping() {
        let mut d = MOfN::new(3, 5).unwrap();
        let mut t = 0;
        let mut feed = |d: &mut MOfN, crossed| {
            t += 10;
            at(1, t, |v| d.observe(v, crossed))
        };
        assert_eq!(feed(&mut d, true), None);
        assert_eq!(feed(&mut d, false), None);
        assert_eq!(feed(&mut d, true), None);
        assert_eq!(feed(&mut d, true), Some(Change::Fired), "3 of the last 5");
        assert_eq!(feed(&mut d, true), None);
        for _ in 0..4 {
            assert_eq!(
                feed(&mut d, false),
                None,
                "some of the last 5 still crossed"
            );
        }
        assert_eq!(feed(&mut d, false), Some(Change::Recovered));
        assert!(MOfN::new(0, 5).is_err() && MOfN::new(6, 5).is_err() && MOfN::new(1, 65).is_err());
    }

    #[test]
    fn missing_after_k_intervals_and_back() {
        let mut m = Missing::new(3);
        assert_eq!(at(1, 0, |v| m.seen(v)), None);
        at(2, 15, |v| m.seen(v));
        assert_eq!(m.check(20 * S), (vec![], Some(30 * S)));
        assert_eq!(m.check(30 * S), (vec![1], Some(45 * S)));
        assert_eq!(m.check(31 * S), (vec![], Some(45 * S)), "reported once");
        assert_eq!(at(1, 40, |v| m.seen(v)), Some(Change::Recovered));
        assert_eq!(m.check(EXPIRE_AFTER.as_nanos() as u64 + 100 * S).1, None);
    }

    fn result(service: &str, command: &str, code: Option<i32>) -> CommandResult {
        CommandResult {
            action_id: 1,
            service: service.into(),
            command: command.into(),
            code,
            signal: None,
            output: String::new(),
            error: None,
            duration: 0,
        }
    }

    fn asked(
        host: &mut TestHost,
        cache: &mut crate::runner::SeriesCache,
        f: impl FnOnce(&mut Ctx),
    ) -> Vec<String> {
        let mut ctx = Ctx::new(host, cache);
        f(&mut ctx);
        ctx.into_actions()
            .into_iter()
            .filter_map(|a| match a {
                crate::Action::Run(r) => Some(format!("{}/{}", r.service, r.command)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_ladder_escalates_on_failure_and_stops_on_success() {
        let (mut host, mut cache) = (TestHost::default(), crate::runner::SeriesCache::default());
        let steps = vec![
            ("web".to_string(), "restart".to_string()),
            ("host".to_string(), "reboot".to_string()),
        ];
        let mut ladder = Ladder::new(steps).unwrap();
        let runs = asked(&mut host, &mut cache, |ctx| {
            assert!(ladder.trouble("web-1", "down", ctx));
            assert!(
                !ladder.trouble("web-1", "still down", ctx),
                "one climb at a time"
            );
        });
        assert_eq!(runs, ["web/restart"]);
        let mut climb = None;
        let runs = asked(&mut host, &mut cache, |ctx| {
            climb = ladder.result(&result("web", "restart", Some(1)), ctx);
        });
        assert_eq!(
            climb,
            Some(Climb::Escalated {
                key: "web-1".into(),
                step: 1
            })
        );
        assert_eq!(runs, ["host/reboot"]);
        let runs = asked(&mut host, &mut cache, |ctx| {
            climb = ladder.result(&result("host", "reboot", None), ctx);
        });
        assert_eq!(
            climb,
            Some(Climb::Exhausted {
                key: "web-1".into()
            })
        );
        assert!(runs.is_empty());
        let runs = asked(&mut host, &mut cache, |ctx| {
            assert!(
                !ladder.trouble("web-1", "down", ctx),
                "exhausted until resolved"
            );
        });
        assert!(runs.is_empty());
        ladder.resolved("web-1");
        // A new climb, this time fixed by its first step; results of other commands pass by.
        asked(&mut host, &mut cache, |ctx| {
            ladder.trouble("web-1", "down again", ctx);
            assert_eq!(ladder.result(&result("db", "restart", Some(0)), ctx), None);
            climb = ladder.result(&result("web", "restart", Some(0)), ctx);
        });
        assert_eq!(
            climb,
            Some(Climb::Resolved {
                key: "web-1".into()
            })
        );
        assert!(Ladder::new(vec![]).is_err());
    }

    #[test]
    fn a_climb_survives_a_restart() {
        let (mut host, mut cache) = (TestHost::default(), crate::runner::SeriesCache::default());
        let steps = vec![
            ("a".to_string(), "one".to_string()),
            ("a".to_string(), "two".to_string()),
        ];
        let mut ladder = Ladder::new(steps.clone()).unwrap();
        asked(&mut host, &mut cache, |ctx| {
            ladder.trouble("k", "x", ctx);
            ladder.save(ctx, "ladder");
        });
        let mut again = Ladder::new(steps).unwrap();
        let runs = asked(&mut host, &mut cache, |ctx| {
            again.restore(ctx, "ladder");
            assert_eq!(
                again.result(&result("a", "one", Some(2)), ctx),
                Some(Climb::Escalated {
                    key: "k".into(),
                    step: 1
                })
            );
        });
        assert_eq!(runs, ["a/two"]);
    }

    #[test]
    fn trend_gives_the_slope_once_the_window_is_half_full() {
        let mut tr = Trend::new(Duration::from_secs(600));
        // 1000 at t=0, falling 2 per second.
        let mut last = None;
        for i in 0..40u64 {
            last = at(1, i * 10, |v| tr.observe(v, 1000.0 - 20.0 * i as f64));
            if i < 30 {
                assert_eq!(last, None, "only {} s of values at {i}", i * 10);
            }
        }
        let slope = last.unwrap();
        assert!((slope + 2.0).abs() < 1e-9, "{slope}");
        assert_eq!(time_to(200.0, slope, 0.0), Some(Duration::from_secs(100)));
        assert_eq!(time_to(200.0, 2.0, 0.0), None, "moving away");
        assert_eq!(time_to(200.0, 0.0, 0.0), None);
        // NaN is skipped; another series has its own window.
        assert_eq!(
            at(1, 400, |v| tr.observe(v, f64::NAN)).map(f64::round),
            Some(-2.0)
        );
        assert_eq!(at(2, 400, |v| tr.observe(v, 5.0)), None);
    }

    #[test]
    fn delta_knows_wraps_from_resets() {
        use crate::{Sample, Value};
        let mut d = Delta::default();
        let mut step = |series: u32, t: u64, sample: Sample| {
            let list = ValueList {
                series,
                time: t * S,
                interval: 10 * S,
                first: 0,
                count: 1,
            };
            let info = info("h");
            let values = [Value { sample, rate: None }];
            d.observe(&Values::new(&list, &values, &info), 0)
        };
        assert_eq!(step(1, 0, Sample::Counter(100)), None, "no previous value");
        assert_eq!(step(1, 10, Sample::Counter(150)), Some(50.0));
        let near_wrap = u64::from(u32::MAX) - 9;
        step(1, 20, Sample::Counter(near_wrap));
        assert_eq!(step(1, 30, Sample::Counter(5)), Some(15.0), "a 32-bit wrap");
        assert_eq!(step(1, 40, Sample::Counter(1_000_000)), Some(999_995.0));
        assert_eq!(
            step(1, 50, Sample::Counter(10)),
            None,
            "a reset, not a wrap"
        );
        assert_eq!(step(1, 60, Sample::Counter(25)), Some(15.0));
        assert_eq!(step(2, 0, Sample::Derive(-5)), None);
        assert_eq!(step(2, 10, Sample::Derive(5)), Some(10.0));
        assert_eq!(
            step(2, 20, Sample::Derive(1)),
            None,
            "derive went down: reset"
        );
        assert_eq!(step(3, 0, Sample::Absolute(7)), None);
        assert_eq!(step(3, 10, Sample::Absolute(7)), Some(7.0));
    }

    #[test]
    fn cooldown_lets_each_key_go_once_per_period_and_survives_a_restart() {
        let mut c = Cooldown::new(Duration::from_secs(60));
        assert!(c.ready("web", 0));
        assert!(!c.ready("web", 59 * S), "cooling down");
        assert!(c.ready("db", 30 * S), "another key");
        assert!(c.ready("web", 60 * S));
        let mut host = TestHost::default();
        let mut series = crate::runner::SeriesCache::default();
        let mut ctx = Ctx::new(&mut host, &mut series);
        c.save(&mut ctx, "cooldown");
        let mut again = Cooldown::new(Duration::from_secs(60));
        again.restore(&mut ctx, "cooldown");
        assert!(!again.ready("web", 61 * S));
        assert!(again.ready("web", 120 * S));
    }
}
