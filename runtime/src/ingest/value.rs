//! The value and notification model that every ingest source produces.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// collectd's series identifier. Empty instance strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identifier {
    pub host: String,
    pub plugin: String,
    pub plugin_instance: String,
    pub type_: String,
    pub type_instance: String,
}

impl Identifier {
    /// Parse `host/plugin[-instance]/type[-instance]`; the first `-` of a part splits off its
    /// instance, as collectd's `parse_identifier` does.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '/');
        let (host, plugin, ty) = (parts.next()?, parts.next()?, parts.next()?);
        if host.is_empty() || plugin.is_empty() || ty.is_empty() {
            return None;
        }
        let split = |s: &str| match s.split_once('-') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (s.to_string(), String::new()),
        };
        let (plugin, plugin_instance) = split(plugin);
        let (type_, type_instance) = split(ty);
        Some(Self {
            host: host.into(),
            plugin,
            plugin_instance,
            type_,
            type_instance,
        })
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.plugin)?;
        if !self.plugin_instance.is_empty() {
            write!(f, "-{}", self.plugin_instance)?;
        }
        write!(f, "/{}", self.type_)?;
        if !self.type_instance.is_empty() {
            write!(f, "-{}", self.type_instance)?;
        }
        Ok(())
    }
}

/// A data-source type, as in types.db.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsType {
    Gauge,
    Derive,
    Counter,
    Absolute,
}

/// One raw value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    Gauge(f64),
    Derive(i64),
    Counter(u64),
    Absolute(u64),
}

impl Sample {
    pub fn ds_type(&self) -> DsType {
        match self {
            Sample::Gauge(_) => DsType::Gauge,
            Sample::Derive(_) => DsType::Derive,
            Sample::Counter(_) => DsType::Counter,
            Sample::Absolute(_) => DsType::Absolute,
        }
    }
}

/// One value list: one identifier, one time, one value per data source.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueList {
    pub identifier: Identifier,
    /// Nanoseconds since the Unix epoch.
    pub time: u64,
    /// Nanoseconds.
    pub interval: u64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Failure,
    Warning,
    Okay,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub severity: Severity,
    pub time: u64,
    pub message: String,
    pub identifier: Identifier,
}

/// A message on an MQTT topic some rule subscribed to.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What an ingest source hands to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    Values(ValueList),
    Notification(Notification),
    Mqtt(MqttMessage),
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Seconds (as collectd writes them) to nanoseconds; `None` for negative or absurd values.
pub fn secs_to_ns(secs: f64) -> Option<u64> {
    (0.0..1.8e10)
        .contains(&secs)
        .then(|| (secs * 1e9).round() as u64)
}
