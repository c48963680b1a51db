//! Pin trees mhr no longer reads: those of other layout versions (an older
//! or newer mhr's `PIN_DIR/v0`, …) and, for `down --purge-pins`, anything
//! under the pin directory. Unpinning alone would not stop their program
//! (a process may hold its link, a clsact filter has no pin), so every
//! link and clsact filter that runs a program of the tree is detached
//! first, on any interface of the namespace.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use aya::programs::{loaded_links, loaded_programs};

use super::{
    GuardError, clsact,
    sys::{self, Pinned},
};

/// The layout version directories (`v<N>`) under `pin_dir` other than
/// this build's.
pub fn other_versions(pin_dir: &Path) -> Vec<PathBuf> {
    let current = crate::paths::pin_layout(pin_dir);
    let current = current.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let is_version = |name: &str| {
        name.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name != current && is_version(&name) && entry.path().is_dir()
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

/// Detaches and removes every tree of another layout version under
/// `pin_dir`. Returns what was done, one line each.
pub fn remove_other_versions(pin_dir: &Path) -> Result<Vec<String>, GuardError> {
    let mut done = Vec::new();
    for tree in other_versions(pin_dir) {
        done.extend(remove_tree(&tree)?);
    }
    Ok(done)
}

/// Removes everything under `pin_dir` (any version, anything else), the
/// directory itself, and mhr guard filters on every interface.
pub fn purge(pin_dir: &Path) -> Result<Vec<String>, GuardError> {
    let mut done = Vec::new();
    if let Ok(entries) = std::fs::read_dir(pin_dir) {
        for entry in entries.flatten() {
            done.extend(remove_tree(&entry.path())?);
        }
    }
    for ifindex in sys::interfaces() {
        let interface = sys::interface_name(ifindex);
        if clsact::detach_all(&interface, ifindex) {
            done.push(format!("removed the guard's clsact filter on {interface}"));
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(GuardError::OtherVersion { path: pin_dir.to_owned(), source })
        }
        _ => Ok(done),
    }
}

/// What a tree holds.
#[derive(Default)]
struct Tree {
    maps: BTreeSet<u32>,
    programs: BTreeSet<u32>,
}

fn walk(path: &Path, tree: &mut Tree) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            walk(&entry.path(), tree);
        }
        return;
    }
    match sys::inspect(path) {
        Ok((Pinned::Map { id }, _)) => {
            tree.maps.insert(id);
        }
        Ok((Pinned::Program { id }, _)) => {
            tree.programs.insert(id);
        }
        Ok((Pinned::Link(link), _)) => {
            tree.programs.insert(link.program_id);
        }
        Ok((Pinned::Other, _)) | Err(_) => {}
    }
}

/// Detaches everything that runs a program of the tree at `path` (pinned
/// there, behind a link pinned there, or using a map pinned there), then
/// removes the tree.
pub fn remove_tree(path: &Path) -> Result<Vec<String>, GuardError> {
    let mut tree = Tree::default();
    walk(path, &mut tree);
    let uses_tree_map =
        |ids: Option<Vec<u32>>| ids.is_some_and(|ids| ids.iter().any(|id| tree.maps.contains(id)));
    let users: Vec<u32> = loaded_programs()
        .flatten()
        .filter(|program| uses_tree_map(program.map_ids().ok().flatten()))
        .map(|program| program.id())
        .collect();
    tree.programs.extend(users);
    let mut done = Vec::new();
    let failed = |source| GuardError::OtherVersion { path: path.to_owned(), source };
    for link in loaded_links().flatten().filter(|link| tree.programs.contains(&link.program_id())) {
        let (info, fd) = sys::link_by_id(link.id()).map_err(failed)?;
        sys::link_detach(&fd).map_err(failed)?;
        let place =
            info.tcx_ifindex.map_or(String::new(), |ifindex| format!(" on {}", sys::interface_name(ifindex)));
        done.push(format!("detached link {} (program {}){place}", info.id, info.program_id));
    }
    for ifindex in sys::interfaces() {
        let interface = sys::interface_name(ifindex);
        for program in clsact::detach_programs(&interface, ifindex, &tree.programs) {
            done.push(format!("removed the clsact filter of program {program} on {interface}"));
        }
    }
    let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    removed.map_err(failed)?;
    done.push(format!("removed {}", path.display()));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use mhr_common::guard::MAP_LAYOUT_VERSION;

    use super::*;

    #[test]
    fn other_versions_are_the_v_number_directories_but_this_builds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(MAP_LAYOUT_VERSION, 2, "the names below are around this version");
        for name in ["v0", "v1", "v10", "maps", "v", "vx1", &format!("v{MAP_LAYOUT_VERSION}")] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("v3"), b"").unwrap();
        let found: Vec<String> = other_versions(dir.path())
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["v0", "v1", "v10"]);
    }
}
