//! Routes ingested values and notifications to the rules that subscribed to them. It numbers
//! series, computes rates, filters by each rule's globs (cached per series, so a glob runs once
//! per series and rule, not once per value) and never waits on a rule: a full rule queue drops
//! the event for that rule, counted and logged. Once a second it lets the series table forget
//! silent series, also when no value arrives (that is when they fall silent).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tokio::sync::mpsc;

use super::batch::{BatchBuilder, Observation};
use super::bindings as wit;
use super::interest::Interest;
use super::queue::{NotQueued, QueueSender};
use super::routing::{Refused, Target};
use super::rule::Subscription;
use super::series::{Expired, Now, Rejected, SeriesTable};
use super::status::StatusBoard;
use crate::event::Ingested;
use crate::logging::{RateLimitedByKind, Untrusted};

/// How routes change; sent by the registry.
pub enum RouteUpdate {
    Set {
        rule: Arc<str>,
        subscription: Arc<Subscription>,
        queue: QueueSender,
        /// The rule's worker calls it with at most this many events: chunks are no larger.
        max_batch: usize,
    },
    Subscribe {
        rule: Arc<str>,
        subscription: Arc<Subscription>,
    },
    Remove {
        rule: Arc<str>,
    },
}

struct Route {
    interest: Interest,
    queue: QueueSender,
    /// What this round routed to the rule, as the batch it will receive: sent as one chunk
    /// at the round's end, or as soon as it holds `max_batch` events.
    pending: BatchBuilder,
    max_batch: usize,
    dropped: u64,
}

/// How often a rule's drops are reported.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often silent series are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Items dispatched between looks at route updates and the clock.
const ROUND: usize = 1024;
/// Rounds start at least this far apart while input keeps coming: what arrives meanwhile waits
/// in the ingest queue and goes out with the next round, one chunk per rule, so under load a
/// rule's thread wakes (and its wasm is called) about once per gap, not once per value list.
/// What arrives after a quiet spell is routed at once. The cost: up to this much latency under
/// load (see README, "End-to-end latency"); the gain: see "Sustained UDP ingest".
const ROUND_GAP: Duration = Duration::from_millis(1);

pub struct Dispatcher {
    series: Arc<SeriesTable>,
    routes: HashMap<Arc<str>, Route>,
    updates: Receiver<RouteUpdate>,
    status: StatusBoard,
    rejected: u64,
    rejected_log: RateLimitedByKind<std::mem::Discriminant<Rejected>>,
    last_report: Instant,
    last_expiry: Instant,
}

impl Dispatcher {
    pub fn new(
        series: Arc<SeriesTable>,
        updates: Receiver<RouteUpdate>,
        status: StatusBoard,
    ) -> Self {
        Self {
            series,
            routes: HashMap::new(),
            updates,
            status,
            rejected: 0,
            rejected_log: RateLimitedByKind::default(),
            last_report: Instant::now(),
            last_expiry: Instant::now(),
        }
    }

    /// Run on a dedicated thread until every ingest source has gone.
    pub fn run(mut self, mut input: mpsc::Receiver<Ingested>) {
        // A runtime of its own, only for the timed wait: the thread never blocks the daemon's.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime with a timer can always be built");
        let mut pause_until = None;
        loop {
            if let Some(until) = pause_until.take() {
                std::thread::sleep(until - Instant::now().min(until));
            }
            // The timer must be made inside the runtime: `timeout` registers it at once.
            let next =
                runtime.block_on(async { tokio::time::timeout(EXPIRE_EVERY, input.recv()).await });
            match next {
                Ok(Some(first)) => {
                    let started = Instant::now();
                    self.apply_updates();
                    let now = self.series.now();
                    self.dispatch(first, now);
                    // Drain what is already there before looking at updates again.
                    let mut drained = false;
                    for _ in 0..ROUND {
                        match input.try_recv() {
                            Ok(item) => self.dispatch(item, now),
                            Err(_) => {
                                drained = true;
                                break;
                            }
                        }
                    }
                    for route in self.routes.values_mut() {
                        route.flush();
                    }
                    if drained {
                        pause_until = Some(started + ROUND_GAP);
                    }
                }
                Ok(None) => break,
                Err(_idle) => self.apply_updates(),
            }
            self.expire_silent_series();
            self.report_drops();
        }
        self.report_drops_now();
    }

    fn expire_silent_series(&mut self) {
        if self.last_expiry.elapsed() < EXPIRE_EVERY {
            return;
        }
        self.last_expiry = Instant::now();
        let expired = self.series.expire(self.series.now());
        let m = crate::metrics::metrics();
        m.series_expired.inc_by(expired.slots.len() as u64);
        m.series.set(self.series.len() as i64);
        self.forget(&expired);
    }

    /// Routing caches drop what they knew of expired slots: the next series in a slot is
    /// matched afresh.
    fn forget(&mut self, expired: &Expired) {
        if expired.slots.is_empty() {
            return;
        }
        tracing::debug!(
            expired = expired.slots.len(),
            live = self.series.len(),
            "silent series forgotten"
        );
        for route in self.routes.values_mut() {
            route.interest.forget(expired);
        }
    }

    fn apply_updates(&mut self) {
        while let Ok(update) = self.updates.try_recv() {
            match update {
                RouteUpdate::Set {
                    rule,
                    subscription,
                    queue,
                    max_batch,
                } => {
                    self.routes.insert(
                        rule,
                        Route {
                            interest: Interest::new(subscription),
                            pending: queue.spare(),
                            queue,
                            max_batch,
                            dropped: 0,
                        },
                    );
                }
                RouteUpdate::Subscribe { rule, subscription } => {
                    if let Some(route) = self.routes.get_mut(&rule) {
                        route.interest.set(subscription);
                    }
                }
                RouteUpdate::Remove { rule } => {
                    self.routes.remove(&rule);
                }
            }
        }
    }

    fn dispatch(&mut self, item: Ingested, now: Now) {
        let routed = super::routing::route(&self.series, item, now, self.routes.values_mut());
        if let Err(Refused { why, identifier }) = routed {
            self.rejected += 1;
            crate::metrics::metrics()
                .series_refused
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: why.reason(),
                })
                .inc();
            let total = self.rejected;
            self.rejected_log
                .log(std::mem::discriminant(&why), |suppressed| {
                    tracing::warn!(
                        identifier = %Untrusted(&identifier.to_string()),
                        total_rejected = total,
                        suppressed,
                        "value list dropped: {why}"
                    )
                });
        }
    }

    fn report_drops(&mut self) {
        if self.last_report.elapsed() >= DROP_LOG_EVERY {
            self.report_drops_now();
        }
    }

    fn report_drops_now(&mut self) {
        self.last_report = Instant::now();
        for (rule, route) in &mut self.routes {
            if route.dropped > 0 {
                tracing::warn!(
                    rule = &**rule,
                    dropped = route.dropped,
                    "rule queue full: events dropped (the rule is slower than its input)"
                );
                self.status.count_dropped(rule, route.dropped);
                route.dropped = 0;
            }
        }
    }
}

impl Target for Route {
    fn interest(&mut self) -> &mut Interest {
        &mut self.interest
    }

    fn take_values(&mut self, obs: &Observation) {
        if self.pending.len() >= self.max_batch {
            self.flush();
        }
        self.pending.push_values(obs);
    }

    fn take_event(&mut self, event: &wit::Event) {
        if self.pending.len() >= self.max_batch {
            self.flush();
        }
        self.pending.push_event(event.clone());
    }
}

impl Route {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let next = self.queue.spare();
        match self.queue.send(std::mem::replace(&mut self.pending, next)) {
            Ok(()) => {}
            Err(NotQueued::Full(dropped)) => self.dropped += dropped as u64,
            // The worker ended; the registry removes the route shortly.
            Err(NotQueued::Gone) => {}
        }
    }
}
