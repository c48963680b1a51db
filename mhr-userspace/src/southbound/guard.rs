//! The guard's side of the southbound: what the daemon asks of a loaded
//! guard (its bpf maps and TC links). [`crate::guard::Guard`] is the real
//! one; the kernel model has one that records what it was told.

use std::collections::BTreeSet;

use crate::{
    guard::{GuardAttachment, GuardError, GuardUplink, flags::FlagSource},
    tc::AttachMode,
};

/// A loaded guard.
pub trait GuardPlane: Send {
    /// Makes the maps describe exactly `uplinks`.
    fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<(), GuardError>;
    /// Pins again what someone removed; names what was repinned.
    fn repair_pins(&mut self) -> Result<Vec<String>, GuardError>;
    /// Forgets links the kernel no longer runs; their pin names.
    fn forget_detached(&mut self) -> Vec<String>;
    /// Pin names (`interface@ifindex`) of the links this instance holds.
    fn held_pins(&self) -> BTreeSet<String>;
    /// Attaches where the guard is missing (new or re-created interfaces,
    /// links someone removed).
    fn attach_missing(
        &mut self,
        uplinks: &[GuardUplink],
        mode: AttachMode,
    ) -> Result<Vec<GuardAttachment>, GuardError>;
    /// Whether the kernel runs this instance's program on `interface`.
    fn attached_in_kernel(&mut self, interface: &str) -> bool;
    /// Whether any guard program (an earlier instance's too) runs on
    /// `interface`; None when that cannot be told.
    fn any_guard_runs(&self, interface: &str) -> Option<bool>;
    /// Whether this instance holds a link on `interface`.
    fn holds(&self, interface: &str) -> bool;
    /// Whether every pin is where it belongs.
    fn pins_intact(&self) -> bool;
}

/// A guard just loaded, and where its flagged packets come from (none in
/// the model).
pub struct LoadedGuard {
    pub plane: Box<dyn GuardPlane>,
    pub flags: Option<FlagSource>,
}
