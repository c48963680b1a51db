//! Every file and directory mhr keeps at run time, named in one place.
//! Directories come from the config (`[routing] state_dir`,
//! `rt_tables_dir`, `[guard] pin_dir`); what lives in them is here.

use std::path::{Path, PathBuf};

use mhr_common::guard::MAP_LAYOUT_VERSION;

/// `rt_tables_dir/mhr.conf`: the names `ip` shows for mhr's tables.
pub fn table_names(rt_tables_dir: &Path) -> PathBuf {
    rt_tables_dir.join("mhr.conf")
}

/// Default routes earlier versions moved out of main, to put back.
pub fn moved_routes(state_dir: &Path) -> PathBuf {
    state_dir.join("moved-routes.json")
}

/// The uplinks' gateways, remembered for when no route names them.
pub fn gateways(state_dir: &Path) -> PathBuf {
    state_dir.join("gateways.json")
}

/// Drained uplinks (`mhr drain`), with when each drain ends.
pub fn drained(state_dir: &Path) -> PathBuf {
    state_dir.join("drained.json")
}

/// Serialises `mhr drain`/`undrain` (not the writer lock).
pub fn drained_lock(state_dir: &Path) -> PathBuf {
    state_dir.join("drained.lock")
}

/// The running daemon's health view (every round).
pub fn health(state_dir: &Path) -> PathBuf {
    state_dir.join("health.json")
}

/// The health view a daemon left when it stopped.
pub fn retired_health(state_dir: &Path) -> PathBuf {
    state_dir.join("health-last.json")
}

/// The writer lock `apply`, `down` and `run` hold.
pub fn writer_lock(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

/// The confirmation guardian's log (it runs detached: its lines go here).
pub fn confirm_log(state_dir: &Path) -> PathBuf {
    state_dir.join("confirm.log")
}

/// The change waiting for `mhr confirm`.
pub fn pending_confirm(state_dir: &Path) -> PathBuf {
    state_dir.join("pending-confirm.json")
}

/// The last change rolled back (or cancelled) instead of confirmed.
pub fn rolled_back(state_dir: &Path) -> PathBuf {
    state_dir.join("rolled-back.json")
}

/// The file whose lock is the liveness of change `id`'s guardian.
pub fn guardian_lock(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(format!("confirm-guardian-{id}.lock"))
}

/// This build's pin layout under `pin_dir`: `v<layout>`.
pub fn pin_layout(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{MAP_LAYOUT_VERSION}"))
}

/// The guard's pinned maps, under a layout directory.
pub fn pinned_maps(layout: &Path) -> PathBuf {
    layout.join("maps")
}

/// The guard's pinned TCX links, under a layout directory.
pub fn pinned_links(layout: &Path) -> PathBuf {
    layout.join("links")
}
