//! Run a rule natively, as medic would, with a controllable clock: feed it events, then assert
//! on the actions it returned, what it logged and what it kept in state.
//!
//! ```ignore
//! let mut t = Tester::<LowMemory>::new(r#"{"below": 100}"#).unwrap();
//! let actions = t.gauge("h/memory/memory-free", 50.0);
//! assert_eq!(actions.len(), 1);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::runner::Runner;
use crate::{
    Action, Batch, Config, Event, Host, Identifier, LogLevel, MqttMessage, Rule, RuleInfo, Sample,
    SeriesInfo, Snapshot, Value, ValueList,
};

/// An in-memory host: state, log, series table and clock, all inspectable.
#[derive(Default)]
pub struct TestHost {
    pub now: u64,
    pub logs: Vec<(LogLevel, String)>,
    pub state: BTreeMap<String, Vec<u8>>,
    pub last_values: HashMap<String, Snapshot>,
    series: Vec<SeriesInfo>,
    series_ids: HashMap<String, u32>,
}

impl TestHost {
    /// The series number for an identifier, registering it (with these data-source names) the
    /// first time.
    pub fn intern(&mut self, identifier: &str, ds_names: &[&str]) -> u32 {
        if let Some(&id) = self.series_ids.get(identifier) {
            return id;
        }
        let ident = Identifier::parse(identifier)
            .unwrap_or_else(|| panic!("`{identifier}` is not a collectd identifier"));
        let id = self.series.len() as u32;
        self.series.push(SeriesInfo {
            identifier: ident,
            ds_names: ds_names.iter().map(|s| s.to_string()).collect(),
        });
        self.series_ids.insert(identifier.to_string(), id);
        id
    }
}

impl Host for TestHost {
    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }
    fn state_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.state.get(key).cloned()
    }
    fn state_set(&mut self, key: &str, value: &[u8]) {
        self.state.insert(key.to_string(), value.to_vec());
    }
    fn state_delete(&mut self, key: &str) {
        self.state.remove(key);
    }
    fn now(&mut self) -> u64 {
        self.now
    }
    fn last_value(&mut self, identifier: &str) -> Option<Snapshot> {
        self.last_values.get(identifier).cloned()
    }
    fn series(&mut self, id: u32) -> Option<SeriesInfo> {
        self.series.get(id as usize).cloned()
    }
}

/// One rule instance on a [`TestHost`], with timers driven by [`Tester::advance`].
pub struct Tester<R: Rule> {
    pub host: TestHost,
    runner: Runner<R>,
    config: Vec<(String, String)>,
    timers: BTreeMap<String, u64>,
}

impl<R: Rule> Tester<R> {
    /// Init the rule with a config given as a JSON object; the clock starts at 1.7e9 s.
    pub fn new(config_json: &str) -> Result<Self, String> {
        let host = TestHost {
            now: 1_700_000_000_000_000_000,
            ..TestHost::default()
        };
        Self::with_host(host, config_json)
    }

    /// Init the rule on an existing host: what a hot reload or a restart looks like to a rule
    /// (same state, fresh instance).
    pub fn with_host(mut host: TestHost, config_json: &str) -> Result<Self, String> {
        let config: Vec<(String, String)> = Config::from_json(config_json)?.entries();
        let mut runner = Runner::new("test-rule", "0.0.0");
        runner.init(&mut host, config.clone())?;
        let mut tester = Self {
            host,
            runner,
            config,
            timers: BTreeMap::new(),
        };
        tester.started();
        Ok(tester)
    }

    /// What the host does right after a start: one empty batch, which carries out what the
    /// rule asked for in `init` (timers it armed).
    fn started(&mut self) {
        self.feed(Batch::default());
    }

    /// Suspend this instance and start a fresh one on the same host, as a hot reload does.
    pub fn reload(mut self) -> Result<Self, String> {
        self.runner.suspend(&mut self.host);
        let mut runner = Runner::new("test-rule", "0.0.0");
        runner.init(&mut self.host, self.config.clone())?;
        self.runner = runner;
        self.started();
        Ok(self)
    }

    pub fn describe(&self) -> RuleInfo {
        self.runner.describe()
    }

    pub fn now_ns(&self) -> u64 {
        self.host.now
    }

    /// Deliver one batch and return the actions; timer actions also arm or cancel timers here.
    pub fn feed(&mut self, batch: Batch) -> Vec<Action> {
        let actions = self.runner.on_events(&mut self.host, &batch);
        for action in &actions {
            match action {
                Action::SetTimer(t) => {
                    self.timers
                        .insert(t.name.clone(), self.host.now.saturating_add(t.after));
                }
                Action::CancelTimer(name) => {
                    self.timers.remove(name);
                }
                _ => {}
            }
        }
        actions
    }

    /// Move the clock forward, firing due timers in deadline order (each in its own batch, at
    /// its own deadline). Returns every action they produced.
    pub fn advance(&mut self, by: Duration) -> Vec<Action> {
        let until = self.host.now.saturating_add(by.as_nanos() as u64);
        let mut out = Vec::new();
        loop {
            let due = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= until)
                .min_by_key(|(_, at)| **at)
                .map(|(n, at)| (n.clone(), *at));
            let Some((name, at)) = due else { break };
            self.timers.remove(&name);
            self.host.now = self.host.now.max(at);
            out.extend(self.feed(Batch {
                events: vec![Event::Timer(name)],
                values: vec![],
            }));
        }
        self.host.now = until;
        out
    }

    /// Append a value list for `identifier` at the current clock (interval 10 s) to `batch`.
    pub fn push_values(&mut self, batch: &mut Batch, identifier: &str, values: &[(&str, Value)]) {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let series = self.host.intern(identifier, &names);
        let list = ValueList {
            series,
            time: self.host.now,
            interval: 10_000_000_000,
            first: batch.values.len() as u32,
            count: values.len() as u32,
        };
        let values: Vec<Value> = values.iter().map(|(_, v)| *v).collect();
        batch.values.extend_from_slice(&values);
        batch.events.push(Event::Values(list));
        let snapshot = Snapshot {
            list: ValueList { first: 0, ..list },
            values,
        };
        self.host
            .last_values
            .insert(identifier.to_string(), snapshot);
    }

    /// Feed one value list.
    pub fn values(&mut self, identifier: &str, values: &[(&str, Value)]) -> Vec<Action> {
        let mut batch = Batch::default();
        self.push_values(&mut batch, identifier, values);
        self.feed(batch)
    }

    /// Feed one single-value gauge.
    pub fn gauge(&mut self, identifier: &str, value: f64) -> Vec<Action> {
        self.values(
            identifier,
            &[(
                "value",
                Value {
                    sample: Sample::Gauge(value),
                    rate: None,
                },
            )],
        )
    }

    /// Feed one MQTT message.
    pub fn mqtt(&mut self, topic: &str, payload: &[u8]) -> Vec<Action> {
        self.feed(Batch {
            events: vec![Event::Mqtt(MqttMessage {
                topic: topic.into(),
                payload: payload.to_vec(),
            })],
            values: vec![],
        })
    }

    pub fn logs(&self) -> &[(LogLevel, String)] {
        &self.host.logs
    }

    pub fn state<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_slice(self.host.state.get(key)?).ok()
    }

    /// Hand the host back, to start another instance on it.
    pub fn into_host(self) -> TestHost {
        self.host
    }
}
