//! Does a rule want this event? Its subscription, with the answer for each series cached by
//! table slot, so a glob runs once per series and rule, not once per value. The dispatcher and
//! `medic replay` route with it, so a replayed rule sees exactly what it would in service.

use std::sync::Arc;

use super::rule::Subscription;
use super::series::Expired;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

pub struct Interest {
    subscription: Arc<Subscription>,
    /// Per series slot. Reset when the subscription changes, and for a slot when its series
    /// expires.
    wants: Vec<u8>,
}

impl Interest {
    pub fn new(subscription: Arc<Subscription>) -> Self {
        Self {
            subscription,
            wants: Vec::new(),
        }
    }

    pub fn set(&mut self, subscription: Arc<Subscription>) {
        self.subscription = subscription;
        self.wants.clear();
    }

    /// The series in `slot`, named `key`.
    pub fn wants_values(&mut self, slot: u32, key: &str) -> bool {
        let slot = slot as usize;
        if slot >= self.wants.len() {
            self.wants.resize(slot + 1, UNKNOWN);
        }
        if self.wants[slot] == UNKNOWN {
            let yes = self.subscription.values.matches(key);
            self.wants[slot] = if yes { YES } else { NO };
        }
        self.wants[slot] == YES
    }

    /// A notification about the series named `key`.
    pub fn wants_notification(&self, key: &str) -> bool {
        self.subscription.notifications.matches(key)
    }

    pub fn wants_topic(&self, topic: &str) -> bool {
        let filters = &self.subscription.info.topics;
        filters.iter().any(|f| medic_rules::topic_matches(f, topic))
    }

    /// Forget what was known of expired slots: the next series in a slot is matched afresh.
    pub fn forget(&mut self, expired: &Expired) {
        for &slot in &expired.slots {
            if let Some(want) = self.wants.get_mut(slot as usize) {
                *want = UNKNOWN;
            }
        }
        self.wants.truncate(expired.slot_bound);
        if self.wants.capacity() > 2 * self.wants.len() + 64 {
            self.wants.shrink_to_fit();
        }
    }
}
