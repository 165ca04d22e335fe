//! The feed format of `medic record` and `medic replay`: one JSON object per line, one event
//! each. A value list has the shape `medic decode` prints (so its output is a feed as it is);
//! `kind` says what a line is and may be left out where the fields say it (`values`,
//! `severity`, `topic`). Times are seconds since the Unix epoch, as collectd writes them.
//!
//! ```text
//! {"kind":"values","host":"h","plugin":"memory","plugin_instance":"","type":"memory","type_instance":"free","time":1764500000.0,"interval":10.0,"dsnames":["value"],"dstypes":["gauge"],"values":[1.5e9]}
//! {"kind":"notification","severity":"failure","message":"...","time":1764500001.0,"host":"h","plugin":"ping"}
//! {"kind":"mqtt","time":1764500002.0,"topic":"home/sensor/1","payload":"on"}
//! {"kind":"clock","time":1764500600.0}
//! ```
//!
//! A `clock` line only moves time on: timers due before it fire (a feed that ends in silence
//! says how long the silence lasted).

use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value as Json, json};

use crate::event::{
    DsType, Identifier, Ingested, MqttMessage, Notification, Sample, Severity, ValueList,
    secs_to_ns,
};
use crate::types_db::TypesDb;
use collectd_codec::network::{self, Credentials, SecurityLevel};

/// One line of a feed: an event, or only a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where it came from, for messages: `feed.jsonl:12`, `captures/0001.bin`.
    pub origin: String,
    pub time_ns: u64,
    /// `None` for a `clock` line.
    pub event: Option<Ingested>,
}

/// A feed that cannot be read, naming the line.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {why}")]
pub struct FeedError {
    pub origin: String,
    pub why: String,
}

/// The entries of a JSON-lines feed, in order; blank lines are skipped. Reading stops at the
/// first line that cannot be used (the caller stops there too: a replay that skipped a line
/// would not be what happened).
pub fn read_lines(
    reader: impl BufRead,
    name: String,
) -> impl Iterator<Item = Result<Entry, FeedError>> {
    reader.lines().enumerate().filter_map(move |(i, line)| {
        let origin = format!("{name}:{}", i + 1);
        match line {
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(
                parse_line(&l)
                    .map_err(|why| FeedError {
                        origin: origin.clone(),
                        why,
                    })
                    .map(|(time_ns, event)| Entry {
                        origin,
                        time_ns,
                        event,
                    }),
            ),
            Err(e) => Some(Err(FeedError {
                origin,
                why: format!("cannot read: {e}"),
            })),
        }
    })
}

/// One line: its time and event.
pub fn parse_line(line: &str) -> Result<(u64, Option<Ingested>), String> {
    let json: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Json::Object(o) = json else {
        return Err("not a JSON object".into());
    };
    let time = match o.get("time") {
        Some(Json::Number(n)) => n.as_f64().and_then(secs_to_ns),
        _ => None,
    }
    .ok_or("`time` must be seconds since the Unix epoch")?;
    let kind = match o.get("kind") {
        Some(Json::String(k)) => k.as_str(),
        Some(_) => return Err("`kind` must be a string".into()),
        None if o.contains_key("values") => "values",
        None if o.contains_key("severity") => "notification",
        None if o.contains_key("topic") => "mqtt",
        None => return Err("no `kind`, and not a value list, notification or MQTT message".into()),
    };
    let event = match kind {
        "values" => Ingested::Values(values(&o, time)?),
        "notification" => Ingested::Notification(notification(&o, time)?),
        "mqtt" => Ingested::Mqtt(mqtt(&o)?),
        "clock" => return Ok((time, None)),
        other => {
            return Err(format!(
                "unknown kind `{other}` (values, notification, mqtt or clock)"
            ));
        }
    };
    Ok((time, Some(event)))
}

fn text<'a>(o: &'a Map<String, Json>, key: &str) -> Result<&'a str, String> {
    match o.get(key) {
        Some(Json::String(s)) => Ok(s),
        None | Some(Json::Null) => Ok(""),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn identifier(o: &Map<String, Json>) -> Result<Identifier, String> {
    Ok(Identifier {
        host: text(o, "host")?.into(),
        plugin: text(o, "plugin")?.into(),
        plugin_instance: text(o, "plugin_instance")?.into(),
        type_: text(o, "type")?.into(),
        type_instance: text(o, "type_instance")?.into(),
    })
}

fn values(o: &Map<String, Json>, time: u64) -> Result<ValueList, String> {
    let identifier = identifier(o)?;
    if identifier.host.is_empty() || identifier.plugin.is_empty() || identifier.type_.is_empty() {
        return Err("a value list needs `host`, `plugin` and `type`".into());
    }
    if let Some((part, len)) = identifier.too_long() {
        return Err(format!("{part} is {len} bytes, collectd allows 127"));
    }
    let interval = match o.get("interval") {
        Some(Json::Number(n)) => n
            .as_f64()
            .and_then(secs_to_ns)
            .ok_or("`interval` must be seconds")?,
        None => 0,
        Some(_) => return Err("`interval` must be seconds".into()),
    };
    let (Some(Json::Array(values)), Some(Json::Array(types))) = (o.get("values"), o.get("dstypes"))
    else {
        return Err("a value list needs `values` and `dstypes` arrays".into());
    };
    if values.len() != types.len() || values.is_empty() {
        return Err(format!(
            "{} values for {} dstypes: one value per data source",
            values.len(),
            types.len()
        ));
    }
    if values.len() > crate::event::MAX_VALUES {
        return Err(format!(
            "{} values: at most {}",
            values.len(),
            crate::event::MAX_VALUES
        ));
    }
    let samples = values
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, t))| sample(v, t).map_err(|why| format!("values[{i}]: {why}")))
        .collect::<Result<_, _>>()?;
    Ok(ValueList {
        identifier,
        time,
        interval,
        samples,
    })
}

fn sample(v: &Json, t: &Json) -> Result<Sample, String> {
    let kind = t.as_str().ok_or("its dstype is not a string")?;
    let bad = || format!("`{v}` is not a {kind} value");
    Ok(match kind {
        // `medic decode` writes NaN as null.
        "gauge" if v.is_null() => Sample::Gauge(f64::NAN),
        "gauge" => Sample::Gauge(v.as_f64().ok_or_else(bad)?),
        "derive" => Sample::Derive(v.as_i64().ok_or_else(bad)?),
        "counter" => Sample::Counter(v.as_u64().ok_or_else(bad)?),
        "absolute" => Sample::Absolute(v.as_u64().ok_or_else(bad)?),
        other => {
            return Err(format!(
                "unknown dstype `{other}` (gauge, derive, counter, absolute)"
            ));
        }
    })
}

fn notification(o: &Map<String, Json>, time: u64) -> Result<Notification, String> {
    let severity = match text(o, "severity")? {
        "failure" => Severity::Failure,
        "warning" => Severity::Warning,
        "okay" => Severity::Okay,
        other => {
            return Err(format!(
                "unknown severity `{other}` (failure, warning, okay)"
            ));
        }
    };
    Ok(Notification {
        severity,
        time,
        message: text(o, "message")?.into(),
        identifier: identifier(o)?,
    })
}

fn mqtt(o: &Map<String, Json>) -> Result<MqttMessage, String> {
    let topic = text(o, "topic")?;
    if topic.is_empty() {
        return Err("an MQTT message needs a `topic`".into());
    }
    let payload = match (o.get("payload"), o.get("payload_hex")) {
        (Some(Json::String(s)), None) => s.as_bytes().to_vec(),
        (None, Some(Json::String(h))) => hex(h).ok_or("`payload_hex` is not hexadecimal")?,
        (None, None) => Vec::new(),
        _ => return Err("an MQTT message has one `payload` string or `payload_hex`".into()),
    };
    Ok(MqttMessage {
        topic: topic.into(),
        payload,
    })
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The feed line for an event at `time_ns` (MQTT messages carry no time of their own).
pub fn to_line(event: &Ingested, time_ns: u64, types: &TypesDb) -> Json {
    match event {
        Ingested::Values(vl) => values_json(
            &vl.identifier,
            vl.time,
            vl.interval,
            &ds_names(types, &vl.identifier.type_, vl.samples.len()),
            &vl.samples,
        ),
        Ingested::Notification(n) => {
            let mut j = json!({
                "kind": "notification",
                "severity": n.severity.as_str(),
                "message": n.message,
                "time": secs(n.time),
            });
            let id = &n.identifier;
            for (key, value) in [
                ("host", &id.host),
                ("plugin", &id.plugin),
                ("plugin_instance", &id.plugin_instance),
                ("type", &id.type_),
                ("type_instance", &id.type_instance),
            ] {
                if !value.is_empty() {
                    j[key] = json!(value);
                }
            }
            j
        }
        Ingested::Mqtt(m) => {
            let mut j = json!({"kind": "mqtt", "time": secs(time_ns), "topic": m.topic});
            match std::str::from_utf8(&m.payload) {
                Ok(text) => j["payload"] = json!(text),
                Err(_) => {
                    let hex: String = m.payload.iter().map(|b| format!("{b:02x}")).collect();
                    j["payload_hex"] = json!(hex);
                }
            }
            j
        }
    }
}

/// A value list as `medic decode` and the feed write it.
pub fn values_json(
    id: &Identifier,
    time_ns: u64,
    interval_ns: u64,
    ds_names: &[String],
    samples: &[Sample],
) -> Json {
    let dstypes: Vec<&str> = samples.iter().map(|s| ds_type(s.ds_type())).collect();
    let values: Vec<Json> = samples
        .iter()
        .map(|s| match *s {
            Sample::Gauge(g) if g.is_nan() => Json::Null,
            Sample::Gauge(g) => json!(g),
            Sample::Derive(v) => json!(v),
            Sample::Counter(v) | Sample::Absolute(v) => json!(v),
        })
        .collect();
    json!({
        "kind": "values",
        "host": id.host,
        "plugin": id.plugin,
        "plugin_instance": id.plugin_instance,
        "type": id.type_,
        "type_instance": id.type_instance,
        "time": secs(time_ns),
        "interval": secs(interval_ns),
        "dsnames": ds_names,
        "dstypes": dstypes,
        "values": values,
    })
}

/// Data-source names from types.db, or collectd's fallback (`value`, `value0..n`).
pub fn ds_names(types: &TypesDb, type_: &str, count: usize) -> Vec<String> {
    match types.sources_or_fallback(type_, count) {
        Some(s) if s.len() == count => s.iter().map(|d| d.name.clone()).collect(),
        _ if count == 1 => vec!["value".into()],
        _ => (0..count).map(|i| format!("value{i}")).collect(),
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn ds_type(t: DsType) -> &'static str {
    match t {
        DsType::Gauge => "gauge",
        DsType::Derive => "derive",
        DsType::Counter => "counter",
        DsType::Absolute => "absolute",
    }
}

/// The entries of a directory of collectd network datagrams (one raw datagram per `.bin` file,
/// as `medic decode` reads them), in file-name order. A datagram without a time takes the one
/// before it.
pub fn read_captures(
    dir: &Path,
    level: SecurityLevel,
    credentials: &Credentials,
) -> Result<Vec<Entry>, FeedError> {
    let error = |origin: &Path, why: String| FeedError {
        origin: origin.display().to_string(),
        why,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| error(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(error(dir, "no .bin datagrams in this directory".into()));
    }
    let mut entries = Vec::new();
    let mut last = 0;
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| error(file, format!("cannot read: {e}")))?;
        let mut decoded = Vec::new();
        network::decode(&bytes, level, credentials, &mut decoded)
            .map_err(|e| error(file, e.to_string()))?;
        for d in decoded {
            let event = d
                .item
                .into_record(last)
                .map(Ingested::from)
                .map_err(|why| error(file, why))?;
            let time_ns = match &event {
                Ingested::Values(vl) => vl.time,
                Ingested::Notification(n) => n.time,
                Ingested::Mqtt(_) => last,
            };
            last = time_ns;
            entries.push(Entry {
                origin: file.display().to_string(),
                time_ns,
                event: Some(event),
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_decode_prints_is_a_feed_line() {
        let line = r#"{"host":"h","plugin":"cpu","plugin_instance":"0","type":"cpu","type_instance":"idle","time":1764500000.5,"interval":10.0,"dsnames":["value"],"dstypes":["derive"],"values":[42],"security":"none"}"#;
        let (time, event) = parse_line(line).unwrap();
        assert_eq!(time, 1_764_500_000_500_000_000);
        let Some(Ingested::Values(vl)) = event else {
            panic!("{event:?}")
        };
        assert_eq!(vl.identifier.to_string(), "h/cpu-0/cpu-idle");
        assert_eq!(vl.interval, 10_000_000_000);
        assert_eq!(vl.samples, vec![Sample::Derive(42)]);
    }

    #[test]
    fn every_kind_round_trips_through_its_line() {
        let types = TypesDb::default();
        let events = [
            Ingested::Values(ValueList {
                identifier: Identifier::parse("h/memory/memory-free").unwrap(),
                time: 1_764_500_000_000_000_000,
                interval: 10_000_000_000,
                samples: vec![Sample::Gauge(1.5e9)],
            }),
            Ingested::Notification(Notification {
                severity: Severity::Warning,
                time: 1_764_500_001_000_000_000,
                message: "disk almost full".into(),
                identifier: Identifier::parse("h/df-root/df_complex-free").unwrap(),
            }),
            Ingested::Mqtt(MqttMessage {
                topic: "home/a".into(),
                payload: b"on".to_vec(),
            }),
            Ingested::Mqtt(MqttMessage {
                topic: "home/b".into(),
                payload: vec![0xff, 0x00],
            }),
        ];
        for event in events {
            let line = to_line(&event, 1_764_500_002_000_000_000, &types).to_string();
            let (_, back) = parse_line(&line).unwrap();
            assert_eq!(back.as_ref(), Some(&event), "{line}");
        }
    }

    #[test]
    fn a_broken_line_says_what_is_wrong_and_where() {
        let feed = "{\"kind\":\"clock\",\"time\":1}\n\n{\"kind\":\"values\",\"time\":2,\"host\":\"h\",\"plugin\":\"p\",\"type\":\"t\",\"values\":[1],\"dstypes\":[\"gauge\",\"gauge\"]}\n";
        let entries: Vec<_> = read_lines(feed.as_bytes(), "feed.jsonl".into()).collect();
        assert!(entries[0].is_ok());
        let err = entries[1].as_ref().unwrap_err().to_string();
        assert_eq!(
            err,
            "feed.jsonl:3: 1 values for 2 dstypes: one value per data source"
        );
        for (line, why) in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"kind":"values"}"#, "`time` must be seconds"),
            (r#"{"kind":"nope","time":1}"#, "unknown kind `nope`"),
            (r#"{"time":1,"severity":"bad"}"#, "unknown severity `bad`"),
            (
                r#"{"time":1,"host":"h","plugin":"p","type":"t","values":["x"],"dstypes":["gauge"]}"#,
                "values[0]: `\"x\"` is not a gauge value",
            ),
            (r#"{"kind":"mqtt","time":1,"topic":""}"#, "needs a `topic`"),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
        }
    }
}
