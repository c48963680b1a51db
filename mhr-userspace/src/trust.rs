//! Strict modes, as sshd's `StrictModes`: mhr (as root) refuses a config
//! file or state directory that anyone but root (or the user running mhr)
//! could change, since whoever can write them decides the host's routing.
//! The path itself and every directory above it must be owned by root or
//! by the effective user, and not be writable by group or others. A
//! directory above may be world-writable if it is sticky (`/tmp`): there
//! nobody can replace an entry owned by someone else. Write bits do not
//! count on a read-only mount (a Kubernetes pod's config volume mounted
//! `readOnly`, whose directory is 0777): nothing writes through it.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("checking who can write {path}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Stat { path: PathBuf, errno: i32 },
    #[error(
        "{path} is writable by {whom} (mode {mode:04o}), so others could change mhr's routing; mhr refuses it: run `chmod go-w {path}`"
    )]
    Writable { path: PathBuf, whom: &'static str, mode: u32 },
    #[error(
        "{path} is owned by uid {owner}, not root, so that user could change mhr's routing; mhr refuses it: run `chown root {path}`"
    )]
    Owner { path: PathBuf, owner: u32 },
}

/// Checks `path` (a config file or a state directory, which must exist)
/// and every directory above it, symbolic links resolved.
pub fn check(path: &Path) -> Result<(), TrustError> {
    let stat_error = |path: &Path, err: std::io::Error| TrustError::Stat {
        path: path.to_owned(),
        errno: err.raw_os_error().unwrap_or(libc::EIO),
    };
    let real = std::fs::canonicalize(path).map_err(|err| stat_error(path, err))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for (depth, item) in real.ancestors().enumerate() {
        let metadata = std::fs::metadata(item).map_err(|err| stat_error(item, err))?;
        let mode = if read_only(item) { metadata.mode() & !0o022 } else { metadata.mode() };
        check_one(item, metadata.uid(), mode, metadata.is_dir() && depth > 0, euid)?;
    }
    Ok(())
}

/// Whether `path` is on a read-only mount (unknown: no).
fn read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|stat| stat.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// One path: its owner and mode. `above` marks a directory above the path
/// checked, where a sticky world-writable directory is accepted.
fn check_one(path: &Path, owner: u32, mode: u32, above: bool, euid: u32) -> Result<(), TrustError> {
    if owner != 0 && owner != euid {
        return Err(TrustError::Owner { path: path.to_owned(), owner });
    }
    if above && mode & libc::S_ISVTX != 0 {
        return Ok(());
    }
    let whom = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and by others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => return Ok(()),
    };
    Err(TrustError::Writable { path: path.to_owned(), whom, mode: mode & 0o7777 })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private directory holding `mhr.toml` (0600), as `mhr init` leaves it.
    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let file = dir.path().join("mhr.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o600);
        (dir, file)
    }

    #[test]
    fn a_file_and_directory_only_their_owner_writes_are_accepted() {
        let (dir, file) = setup();
        check(&file).unwrap();
        check(dir.path()).unwrap();
        chmod(&file, 0o644);
        check(&file).unwrap();
    }

    #[test]
    fn a_group_or_world_writable_file_is_refused_naming_the_path_and_the_fix() {
        let (_dir, file) = setup();
        let real = std::fs::canonicalize(&file).unwrap();
        for (mode, whom) in [(0o620, "its group"), (0o602, "others"), (0o666, "its group and by others")] {
            chmod(&file, mode);
            let err = check(&file).unwrap_err();
            assert_eq!(err, TrustError::Writable { path: real.clone(), whom, mode });
            let message = err.to_string();
            assert!(message.contains(&real.display().to_string()), "{message}");
            assert!(message.contains(&format!("chmod go-w {}", real.display())), "{message}");
        }
    }

    #[test]
    fn a_writable_directory_above_is_refused_unless_it_is_sticky() {
        let (dir, file) = setup();
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        chmod(dir.path(), 0o777);
        assert!(matches!(check(&file), Err(TrustError::Writable { path, .. }) if path == real_dir));
        chmod(dir.path(), 0o1777);
        check(&file).unwrap();
        chmod(dir.path(), 0o1775);
        check(&file).unwrap();
        // The state directory itself may not be world-writable, sticky or not.
        assert!(matches!(check(dir.path()), Err(TrustError::Writable { path, .. }) if path == real_dir));
    }

    #[test]
    fn a_symbolic_link_is_checked_where_it_points() {
        let (dir, file) = setup();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        check(&link).unwrap();
        chmod(&file, 0o666);
        assert!(matches!(check(&link), Err(TrustError::Writable { .. })));
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let (dir, _) = setup();
        let missing = dir.path().join("missing");
        let err = check(&missing).unwrap_err();
        assert!(matches!(&err, TrustError::Stat { path, .. } if *path == missing), "{err}");
    }

    /// Another uid than root and the caller: refused, with `chown` as the
    /// fix. Needs root to give the file away, like the privileged tests.
    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Without root the ownership rule is shown on plain values.
            let err = check_one(Path::new("/x"), 4242, 0o600, false, 1000).unwrap_err();
            assert_eq!(err, TrustError::Owner { path: PathBuf::from("/x"), owner: 4242 });
            return;
        }
        let (_dir, file) = setup();
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        let err = check(&file).unwrap_err();
        let real = std::fs::canonicalize(&file).unwrap();
        assert_eq!(err, TrustError::Owner { path: real.clone(), owner: 4242 });
        assert!(err.to_string().contains(&format!("chown root {}", real.display())), "{err}");
    }

    #[test]
    fn config_load_refuses_a_config_others_can_write() {
        let (_dir, file) = setup();
        std::fs::write(&file, "[[uplink]]\ninterface = \"a\"\nprimary = true\n").unwrap();
        crate::config::Config::load(&file).unwrap();
        chmod(&file, 0o646);
        let err = crate::config::Config::load(&file).unwrap_err();
        assert!(matches!(err, crate::config::ConfigError::Untrusted(TrustError::Writable { .. })), "{err}");
    }

    #[test]
    fn the_state_directory_lock_refuses_a_directory_others_can_write() {
        let (dir, _) = setup();
        let state = dir.path().join("state");
        let lock = |wait| crate::lock::acquire(&state, crate::lock::Role::Apply, wait);
        drop(lock(std::time::Duration::ZERO).unwrap());
        chmod(&state, 0o775);
        let err = lock(std::time::Duration::ZERO).unwrap_err();
        assert!(matches!(err, crate::lock::LockError::Untrusted(TrustError::Writable { .. })), "{err}");
    }

    #[test]
    fn the_running_user_may_own_its_files() {
        check_one(Path::new("/home/a/mhr.toml"), 1000, 0o600, false, 1000).unwrap();
        check_one(Path::new("/etc/mhr/mhr.toml"), 0, 0o644, false, 1000).unwrap();
    }
}
