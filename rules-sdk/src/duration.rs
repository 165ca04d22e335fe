//! Serde helpers for durations in rule configs: `"30s"`, `"5m"`, `"1h 30m"`, or a number of
//! seconds. Use as `#[serde(with = "medic_rules::duration")]`.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        Raw::Seconds(s) => Err(serde::de::Error::custom(format!(
            "duration must be a non-negative number of seconds, got {s}"
        ))),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{t}`: {e} (try \"30s\" or \"5m\")"
            ))
        }),
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// The same for `Option<Duration>` fields.
pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(d)| d))
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[derive(serde::Deserialize)]
    struct C {
        #[serde(with = "super")]
        d: Duration,
    }

    #[test]
    fn text_and_seconds() {
        let c: C = serde_json::from_str(r#"{"d": "1m 30s"}"#).unwrap();
        assert_eq!(c.d, Duration::from_secs(90));
        let c: C = serde_json::from_str(r#"{"d": 2.5}"#).unwrap();
        assert_eq!(c.d, Duration::from_millis(2500));
        assert!(serde_json::from_str::<C>(r#"{"d": "soon"}"#).is_err());
        assert!(serde_json::from_str::<C>(r#"{"d": -1}"#).is_err());
    }
}
