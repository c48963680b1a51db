//! One writer at a time: an advisory lock (flock) on `state_dir/lock`.
//! `apply` and `down` hold it while they change the host; `mhr run` holds
//! it for as long as it runs, since it owns the host's routing then. The
//! kernel drops the lock when its holder dies (kill -9 included), so it is
//! never stale. The file names the holder, for the one who is refused.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How long `apply`/`down` wait for another `apply`/`down` to finish.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// What the holder does, as written in the lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Apply,
    Down,
    Run,
    Confirm,
    /// The guardian rolling back an unconfirmed change.
    Rollback,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Down => "down",
            Self::Run => "run",
            Self::Confirm => "confirm",
            Self::Rollback => "rollback",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("opening the lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "mhr run ({holder}) keeps this host's routing; stop it first (e.g. `systemctl stop mhr`), then run this again"
    )]
    DaemonRunning { holder: String },
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    #[error("another mhr ({holder}) is applying (waited {waited:?}); try again when it is done")]
    Busy { holder: String, waited: Duration },
}

/// Held until dropped.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Still locked here: a waiter never reads a holder that is gone.
        let _ = self.file.set_len(0);
    }
}

pub fn lock_path(state_dir: &Path) -> PathBuf {
    crate::paths::writer_lock(state_dir)
}

/// Takes the lock for `role`, waiting up to `wait` for another `apply` or
/// `down`; a running `mhr run` is refused at once (it holds the lock for
/// good).
pub fn acquire(state_dir: &Path, role: Role, wait: Duration) -> Result<WriterLock, LockError> {
    let path = lock_path(state_dir);
    let open_error = |source| LockError::Open { path: path.clone(), source };
    std::fs::create_dir_all(state_dir).map_err(open_error)?;
    // Whoever can write the state directory can forge mhr's records of what it owns.
    crate::trust::check(state_dir)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(open_error)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if holder.ends_with(&format!(" {}", Role::Run.as_str())) {
                    return Err(LockError::DaemonRunning { holder: describe(&holder) });
                }
                if start.elapsed() >= wait {
                    return Err(LockError::Busy { holder: describe(&holder), waited: wait });
                }
                std::thread::sleep(POLL);
            }
            Err(TryLockError::Error(source)) => return Err(open_error(source)),
        }
    }
    // Who holds it: "<pid> <role>". Best effort: the lock is what counts.
    let record = format!("{} {}\n", std::process::id(), role.as_str());
    let _ = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(record.as_bytes()));
    Ok(WriterLock { file })
}

/// The lock file's record of its holder ("<pid> <role>"), or "" if unreadable.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.take(64).read_to_string(&mut text));
    text.trim().to_owned()
}

fn describe(record: &str) -> String {
    match record.split_once(' ') {
        Some((pid, role)) => format!("pid {pid}, mhr {role}"),
        None => "pid unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_then_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Role::Apply, WAIT).unwrap();
        let start = Instant::now();
        let err = acquire(dir.path(), Role::Down, Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(200), "it waited");
        let message = err.to_string();
        assert!(message.contains(&format!("pid {}, mhr apply", std::process::id())), "{message}");
        drop(held);
        acquire(dir.path(), Role::Down, Duration::ZERO).expect("free once the holder is gone");
    }

    #[test]
    fn a_running_daemon_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _daemon = acquire(dir.path(), Role::Run, WAIT).unwrap();
        let start = Instant::now();
        let err = acquire(dir.path(), Role::Apply, WAIT).unwrap_err();
        assert!(start.elapsed() < WAIT / 2, "no waiting for a daemon");
        assert!(matches!(err, LockError::DaemonRunning { .. }), "{err}");
        assert!(err.to_string().contains("mhr run"), "{err}");
    }

    #[test]
    fn the_lock_file_is_not_followed_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, lock_path(dir.path())).unwrap();
        assert!(matches!(acquire(dir.path(), Role::Apply, WAIT), Err(LockError::Open { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}
