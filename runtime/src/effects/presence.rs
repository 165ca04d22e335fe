//! Which nodes' medics are known to be offline, read from their retained status messages
//! (`mqtt.status_topic`, `online`, or `offline` as the last will and at a clean stop). A
//! `run-remote` towards a node that says it is offline is refused at once, rather than waiting
//! `remote_timeout` for an answer that cannot come. A node that has never said anything (a
//! lua-collectd-monitor host has no status topic) is still asked.

use std::collections::HashMap;

/// Nodes remembered at most: status topics are writable by whoever may publish on the broker,
/// and each distinct node name costs memory.
const MAX_NODES: usize = 10_000;

pub struct Presence {
    /// The status template as a subscription (`{node}` → `+`) and the level holding the node.
    filter: Option<(String, usize)>,
    offline: HashMap<String, bool>,
}

impl Presence {
    /// `None` filter when the template does not hold `{node}` as a whole topic level.
    pub fn new(status_template: &str) -> Self {
        let levels: Vec<&str> = status_template.split('/').collect();
        let filter = levels.iter().position(|l| *l == "{node}").map(|at| {
            let filter = levels
                .iter()
                .map(|l| if *l == "{node}" { "+" } else { l })
                .collect::<Vec<_>>()
                .join("/");
            (filter, at)
        });
        Self {
            filter,
            offline: HashMap::new(),
        }
    }

    /// What to subscribe to.
    pub fn filter(&self) -> Option<&str> {
        self.filter.as_ref().map(|(f, _)| f.as_str())
    }

    /// Take a status message; false when `topic` is not a status topic.
    pub fn on_message(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some((filter, at)) = &self.filter else {
            return false;
        };
        if !medic_rules::topic_matches(filter, topic) {
            return false;
        }
        let Some(node) = topic.split('/').nth(*at) else {
            return false;
        };
        match payload {
            // A cleared retained message: nothing known any more.
            [] => {
                self.offline.remove(node);
            }
            _ if self.offline.len() >= MAX_NODES && !self.offline.contains_key(node) => {}
            _ => {
                self.offline.insert(node.to_string(), payload == b"offline");
            }
        }
        true
    }

    pub fn is_offline(&self, node: &str) -> bool {
        self.offline.get(node).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_that_said_offline_are_offline() {
        let mut p = Presence::new("medic/{node}/status");
        assert_eq!(p.filter(), Some("medic/+/status"));
        assert!(p.on_message("medic/a/status", b"offline"));
        assert!(p.on_message("medic/b/status", b"online"));
        assert!(!p.on_message("medic/a/other", b"offline"));
        assert!(p.is_offline("a") && !p.is_offline("b") && !p.is_offline("never-seen"));
        p.on_message("medic/a/status", b"online");
        assert!(!p.is_offline("a"));
        p.on_message("medic/b/status", b"offline");
        p.on_message("medic/b/status", b"");
        assert!(!p.is_offline("b"), "a cleared status is not known any more");
    }

    #[test]
    fn a_template_without_a_node_level_watches_nothing() {
        let mut p = Presence::new("status/{node}-x");
        assert_eq!(p.filter(), None);
        assert!(!p.on_message("status/a-x", b"offline"));
    }
}
