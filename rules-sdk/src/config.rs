use serde::de::DeserializeOwned;

/// A rule's config table as the host hands it over: `(key, JSON text)` pairs, one per key of
/// `[rules.config.<rule>]`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }

    /// Build a config from a JSON object, as tests do: `Config::from_json(r#"{"below": 5}"#)`.
    pub fn from_json(object: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(object).map_err(|e| format!("config is not JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("config must be a JSON object".into());
        };
        Ok(Self::new(
            map.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        ))
    }

    pub fn entries(self) -> Vec<(String, String)> {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw JSON text of one key.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Deserialize the whole table into the rule's own config type. Errors name the key and say
    /// what was wrong, in words an operator can act on.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let mut map = serde_json::Map::new();
        for (key, text) in &self.entries {
            let value = serde_json::from_str(text)
                .map_err(|e| format!("config key `{key}` is not valid JSON text: {e}"))?;
            map.insert(key.clone(), value);
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("invalid rule config: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        pattern: String,
        below: f64,
        #[serde(default)]
        verbose: bool,
    }

    #[test]
    fn parses_typed_config() {
        let c = Config::new(vec![
            ("pattern".into(), "\"*/memory/*\"".into()),
            ("below".into(), "5e8".into()),
        ]);
        let cfg: Cfg = c.parse().unwrap();
        assert_eq!(
            cfg,
            Cfg {
                pattern: "*/memory/*".into(),
                below: 5e8,
                verbose: false
            }
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let c = Config::from_json(r#"{"pattern": 3, "below": 1}"#).unwrap();
        let err = c.parse::<Cfg>().unwrap_err();
        assert!(
            err.contains("invalid type: integer `3`, expected a string"),
            "{err}"
        );
        let c = Config::from_json(r#"{"pattern": "x", "below": 1, "bogus": 1}"#).unwrap();
        assert!(
            c.parse::<Cfg>()
                .unwrap_err()
                .contains("unknown field `bogus`")
        );
        let c = Config::from_json(r#"{"pattern": "x"}"#).unwrap();
        assert!(
            c.parse::<Cfg>()
                .unwrap_err()
                .contains("missing field `below`")
        );
        let c = Config::new(vec![("below".into(), "not json".into())]);
        assert!(c.parse::<Cfg>().unwrap_err().contains("config key `below`"));
    }
}
