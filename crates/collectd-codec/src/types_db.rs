//! collectd's types.db: which data sources (name and type) each value type has.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::DsType;

/// One data source of a type: `name:TYPE:min:max` in types.db (min and max are not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub name: String,
    pub ds_type: DsType,
}

/// Types by name. When no file could be read, `is_empty()` is true and callers fall back to
/// gauges named `value` / `value0..n`.
#[derive(Debug, Default)]
pub struct TypesDb {
    types: HashMap<String, Arc<[DataSource]>>,
    /// Types a program defines itself ([`TypesDb::define_builtin`]).
    builtins: HashMap<String, Arc<[DataSource]>>,
}

impl TypesDb {
    /// Load several files as collectd's `TypesDB` does: later definitions override earlier ones.
    /// A missing or unreadable file is a warning, not an error.
    pub fn load(paths: &[impl AsRef<Path>]) -> Self {
        let mut db = TypesDb::default();
        for path in paths {
            let path = path.as_ref();
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let bad = db.add(&text);
                    for (line, why) in bad {
                        tracing::warn!(file = %path.display(), line, "types.db line ignored: {why}");
                    }
                }
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    "cannot read types.db ({e}); data sources will be named value/value0..n"
                ),
            }
        }
        db
    }

    /// Add definitions from text; returns `(line number, reason)` for lines it could not use.
    pub fn add(&mut self, text: &str) -> Vec<(usize, String)> {
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok((name, sources)) => {
                    self.types.insert(name, sources.into());
                }
                Err(why) => bad.push((i + 1, why)),
            }
        }
        bad
    }

    /// Whether no file gave any type (built-in types do not count).
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// A type known whatever the files say, as a program's own values need (a file's
    /// definition of the same name wins).
    pub fn define_builtin(&mut self, type_name: &str, sources: Vec<DataSource>) {
        self.builtins.insert(type_name.into(), sources.into());
    }

    pub fn get(&self, type_name: &str) -> Option<&Arc<[DataSource]>> {
        self.types
            .get(type_name)
            .or_else(|| self.builtins.get(type_name))
    }

    /// Data sources for a type, or the fallback names when types.db is absent: `value` for one
    /// value, `value0..n` for several, all gauges.
    pub fn sources_or_fallback(&self, type_name: &str, count: usize) -> Option<Arc<[DataSource]>> {
        if let Some(ds) = self.get(type_name) {
            return Some(ds.clone());
        }
        if !self.is_empty() {
            return None;
        }
        let name = |i: usize| {
            if count == 1 {
                "value".to_string()
            } else {
                format!("value{i}")
            }
        };
        Some(
            (0..count)
                .map(|i| DataSource {
                    name: name(i),
                    ds_type: DsType::Gauge,
                })
                .collect(),
        )
    }
}

fn parse_line(line: &str) -> Result<(String, Vec<DataSource>), String> {
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .ok_or("a type needs at least one data source")?;
    let mut sources = Vec::new();
    // collectd separates data sources by whitespace, commas, or both.
    for spec in rest.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
        let mut fields = spec.split(':');
        let (Some(ds), Some(ty), Some(_min), Some(_max), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(format!("data source `{spec}` is not name:TYPE:min:max"));
        };
        let ds_type = match ty.to_ascii_uppercase().as_str() {
            "GAUGE" => DsType::Gauge,
            "DERIVE" => DsType::Derive,
            "COUNTER" => DsType::Counter,
            "ABSOLUTE" => DsType::Absolute,
            other => return Err(format!("unknown data-source type `{other}`")),
        };
        sources.push(DataSource {
            name: ds.to_string(),
            ds_type,
        });
    }
    Ok((name.to_string(), sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_collectd_lines_and_reports_bad_ones() {
        let mut db = TypesDb::default();
        let bad = db.add(
            "# comment\nload\t\tshortterm:GAUGE:0:5000, midterm:GAUGE:0:5000, longterm:GAUGE:0:5000\n\
             if_octets  rx:DERIVE:0:U, tx:DERIVE:0:U\nif_dropped rx:DERIVE:0:U tx:DERIVE:0:U\nbroken x:GAUGE\nweird v:FLOAT:0:1\n",
        );
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0, 5);
        assert_eq!(db.get("if_dropped").unwrap().len(), 2);
        assert!(bad[1].1.contains("FLOAT"));
        let load = db.get("load").unwrap();
        assert_eq!(load.len(), 3);
        assert_eq!(load[1].name, "midterm");
        assert_eq!(db.get("if_octets").unwrap()[0].ds_type, DsType::Derive);
        assert!(db.sources_or_fallback("nosuch", 1).is_none());
    }

    #[test]
    fn falls_back_to_value_names_without_a_file() {
        let db = TypesDb::load(&["/nonexistent/types.db"]);
        assert!(db.is_empty());
        assert_eq!(db.sources_or_fallback("x", 1).unwrap()[0].name, "value");
        let two = db.sources_or_fallback("x", 2).unwrap();
        assert_eq!(
            (two[0].name.as_str(), two[1].name.as_str()),
            ("value0", "value1")
        );
    }

    #[test]
    fn a_files_type_wins_over_a_builtin_of_the_same_name() {
        let gauge = |name: &str| DataSource {
            name: name.into(),
            ds_type: DsType::Gauge,
        };
        let mut db = TypesDb::default();
        db.define_builtin("probe", vec![gauge("ok"), gauge("code")]);
        assert!(db.is_empty(), "a builtin is not a file's type");
        assert_eq!(db.get("probe").unwrap().len(), 2);
        db.add("probe value:GAUGE:0:1\n");
        assert_eq!(db.get("probe").unwrap()[0].name, "value");
    }

    #[test]
    fn reads_debians_types_db() {
        // collectd-core is a test dependency (.ci/run installs it).
        let db = TypesDb::load(&["/usr/share/collectd/types.db"]);
        assert_eq!(db.get("memory").unwrap()[0].name, "value");
        assert_eq!(db.get("if_octets").unwrap()[1].name, "tx");
    }
}
