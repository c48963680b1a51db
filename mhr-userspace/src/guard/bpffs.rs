//! The pin directory's file system: bpffs, and the maps pinned there.

use std::path::Path;

use aya::maps::MapData;

use super::{GuardError, PinLayout, pins, versions};

/// A handle on every map pinned in `dir`, by file name.
pub(super) fn open_pinned_maps(dir: &Path) -> Result<Vec<(String, MapData)>, GuardError> {
    let entries =
        std::fs::read_dir(dir).map_err(|source| GuardError::PinDir { path: dir.to_owned(), source })?;
    let mut maps = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let map =
            MapData::from_pin(&path).map_err(|source| GuardError::OpenPin { path: path.clone(), source })?;
        maps.push((entry.file_name().to_string_lossy().into_owned(), map));
    }
    Ok(maps)
}

/// bpffs's `statfs` magic number.
const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;

/// Refuses a `pin_dir` whose nearest existing ancestor is not on a bpffs,
/// before anything is created there.
pub(super) fn ensure_bpffs(pin_dir: &Path) -> Result<(), GuardError> {
    use std::os::unix::ffi::OsStrExt as _;
    let existing = pin_dir.ancestors().find(|dir| dir.exists()).unwrap_or(Path::new("/"));
    let not_bpffs = || GuardError::NotBpffs { path: pin_dir.to_owned(), found: existing.to_owned() };
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).map_err(|_| not_bpffs())?;
    // SAFETY: statfs(2) fills the zeroed struct; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    if result != 0 || stat.f_type as libc::c_long != BPF_FS_MAGIC {
        return Err(not_bpffs());
    }
    Ok(())
}

/// Puts right what would make the pins under `pin_dir` lie: detaches and
/// removes trees of other layout versions, and removes stale maps from
/// this version's (the loader then creates them anew). Returns one line
/// for each, also logged.
pub(super) fn check_pins(
    pin_dir: &Path,
    layout: &PinLayout,
    object: &[u8],
) -> Result<Vec<String>, GuardError> {
    let mut notes = Vec::new();
    for line in versions::remove_other_versions(pin_dir)? {
        tracing::warn!(pins = %line, "another layout version's guard removed");
        notes.push(format!("another layout version's guard: {line}"));
    }
    for pin in pins::replace_stale(&layout.maps(), &layout.links(), object)? {
        tracing::warn!(pin = %pin.path().display(), "{pin}; replaced it with a new map");
        notes.push(format!("{pin}; replaced it with a new map (its contents are gone)"));
    }
    Ok(notes)
}
