//! The registry's handle on routing. It forwards route changes to the dispatcher and keeps the
//! union of the rules' MQTT topic filters, which the MQTT client watches to (un)subscribe: a
//! rule that declares a topic in `describe` receives it without any config.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use tokio::sync::watch;

use super::dispatcher::RouteUpdate;

pub type TopicFilters = BTreeSet<String>;

#[derive(Clone)]
pub struct Routes {
    dispatcher: Sender<RouteUpdate>,
    per_rule: Arc<Mutex<HashMap<Arc<str>, Vec<String>>>>,
    topics: Arc<watch::Sender<TopicFilters>>,
}

impl Routes {
    pub fn new(dispatcher: Sender<RouteUpdate>) -> (Self, watch::Receiver<TopicFilters>) {
        let (topics, rx) = watch::channel(TopicFilters::new());
        let routes = Self {
            dispatcher,
            per_rule: Arc::default(),
            topics: Arc::new(topics),
        };
        (routes, rx)
    }

    pub fn send(&self, update: RouteUpdate) {
        {
            let mut per_rule = self.per_rule.lock().unwrap_or_else(|p| p.into_inner());
            match &update {
                RouteUpdate::Set {
                    rule, subscription, ..
                }
                | RouteUpdate::Subscribe { rule, subscription } => {
                    per_rule.insert(rule.clone(), subscription.info.topics.clone());
                }
                RouteUpdate::Remove { rule } => {
                    per_rule.remove(rule);
                }
            }
            let union: TopicFilters = per_rule.values().flatten().cloned().collect();
            self.topics.send_if_modified(|current| {
                let changed = *current != union;
                *current = union;
                changed
            });
        }
        // The dispatcher ends only at shutdown; nothing to route then.
        let _ = self.dispatcher.send(update);
    }
}
