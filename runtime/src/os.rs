//! What medic asks of the operating system for itself: files only its own user can read or
//! change (it runs commands as root and maps compiled rules as native code), and enough file
//! descriptors that a flood of clients cannot keep it from spawning a recovery command.
//!
//! medic leaves the process umask as it was started with, so the commands it runs inherit it
//! without a `pre_exec` (which would make the standard library fork medic's whole address space
//! instead of using `posix_spawn`: 2-3 ms per command). Every file medic creates for itself
//! gets its mode explicitly instead ([`create_private_file`], [`own_private_dir`]).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A directory that is medic's alone (the compiled-rule cache): created if needed and made
/// 0700 whatever it was before.
pub fn own_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // chmod follows links: a link put in its place must not make medic close another directory.
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(io::Error::other(format!(
            "{} is a symbolic link, not medic's own directory",
            dir.display()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A directory the operator names (`state_dir`): made 0700 when medic creates it. One that
/// exists already is left as it is, with a warning when others can look into it; one others
/// can write to is refused (they could put links where medic's files go, or swap its database).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return own_private_dir(dir);
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is mode {mode:o}: other users can write to medic's state directory; \
             `chmod 700` it",
            dir.display()
        )));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            "directory is mode {mode:o}: other users can look into medic's state; `chmod 700` it"
        );
    }
    Ok(())
}

/// Create `file` (empty) with mode 0600 if it does not exist yet, so what is written to it later
/// is never readable by others, whatever the umask. An existing file is left as it is.
pub fn create_private_file(file: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map(drop)
}

/// Write `content` to a new file of mode 0600 (replacing any file of that name).
pub fn write_private_file(file: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?
        .write_all(content)
}

/// Make an existing file 0600 (a database made by an older medic, or a WAL file SQLite made
/// before the database file was private).
/// Not through a link (chmod would follow it to whatever it names).
pub fn private_file(file: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(file);
    match opened {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
    }
}

/// Why `path` cannot be trusted to hold what only medic wrote: owned by another user, or
/// writable by group or others. `None` when it can.
pub fn untrusted(path: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Some(format!(
            "{} is owned by uid {}, not medic's uid {me}",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "{} is writable by group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    None
}

/// A write past `RLIMIT_FSIZE` fails with an error medic reports, instead of killing it with
/// SIGXFSZ. The signal is caught by a handler that does nothing rather than ignored: a caught
/// signal goes back to its default at exec, so the commands medic runs get the default without
/// code in the child.
pub fn catch_file_size_signal() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    extern "C" fn nothing(_: libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(nothing),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe, and it replaces only the
    // disposition of SIGXFSZ, which nothing else in medic handles.
    unsafe { sigaction(Signal::SIGXFSZ, &action) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Raise the soft limit on open files to the hard limit; returns the limit in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// One malloc arena for the whole daemon, unless `MALLOC_ARENA_MAX` says otherwise. glibc gives
/// each thread that meets contention an arena of its own, and what is freed there stays there
/// when it is fragmented: after a million series expired, medic stayed 25 % above where it
/// started with the default arenas (or two), and 5 % below with one (`series_memory` bench).
/// Under 300 000 values/s one arena cost no measurable CPU (87 % of a core against 92–100 %):
/// the per-thread caches in front of the arena take most allocations without its lock.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Hand freed heap pages back to the kernel. glibc keeps freed memory inside its arenas for
/// reuse; after a large table shrinks (a flood of series that expired) that would leave medic's
/// RSS at its high-water mark for good.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The uid and gid a command runs as: `user`'s, with `group` (a name) instead of its primary
/// group when given; `user` absent keeps medic's own uid.
pub fn account(user: Option<&str>, group: Option<&str>) -> io::Result<(Option<u32>, Option<u32>)> {
    let mut uid = None;
    let mut gid = None;
    if let Some(name) = user {
        let (u, g) = lookup_user(name)?;
        uid = Some(u);
        gid = Some(g);
    }
    if let Some(name) = group {
        gid = Some(lookup_group(name)?);
    }
    Ok((uid, gid))
}

/// Whether medic may change a command's user or group.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn lookup_user(name: &str) -> io::Result<(u32, u32)> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user `{name}`"),
        )),
        Err(e) => Err(e.into()),
    }
}

fn lookup_group(name: &str) -> io::Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group `{name}`"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_and_the_trust_check() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(untrusted(&state), None);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = untrusted(&state).unwrap();
        assert!(
            why.contains("writable by group or others (mode 777)"),
            "{why}"
        );
        // An existing directory the operator named that others may write to is refused...
        let why = private_dir(&state).unwrap_err().to_string();
        assert!(why.contains("other users can write"), "{why}");
        assert_eq!(mode(&state), 0o777, "and left as it is");
        // ...one they may only look into is taken, with a warning.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o755);
        // ...medic's own is closed again.
        own_private_dir(&state).unwrap();
        assert_eq!(untrusted(&state), None);
        assert!(untrusted(&dir.path().join("missing")).is_some());
    }

    #[test]
    fn the_descriptor_limit_only_goes_up() {
        let (before, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_nofile_limit().unwrap() >= before);
    }
}
