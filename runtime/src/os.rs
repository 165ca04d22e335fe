//! What medic asks of the operating system for itself: files only its own user can read or
//! change (it runs commands as root and maps compiled rules as native code), and enough file
//! descriptors that a flood of clients cannot keep it from spawning a recovery command.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The umask medic was started with, restored for the commands it runs.
static INHERITED_UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0o022);

/// New files and directories are private from here on (rw for medic's user only). Commands
/// medic runs get the umask it was started with back ([`inherited_umask`]): a recovery script
/// that writes a file should make it as it would outside medic.
pub fn private_umask() {
    // SAFETY: umask(2) only changes this process's file mode creation mask.
    let inherited = unsafe { libc::umask(0o077) };
    INHERITED_UMASK.store(inherited as u32, std::sync::atomic::Ordering::Relaxed);
}

pub fn inherited_umask() -> u32 {
    INHERITED_UMASK.load(std::sync::atomic::Ordering::Relaxed)
}

/// A directory that is medic's alone (the compiled-rule cache): created if needed and made
/// 0700 whatever it was before.
pub fn own_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A directory the operator names (`state_dir`): made 0700 when medic creates it. One that
/// exists already is left as it is (it may be shared, like `/var/tmp`), with a warning when
/// others can enter it.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return own_private_dir(dir);
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            "directory is mode {mode:o}: other users can look into medic's state; `chmod 700` it"
        );
    }
    Ok(())
}

/// Make an existing file 0600 (a database made before the umask was set, say).
pub fn private_file(file: &Path) -> io::Result<()> {
    match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Why `path` cannot be trusted to hold what only medic wrote: owned by another user, or
/// writable by group or others. `None` when it can.
pub fn untrusted(path: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
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
/// SIGXFSZ. Commands get the default back ([`restore_signals_in_child`]).
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// In a child between fork and exec: what medic changed for itself goes back to the defaults
/// (an ignored signal stays ignored across exec otherwise). Async-signal-safe.
pub fn restore_signals_in_child() {
    // SAFETY: signal(2) is async-signal-safe; called in the forked child before exec.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
    }
}

/// Raise the soft limit on open files to the hard limit; returns the limit in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
        // An existing directory the operator named is left alone (it may be shared)...
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o777);
        // ...medic's own is closed again.
        own_private_dir(&state).unwrap();
        assert_eq!(untrusted(&state), None);
        assert!(untrusted(&dir.path().join("missing")).is_some());
    }

    #[test]
    fn the_descriptor_limit_only_goes_up() {
        let before = unsafe {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur
        };
        assert!(raise_nofile_limit().unwrap() >= before);
    }
}
