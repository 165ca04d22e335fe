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
/// Most files one `files` glob may match.
pub const MAX_FILES_PER_GLOB: usize = 256;
/// Most bytes all of one rule's config files may hold together.
pub const MAX_TOTAL_BYTES: u64 = 8 * 1024 * 1024;

/// What is left of one rule config's `MAX_TOTAL_BYTES`.
#[derive(Debug)]
pub struct Budget(u64);

impl Default for Budget {
    fn default() -> Self {
        Self(MAX_TOTAL_BYTES)
    }
}

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
    /// receives, within what is left of `budget`.
    pub fn read(&self, base: &Path, budget: &mut Budget) -> Result<serde_json::Value, String> {
        match self {
            FileRef::File(path) => read_one(path, &base.join(path), budget),
            FileRef::Files { dir, pattern } => {
                let glob = Pattern::new(pattern.as_str());
                let listed = base.join(dir);
                let entries = std::fs::read_dir(&listed)
                    .map_err(|e| format!("cannot list {}: {e}", listed.display()))?;
                // Names first; each file is then opened without following links, so a link
                // among them is refused by name rather than read or skipped in silence.
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| glob.matches(n))
                    .collect();
                if names.len() > MAX_FILES_PER_GLOB {
                    return Err(format!(
                        "{} matches {} files; a rule config glob may match at most \
                         {MAX_FILES_PER_GLOB}",
                        listed.join(pattern).display(),
                        names.len()
                    ));
                }
                names.sort();
                names
                    .iter()
                    .map(|n| read_one(&dir.join(n), &listed.join(n), budget))
                    .collect::<Result<Vec<_>, _>>()
                    .map(serde_json::Value::Array)
            }
        }
    }
}

/// Read a file a config names for medic to pass on (a rule's scripts), as if its directory
/// were hostile: the last component is not followed if it is a symbolic link (a link to
/// `/proc/kallsyms` or `/proc/self/pagemap`), only a regular file is read (a FIFO would block,
/// a device never end: the open does not wait, `O_NONBLOCK`), it must be owned by medic's user
/// or root and writable by no one else (the native cache's rule), and at most `max` bytes are
/// read whatever its size claims.
pub fn read_named_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!("{shown} is a symbolic link: not followed"),
            _ => format!("cannot read {shown}: {e}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{shown} is owned by uid {}, neither medic's ({me}) nor root's",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{shown} is larger than {max} bytes"));
    }
    Ok(bytes)
}

/// `written` is the path as the config has it (what the rule is told), `path` where it is.
fn read_one(written: &Path, path: &Path, budget: &mut Budget) -> Result<serde_json::Value, String> {
    let max = MAX_FILE_BYTES.min(budget.0);
    let bytes = read_named_file(path, max).map_err(|why| {
        if why.contains("larger than") && max < MAX_FILE_BYTES {
            format!(
                "{}: the files of one rule config may hold at most {MAX_TOTAL_BYTES} bytes \
                 together",
                path.display()
            )
        } else if why.contains("larger than") {
            format!(
                "{} is larger than {MAX_FILE_BYTES} bytes; a rule config file may have at most \
                 {MAX_FILE_BYTES}",
                path.display()
            )
        } else {
            why
        }
    })?;
    budget.0 -= bytes.len() as u64;
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
/// replaced by what they read, all of them within one `Budget`.
pub fn resolve(value: &toml::Value, base: &Path) -> Result<serde_json::Value, String> {
    resolve_within(value, base, &mut Budget::default())
}

fn resolve_within(
    value: &toml::Value,
    base: &Path,
    budget: &mut Budget,
) -> Result<serde_json::Value, String> {
    Ok(match value {
        toml::Value::Table(t) => match FileRef::of(t) {
            Some(r) => r.read(base, budget)?,
            None => serde_json::Value::Object(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), resolve_within(v, base, budget)?)))
                    .collect::<Result<_, String>>()?,
            ),
        },
        toml::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|v| resolve_within(v, base, budget))
                .collect::<Result<_, _>>()?,
        ),
        other => serde_json::to_value(other).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.unwrap().success(), "mkfifo {}", path.display());
    }

    #[test]
    fn named_files_are_read_only_when_regular_private_and_small() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.lua");
        std::fs::write(&ok, "return 1").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_named_file(&ok, 100).unwrap(), b"return 1");
        let link = dir.path().join("link.lua");
        std::os::unix::fs::symlink("/proc/kallsyms", &link).unwrap();
        let why = read_named_file(&link, 100).unwrap_err();
        assert!(why.contains("symbolic link: not followed"), "{why}");
        let fifo = dir.path().join("fifo.lua");
        mkfifo(&fifo);
        let why = read_named_file(&fifo, 100).unwrap_err();
        assert!(why.contains("not a regular file"), "{why}");
        assert!(
            read_named_file(&ok, 3)
                .unwrap_err()
                .contains("larger than 3 bytes")
        );
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = read_named_file(&ok, 100).unwrap_err();
        assert!(why.contains("writable by group or others"), "{why}");
    }

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
        let err = missing
            .read(dir.path(), &mut Budget::default())
            .unwrap_err();
        assert!(
            err.contains("cannot read") && err.contains("gone.lua"),
            "{err}"
        );
        let big = dir.path().join("big.lua");
        std::fs::write(&big, vec![b'-'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = FileRef::File(big)
            .read(Path::new("/"), &mut Budget::default())
            .unwrap_err();
        assert!(err.contains("a rule config file may have at most"), "{err}");
    }

    #[test]
    fn links_fifos_and_too_much_in_all_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.lua"), "return 1").unwrap();
        std::os::unix::fs::symlink("/proc/kallsyms", dir.path().join("k.lua")).unwrap();
        let all = FileRef::Files {
            dir: "".into(),
            pattern: "*.lua".into(),
        };
        let err = all.read(dir.path(), &mut Budget::default()).unwrap_err();
        assert!(err.contains("k.lua is a symbolic link"), "{err}");
        std::fs::remove_file(dir.path().join("k.lua")).unwrap();
        let fifo = dir.path().join("f.lua");
        mkfifo(&fifo);
        let err = all.read(dir.path(), &mut Budget::default()).unwrap_err();
        assert!(err.contains("f.lua is not a regular file"), "{err}");
        std::fs::remove_file(dir.path().join("f.lua")).unwrap();
        for i in 0..=MAX_FILES_PER_GLOB {
            std::fs::write(dir.path().join(format!("{i}.lua")), "").unwrap();
        }
        let err = all.read(dir.path(), &mut Budget::default()).unwrap_err();
        assert!(err.contains("may match at most 256"), "{err}");
        let one = FileRef::File("a.lua".into());
        let err = one.read(dir.path(), &mut Budget(4)).unwrap_err();
        assert!(err.contains("may hold at most"), "{err}");
    }
}
