//! The data model every collectd format carries, with collectd's limits.

use crate::Identifier;

/// Longest identifier part collectd handles (`DATA_MAX_NAME_LEN`, 128 bytes with its NUL).
pub const MAX_NAME_LEN: usize = 127;
/// Longest notification message collectd handles (`NOTIF_MAX_MSG_LEN`, 256 with its NUL).
pub const MAX_MESSAGE_LEN: usize = 255;
/// Most values one value list may carry. collectd's largest types have a handful of data
/// sources; a list claiming more is refused rather than allocated.
pub const MAX_VALUES: usize = 128;

/// A data-source type, as in types.db.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsType {
    Gauge,
    Derive,
    Counter,
    Absolute,
}

/// One raw value, as collectd's `value_t`.
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

/// A notification's severity; collectd defines these three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Failure,
    Warning,
    Okay,
}

impl Severity {
    /// collectd's lower-case name (`PUTNOTIF severity=…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Failure => "failure",
            Severity::Warning => "warning",
            Severity::Okay => "okay",
        }
    }

    /// From the network protocol's number (`NOTIF_FAILURE` 1, `NOTIF_WARNING` 2, `NOTIF_OKAY` 4).
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Severity::Failure),
            2 => Some(Severity::Warning),
            4 => Some(Severity::Okay),
            _ => None,
        }
    }
}

/// A notification. Its identifier's parts may be empty (collectd sends some without a host).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub severity: Severity,
    /// Nanoseconds since the Unix epoch.
    pub time: u64,
    pub message: String,
    pub identifier: Identifier,
}

/// What one protocol unit carries: a value list or a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Values(ValueList),
    Notification(Notification),
}

/// Seconds (as collectd writes them) to nanoseconds; `None` for negative or absurd values
/// (after the year 2540).
pub fn secs_to_ns(secs: f64) -> Option<u64> {
    // Whole seconds and the fraction apart: `secs * 1e9` would round today's times to 256 ns
    // (`1764500430.25` would become `…430.249999872`).
    (0.0..1.8e10).contains(&secs).then(|| {
        let whole = secs.trunc();
        whole as u64 * 1_000_000_000 + ((secs - whole) * 1e9).round() as u64
    })
}
