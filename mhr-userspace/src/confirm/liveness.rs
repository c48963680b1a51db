//! Whether a pending change's guardian still runs: it holds an exclusive
//! flock on `state_dir/confirm-guardian-<id>.lock` for its whole life, and
//! the kernel drops that lock when it dies (kill -9 and reboots included).
//! Unlike the pid and command line this used to check, a lock means the
//! same thing in every PID namespace (a container, or a host looking at a
//! guardian in one) and cannot be mistaken for a process that reused the pid.
//!
//! The applying process takes the lock before it writes the pending record
//! and hands the locked file to the guardian across fork and exec (the
//! descriptor is inherited; a flock belongs to the open file, not to a
//! process), then closes its own copy. So from the record's first write on,
//! the lock is held without a gap: by the applying process until the
//! guardian exists, by the guardian after. The alternative, the guardian
//! taking the lock itself while the parent waits for it, leaves a window in
//! which the record exists and nobody holds the lock, and needs a timeout.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, RawFd},
        unix::{fs::MetadataExt as _, fs::OpenOptionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::Command,
};

/// The file whose lock is the liveness of the guardian of change `id`.
pub fn lock_path(state_dir: &Path, id: &str) -> PathBuf {
    crate::paths::guardian_lock(state_dir, id)
}

#[derive(Debug, thiserror::Error)]
pub enum GuardianLockError {
    #[error("locking {path} for the confirmation guardian")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is locked already: another guardian watches change {id}")]
    Held { path: PathBuf, id: String },
    #[error("descriptor {fd} handed to the guardian is not the locked {path}")]
    NotTheLock { fd: RawFd, path: PathBuf },
}

/// Whether the guardian of change `id` runs: whether its lock is held. An
/// absent file or a lock this call could take (and releases at once) is a
/// guardian that is gone. When the file cannot be checked at all, the
/// answer is "gone" too: a rollback that finds the change already rolled
/// back (both run under the writer lock and re-read the record) is
/// harmless; an unconfirmed change that nobody rolls back is not.
pub fn guardian_alive(state_dir: &Path, id: &str) -> bool {
    let Ok(file) = File::open(lock_path(state_dir, id)) else { return false };
    match file.try_lock() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(err)) => {
            tracing::warn!(error = %crate::Chain(&err), id, "checking the confirmation guardian's lock failed; taking it as gone");
            false
        }
    }
}

/// Takes the guardian's lock for change `id`, for the applying process to
/// hold until it hands it to the guardian ([`hand_over`]).
pub fn take(state_dir: &Path, id: &str) -> Result<File, GuardianLockError> {
    let path = lock_path(state_dir, id);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|source| GuardianLockError::Lock { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(GuardianLockError::Held { path, id: id.to_owned() }),
        Err(TryLockError::Error(source)) => Err(GuardianLockError::Lock { path, source }),
    }
}

/// Lets the process `command` starts inherit `lock` and returns the
/// descriptor number it has there. Only the child clears close-on-exec
/// (between fork and exec): whatever else this process starts meanwhile
/// does not inherit the lock. The caller closes its copy once the child
/// runs, so that the lock lives exactly as long as the child (and
/// whatever the child hands it to).
pub fn hand_over(command: &mut Command, lock: &File) -> RawFd {
    let fd = lock.as_raw_fd();
    // SAFETY: fcntl(2) is async-signal-safe and touches only this
    // descriptor, which the parent keeps open until the child has started.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    fd
}

/// The guardian's side: takes the inherited descriptor `fd` back as the
/// lock of change `id`, checks that it is that lock and that it is held,
/// and marks it close-on-exec again (nothing the guardian starts may keep
/// it past the guardian's death). Keep the file for the process's life.
pub fn adopt(state_dir: &Path, id: &str, fd: RawFd) -> Result<File, GuardianLockError> {
    let path = lock_path(state_dir, id);
    let not_the_lock = || GuardianLockError::NotTheLock { fd, path: path.clone() };
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed or
    // invalid number fails with EBADF and is refused before it is owned.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(not_the_lock());
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process
    // for it alone (hand_over); nothing else here owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: sets a flag on the descriptor this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let held = file.metadata().ok();
    let named = std::fs::metadata(&path).ok();
    let same = matches!((&held, &named), (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino());
    if !same || !guardian_alive(state_dir, id) {
        return Err(not_the_lock());
    }
    Ok(file)
}

/// Removes the lock file of change `id` once its record is gone (best
/// effort: a file left behind is an unlocked one, which reads as gone).
pub fn remove(state_dir: &Path, id: &str) {
    let _ = std::fs::remove_file(lock_path(state_dir, id));
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[test]
    fn a_held_lock_is_a_live_guardian_and_a_free_or_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!guardian_alive(dir.path(), "1-2"), "no lock file: no guardian");
        let held = take(dir.path(), "1-2").unwrap();
        assert!(guardian_alive(dir.path(), "1-2"), "another open file holds the lock");
        // The check released what it looked at: still held, and still
        // alive when asked again.
        assert!(guardian_alive(dir.path(), "1-2"));
        assert!(matches!(take(dir.path(), "1-2"), Err(GuardianLockError::Held { .. })));
        assert!(!guardian_alive(dir.path(), "3-4"), "another change's guardian");
        drop(held);
        assert!(!guardian_alive(dir.path(), "1-2"), "the holder closed it: gone");
        // A lock file left behind by a guardian that died is not a guardian.
        assert!(lock_path(dir.path(), "1-2").exists());
        assert!(!guardian_alive(dir.path(), "1-2"));
    }

    #[test]
    fn the_lock_lives_as_long_as_the_process_it_was_handed_to() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(dir.path(), "7-8").unwrap();
        let mut command = Command::new("sleep");
        command.arg("60").stdin(Stdio::null());
        let fd = hand_over(&mut command, &lock);
        assert!(fd >= 0);
        let mut child = command.spawn().unwrap();
        drop(lock);
        // Whatever pid the child has in whatever namespace: its lock says
        // it runs.
        assert!(guardian_alive(dir.path(), "7-8"), "the child holds the lock");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!guardian_alive(dir.path(), "7-8"), "the child died: its lock went with it");
    }

    #[test]
    fn the_guardian_adopts_the_held_lock_it_inherited_and_closes_it_on_exec() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(dir.path(), "9-1").unwrap();
        // What the guardian inherits: the same open lock, close-on-exec
        // cleared (dup(2) clears it, as hand_over does in the child).
        // SAFETY: dup(2) of an open descriptor.
        let inherited = unsafe { libc::dup(lock.as_raw_fd()) };
        // SAFETY: F_GETFD reads the flags of a descriptor this test owns.
        assert_eq!(unsafe { libc::fcntl(inherited, libc::F_GETFD) }, 0, "inherited without FD_CLOEXEC");
        let adopted = adopt(dir.path(), "9-1", inherited).expect("the held lock of this change is adopted");
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(adopted.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "nothing the guardian starts keeps it");
        drop(lock);
        assert!(guardian_alive(dir.path(), "9-1"), "the adopted descriptor holds the lock alone");
        drop(adopted);
        assert!(!guardian_alive(dir.path(), "9-1"));
    }

    #[test]
    fn the_lock_file_opened_but_not_held_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(take(dir.path(), "9-2").unwrap());
        // The right file, but nobody holds its lock: the applying process
        // died before the guardian started.
        let unheld = File::open(lock_path(dir.path(), "9-2")).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(unheld);
        assert!(matches!(adopt(dir.path(), "9-2", fd), Err(GuardianLockError::NotTheLock { .. })));
    }

    #[test]
    fn a_descriptor_that_is_not_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = File::create(dir.path().join("other")).unwrap();
        let fd = other.as_raw_fd();
        // adopt would own `fd`: give it a duplicate of its own.
        // SAFETY: dup(2) of an open descriptor.
        let duplicate = unsafe { libc::dup(fd) };
        assert!(matches!(adopt(dir.path(), "5-6", duplicate), Err(GuardianLockError::NotTheLock { .. })));
        assert!(matches!(adopt(dir.path(), "5-6", 9999), Err(GuardianLockError::NotTheLock { .. })));
    }
}
