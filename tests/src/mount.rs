//! A tmpfs mounted over a test's own directory (never a path of the
//! machine's), unmounted when dropped: a full disk, a read-only one.

use std::path::{Path, PathBuf};

pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(path: &Path) -> Self {
        Self::with_options(path, "rw")
    }

    pub fn read_only_tmpfs(path: &Path) -> Self {
        Self::with_options(path, "ro")
    }

    /// A tmpfs of `bytes` (rounded up to pages), to be filled.
    pub fn sized_tmpfs(path: &Path, bytes: usize) -> Self {
        Self::with_options(path, &format!("size={bytes}"))
    }

    /// Mode 0755, as a state directory must be: a tmpfs root is 1777 by
    /// default, which mhr's strict modes refuse (`mhr_userspace::trust`).
    fn with_options(path: &Path, options: &str) -> Self {
        let options = format!("{options},mode=0755");
        let options = options.as_str();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "mhr-test"])
            .arg(path)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "mount tmpfs ({options}) on {}", path.display());
        Self(path.to_owned())
    }

    /// Fills the file system with one file (`filler`) until it is full.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;

        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("creating the filler");
        let block = [0u8; 4096];
        while file.write_all(&block).is_ok() {}
        filler
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
