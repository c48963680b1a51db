//! A directory removed when dropped.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{LabError, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(label: &str) -> Result<Self> {
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mhr-{label}-{}-{seq}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(LabError::io(format!("creating {}", path.display())))?;
        Ok(Self { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A bpffs directory that goes with this one (removed with it), for
    /// mhr's pinned guard maps and links.
    pub fn pin_dir(&self) -> PathBuf {
        pin_dir_for(&self.path)
    }

    /// Leaves the directory in place when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Every file below the directory, relative to it.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(relative) = path.strip_prefix(base) {
                    out.push(relative.to_owned());
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.path, &self.path, &mut files);
        files.sort();
        files
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
            // Unpinning detaches whatever a test left attached.
            let _ = std::fs::remove_dir_all(self.pin_dir());
        }
    }
}

/// The bpffs directory paired with `dir`: `/sys/fs/bpf/<dir's name>`.
pub fn pin_dir_for(dir: &Path) -> PathBuf {
    Path::new("/sys/fs/bpf").join(dir.file_name().unwrap_or_default())
}
