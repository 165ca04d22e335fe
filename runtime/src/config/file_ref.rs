//! A rule config value that names files instead of holding text: `{ file = "PATH" }` or
//! `{ files = "DIR/*.lua" }` anywhere in `[rules.config.<rule>]`. medic reads them and hands the
//! rule `{"file": PATH, "text": …}` (a list of them, in name order, for `files`), so a rule
//! that interprets scripts (lua-collectd-monitor's local handlers) still has no filesystem.
//! A change to such a file, or a file added to or removed from the directory, re-initialises
//! the rule like a changed config: the old instance keeps serving if the new one refuses.

use std::path::{Path, PathBuf};

use medic_rules::Pattern;

/// Largest file a rule config may name: scripts, not data.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// `{ file = "PATH" }`.
    File(PathBuf),
    /// `{ files = "DIR/PATTERN" }`: the files of DIR whose names match the glob.
    Files { dir: PathBuf, pattern: String },
}

impl FileRef {
    /// The reference a table stands for, if it is one: a table with the single key `file` or
    /// `files` holding a string.
    pub fn of(table: &toml::Table) -> Option<Self> {
        if table.len() != 1 {
            return None;
        }
        let (key, value) = table.iter().next()?;
        let text = value.as_str()?;
        match key.as_str() {
            "file" => Some(FileRef::File(text.into())),
            "files" => {
                let path = Path::new(text);
                let pattern = path.file_name()?.to_str()?.to_string();
                let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
                Some(FileRef::Files { dir, pattern })
            }
            _ => None,
        }
    }

    /// The directory whose changes may change what this reference reads.
    pub fn watched_dir(&self) -> PathBuf {
        match self {
            FileRef::File(path) => path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            FileRef::Files { dir, .. } => dir.clone(),
        }
    }

    /// Read what the reference names, as the JSON value the rule receives.
    pub fn read(&self) -> Result<serde_json::Value, String> {
        match self {
            FileRef::File(path) => read_one(path),
            FileRef::Files { dir, pattern } => {
                let glob = Pattern::new(pattern.as_str());
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
                let mut paths: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| glob.matches(n))
                    })
                    .collect();
                paths.sort();
                paths
                    .iter()
                    .map(|p| read_one(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map(serde_json::Value::Array)
            }
        }
    }

    /// Relative paths are taken from the config file's directory, like every path of the config.
    pub fn absolute(self, base: &Path) -> Self {
        let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        match self {
            FileRef::File(path) => FileRef::File(abs(path)),
            FileRef::Files { dir, pattern } => FileRef::Files {
                dir: abs(dir),
                pattern,
            },
        }
    }

    fn to_table(&self) -> toml::Table {
        let (key, path) = match self {
            FileRef::File(path) => ("file", path.clone()),
            FileRef::Files { dir, pattern } => ("files", dir.join(pattern)),
        };
        toml::Table::from_iter([(
            key.to_string(),
            toml::Value::String(path.to_string_lossy().into_owned()),
        )])
    }
}

fn read_one(path: &Path) -> Result<serde_json::Value, String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(fail)?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{} is {size} bytes; a rule config file may have at most {MAX_FILE_BYTES}",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(fail)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    Ok(serde_json::json!({ "file": path.to_string_lossy(), "text": text }))
}

/// Every file reference in a value, depth first.
pub fn refs_in(value: &toml::Value, found: &mut Vec<FileRef>) {
    match value {
        toml::Value::Table(t) => match FileRef::of(t) {
            Some(r) => found.push(r),
            None => t.values().for_each(|v| refs_in(v, found)),
        },
        toml::Value::Array(items) => items.iter().for_each(|v| refs_in(v, found)),
        _ => {}
    }
}

/// Make every file reference in a value absolute (config load).
pub fn absolutize(value: &mut toml::Value, base: &Path) {
    match value {
        toml::Value::Table(t) => match FileRef::of(t) {
            Some(r) => *t = r.absolute(base).to_table(),
            None => t.iter_mut().for_each(|(_, v)| absolutize(v, base)),
        },
        toml::Value::Array(items) => items.iter_mut().for_each(|v| absolutize(v, base)),
        _ => {}
    }
}

/// The JSON a rule receives for a config value: file references replaced by what they read.
pub fn resolve(value: &toml::Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        toml::Value::Table(t) => match FileRef::of(t) {
            Some(r) => r.read()?,
            None => serde_json::Value::Object(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), resolve(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
        },
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(resolve).collect::<Result<_, _>>()?)
        }
        other => serde_json::to_value(other).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> toml::Value {
        toml::Value::Table(toml::from_str(text).unwrap())
    }

    #[test]
    fn file_references_are_read_into_the_rules_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.lua"), "return 2").unwrap();
        std::fs::write(dir.path().join("a.lua"), "return 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "no").unwrap();
        let mut v = value(
            r#"
            one = { file = "a.lua" }
            all = { files = "*.lua" }
            plain = { file = "x", other = 1 }
            n = 3
            "#,
        );
        absolutize(&mut v, dir.path());
        let json = resolve(&v).unwrap();
        let a = dir.path().join("a.lua").to_string_lossy().into_owned();
        let b = dir.path().join("b.lua").to_string_lossy().into_owned();
        assert_eq!(
            json["one"],
            serde_json::json!({"file": a, "text": "return 1"})
        );
        assert_eq!(
            json["all"],
            serde_json::json!([{"file": a, "text": "return 1"}, {"file": b, "text": "return 2"}])
        );
        assert_eq!(json["plain"], serde_json::json!({"file": "x", "other": 1}));
        assert_eq!(json["n"], 3);

        let mut refs = Vec::new();
        refs_in(&v, &mut refs);
        assert_eq!(refs.len(), 2);
        assert!(refs.iter().all(|r| r.watched_dir() == dir.path()));
    }

    #[test]
    fn a_missing_or_huge_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = FileRef::File(dir.path().join("gone.lua"));
        assert!(missing.read().unwrap_err().contains("cannot read"));
        let big = dir.path().join("big.lua");
        std::fs::write(&big, vec![b'-'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = FileRef::File(big).read().unwrap_err();
        assert!(err.contains("a rule config file may have at most"), "{err}");
    }
}
