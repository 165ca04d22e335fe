//! The time a rule reads with `now()`: the wall clock in service; in `medic replay`, a clock the
//! feed's timestamps drive, so `for` durations and timers elapse as recorded, not as replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    Wall,
    Virtual(VirtualClock),
}

impl Clock {
    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::Wall => crate::event::now_ns(),
            Clock::Virtual(v) => v.now_ns(),
        }
    }
}

/// The clock a rule's timers and fault backoff count on, in nanoseconds: monotonic in service
/// (a wall-clock step must not fire or stall timers), the virtual clock in `medic replay`, so
/// a replayed rule's timers and restarts happen at the feed's times.
#[derive(Clone)]
pub enum Ticks {
    Monotonic(std::time::Instant),
    Virtual(VirtualClock),
}

impl Ticks {
    /// The ticks that go with what rules read: a virtual clock drives both.
    pub fn for_clock(clock: &Clock) -> Self {
        match clock {
            Clock::Wall => Ticks::Monotonic(std::time::Instant::now()),
            Clock::Virtual(v) => Ticks::Virtual(v.clone()),
        }
    }

    pub fn now(&self) -> u64 {
        match self {
            Ticks::Monotonic(start) => {
                u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            Ticks::Virtual(v) => v.now_ns(),
        }
    }
}

/// A clock that moves only when told to, shared by every instance that reads it.
#[derive(Clone, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Move to `ns`; a clock never goes back, so an earlier time leaves it where it is.
    pub fn advance_to(&self, ns: u64) {
        self.0.fetch_max(ns, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_clock_moves_only_forward_and_is_shared() {
        let v = VirtualClock::default();
        let clock = Clock::Virtual(v.clone());
        v.advance_to(5_000);
        v.advance_to(3_000);
        assert_eq!(clock.now_ns(), 5_000);
        assert_eq!(clock.clone().now_ns(), 5_000);
    }
}
