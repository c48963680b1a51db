//! The guard's side of the southbound: what the daemon asks of a loaded
//! guard (its bpf maps and TC links), as a trait. [`Guard`] is the real
//! one; the kernel model (`southbound::model`) has one that records what
//! it was told.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use super::tc::AttachMode;
use super::{Guard, GuardAttachment, GuardError, GuardMaps, GuardUplink, flags::FlagSource, tcp::TcpCounts};

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
    /// Attaches (`true`) or detaches the passive TCP tracepoints. Attaching
    /// needs the privileges of loading, so only before the sandbox.
    fn watch_tcp(&mut self, on: bool) -> Result<(), GuardError>;
    /// Whether the TCP tracepoints are attached.
    fn watches_tcp(&self) -> bool;
    /// Each uplink's TCP figures by interface (empty while the tracepoints
    /// never ran).
    fn tcp_counts(&self) -> Result<BTreeMap<String, TcpCounts>, GuardError>;
}

/// A guard just loaded, and where its flagged packets come from (none in
/// the model).
pub struct LoadedGuard {
    pub plane: Box<dyn GuardPlane>,
    pub flags: Option<FlagSource>,
}

impl Guard {
    /// [`Guard::load`], with the ring buffer of flagged packets taken out
    /// for a logger. Flags that cannot be named are not logged; the guard
    /// still runs.
    pub fn load_with_flags(pin_dir: &Path) -> Result<LoadedGuard, GuardError> {
        let mut guard = Guard::load(pin_dir)?;
        let ring = guard.take_flags()?;
        let flags = match GuardMaps::from_pins(pin_dir) {
            Ok(Some(names)) => Some(FlagSource { ring, names }),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = %crate::Chain(&err), "flagged packets are not logged");
                None
            }
        };
        Ok(LoadedGuard { plane: Box::new(guard), flags })
    }
}

impl GuardPlane for Guard {
    fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<(), GuardError> {
        Guard::configure(self, uplinks).map(drop)
    }

    fn repair_pins(&mut self) -> Result<Vec<String>, GuardError> {
        Guard::repair_pins(self)
    }

    fn forget_detached(&mut self) -> Vec<String> {
        Guard::forget_detached(self)
    }

    fn held_pins(&self) -> BTreeSet<String> {
        Guard::held_pins(self)
    }

    fn attach_missing(
        &mut self,
        uplinks: &[GuardUplink],
        mode: AttachMode,
    ) -> Result<Vec<GuardAttachment>, GuardError> {
        Guard::attach_missing(self, uplinks, mode)
    }

    fn attached_in_kernel(&mut self, interface: &str) -> bool {
        Guard::attached_in_kernel(self, interface)
    }

    fn any_guard_runs(&self, interface: &str) -> Option<bool> {
        Guard::kernel_runs_any_guard(interface)
    }

    fn holds(&self, interface: &str) -> bool {
        Guard::holds(self, interface)
    }

    fn pins_intact(&self) -> bool {
        Guard::pins_intact(self)
    }

    fn watch_tcp(&mut self, on: bool) -> Result<(), GuardError> {
        if on {
            Guard::watch_tcp(self)
        } else {
            Guard::unwatch_tcp(self);
            Ok(())
        }
    }

    fn watches_tcp(&self) -> bool {
        Guard::watches_tcp(self)
    }

    fn tcp_counts(&self) -> Result<BTreeMap<String, TcpCounts>, GuardError> {
        let mut counts = BTreeMap::new();
        for (slot, interface) in self.maps.slot_names()? {
            if let Some(tcp) = self.maps.tcp_counts(slot)? {
                counts.insert(interface, tcp);
            }
        }
        Ok(counts)
    }
}
