//! A rule config value that names files instead of holding text: `{ file = "PATH" }` or
//! `{ files = "DIR/*.lua" }` anywhere in `[rules.config.<rule>]`. medic reads them and hands the
//! rule `{"file": PATH, "text": …}` (a list of them, in name order, for `files`), so a rule
//! that interprets scripts (lua-collectd-monitor's local handlers) still has no filesystem.
//! Relative paths are read from the config file's directory but handed over as written, so
//! what a rule says about a file (its handlers' names) does not depend on where it is installed.
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
    pub fn watched_dir(&self, base: &Path) -> PathBuf {
        let dir = match self {
            FileRef::File(path) => path.parent().unwrap_or(Path::new("")),
            FileRef::Files { dir, .. } => dir,
        };
        base.join(dir)
    }

    /// Read what the reference names (relative paths from `base`), as the JSON value the rule
    /// receives.
    pub fn read(&self, base: &Path) -> Result<serde_json::Value, String> {
        match self {
            FileRef::File(path) => read_one(path, &base.join(path)),
            FileRef::Files { dir, pattern } => {
                let glob = Pattern::new(pattern.as_str());
                let listed = base.join(dir);
                let entries = std::fs::read_dir(&listed)
                    .map_err(|e| format!("cannot list {}: {e}", listed.display()))?;
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| glob.matches(n))
                    .collect();
                names.sort();
                names
                    .iter()
                    .map(|n| read_one(&dir.join(n), &listed.join(n)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(serde_json::Value::Array)
            }
        }
    }
}

/// `written` is the path as the config has it (what the rule is told), `path` where it is.
fn read_one(written: &Path, path: &Path) -> Result<serde_json::Value, String> {
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
    Ok(serde_json::json!({ "file": written.to_string_lossy(), "text": text }))
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

/// The JSON a rule receives for a config value: file references (relative to `base`)
/// replaced by what they read.
pub fn resolve(value: &toml::Value, base: &Path) -> Result<serde_json::Value, String> {
    Ok(match value {
        toml::Value::Table(t) => match FileRef::of(t) {
            Some(r) => r.read(base)?,
            None => serde_json::Value::Object(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), resolve(v, base)?)))
                    .collect::<Result<_, String>>()?,
            ),
        },
        toml::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|v| resolve(v, base))
                .collect::<Result<_, _>>()?,
        ),
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
        let v = value(
            r#"
            one = { file = "a.lua" }
            all = { files = "*.lua" }
            plain = { file = "x", other = 1 }
            n = 3
            "#,
        );
        let json = resolve(&v, dir.path()).unwrap();
        let (a, b) = ("a.lua", "b.lua");
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
        assert!(refs.iter().all(|r| r.watched_dir(dir.path()) == dir.path()));
    }

    #[test]
    fn a_missing_or_huge_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = FileRef::File("gone.lua".into());
        let err = missing.read(dir.path()).unwrap_err();
        assert!(
            err.contains("cannot read") && err.contains("gone.lua"),
            "{err}"
        );
        let big = dir.path().join("big.lua");
        std::fs::write(&big, vec![b'-'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = FileRef::File(big).read(Path::new("/")).unwrap_err();
        assert!(err.contains("a rule config file may have at most"), "{err}");
    }
}
