use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Identifier, Sample, SeriesInfo, Snapshot, Value, ValueList};

impl Snapshot {
    pub fn values(&self) -> &[Value] {
        slice(&self.values, &self.list)
    }
}

pub(crate) fn slice<'a>(values: &'a [Value], list: &ValueList) -> &'a [Value] {
    let start = list.first as usize;
    values
        .get(start..start + list.count as usize)
        .unwrap_or(&[])
}

/// One value list with its values and series resolved: what `Rule::on_values` receives.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub list: &'a ValueList,
    pub values: &'a [Value],
    pub series: &'a SeriesInfo,
}

impl<'a> Values<'a> {
    pub fn new(list: &'a ValueList, values: &'a [Value], series: &'a SeriesInfo) -> Self {
        Self {
            list,
            values,
            series,
        }
    }

    pub fn identifier(&self) -> &'a Identifier {
        &self.series.identifier
    }

    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.list.time)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.list.interval)
    }

    /// The value of data source `name` (`value` for most single-value types).
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        let i = self.series.ds_names.iter().position(|n| n == name)?;
        self.values.get(i)
    }

    /// `(data-source name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.series
            .ds_names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter())
    }

    /// The comparable number of the first data source; see [`Value::current`].
    pub fn first(&self) -> Option<f64> {
        self.values.first().and_then(Value::current)
    }
}

impl Value {
    /// The number a threshold compares: the gauge itself, or the per-second rate for counter,
    /// derive and absolute. `None` for NaN (collectd's "unknown") and for a rate not known yet.
    pub fn current(&self) -> Option<f64> {
        let v = match self.sample {
            Sample::Gauge(g) => g,
            _ => self.rate?,
        };
        (!v.is_nan()).then_some(v)
    }

    /// The raw value as a float (counters above 2^53 lose precision).
    pub fn raw(&self) -> f64 {
        match self.sample {
            Sample::Gauge(g) => g,
            Sample::Derive(d) => d as f64,
            Sample::Counter(c) | Sample::Absolute(c) => c as f64,
        }
    }
}

impl Identifier {
    /// Parse collectd's `host/plugin[-instance]/type[-instance]` (see [`crate::identifier`]).
    pub fn parse(text: &str) -> Option<Self> {
        let p = crate::identifier::split(text)?;
        Some(Identifier {
            host: p.host.into(),
            plugin: p.plugin.into(),
            plugin_instance: p.plugin_instance.into(),
            type_: p.type_.into(),
            type_instance: p.type_instance.into(),
        })
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::identifier::write(
            f,
            crate::identifier::Parts {
                host: &self.host,
                plugin: &self.plugin,
                plugin_instance: &self.plugin_instance,
                type_: &self.type_,
                type_instance: &self.type_instance,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_round_trip() {
        let id = Identifier::parse("web-1/cpu-0/percent-idle").unwrap();
        assert_eq!(id.host, "web-1");
        assert_eq!(id.plugin, "cpu");
        assert_eq!(id.plugin_instance, "0");
        assert_eq!(id.type_, "percent");
        assert_eq!(id.type_instance, "idle");
        assert_eq!(id.to_string(), "web-1/cpu-0/percent-idle");
        assert_eq!(
            Identifier::parse("h/load/load").unwrap().to_string(),
            "h/load/load"
        );
        assert!(Identifier::parse("h/load").is_none());
    }

    #[test]
    fn current_uses_rates_and_skips_nan() {
        let g = Value {
            sample: Sample::Gauge(f64::NAN),
            rate: None,
        };
        assert_eq!(g.current(), None);
        let c = Value {
            sample: Sample::Counter(10),
            rate: Some(2.5),
        };
        assert_eq!(c.current(), Some(2.5));
        let d = Value {
            sample: Sample::Derive(-3),
            rate: None,
        };
        assert_eq!(d.current(), None);
        assert_eq!(d.raw(), -3.0);
    }
}
