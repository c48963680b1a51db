//! [`Guard`] as the southbound's [`GuardPlane`], and loading it with its
//! flag source.

use std::{collections::BTreeSet, path::Path};

use super::{Guard, GuardAttachment, GuardError, GuardMaps, GuardUplink, flags::FlagSource};
use crate::{
    southbound::guard::{GuardPlane, LoadedGuard},
    tc::AttachMode,
};

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
                tracing::warn!(error = %err, "flagged packets are not logged");
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
}
