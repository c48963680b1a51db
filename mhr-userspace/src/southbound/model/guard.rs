//! The model's guard: it records what the daemon configured and where it
//! attached, and lets a test take a link away as someone might.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use crate::guard::{
    AttachStep, GuardAttachment, GuardError, GuardUplink,
    plane::GuardPlane,
    tc::{AttachMode, Mechanism},
    tcp::TcpCounts,
};

/// What the guard looks like in the model's kernel.
#[derive(Clone, Debug, Default)]
pub struct GuardState {
    /// Times a guard was loaded.
    pub loads: usize,
    /// What its maps describe.
    pub uplinks: Vec<GuardUplink>,
    /// Interfaces the guard runs on.
    pub attached: BTreeSet<String>,
    /// Pins of links someone removed, not yet noticed.
    pub removed: Vec<String>,
    /// Interfaces the kernel refuses to attach the guard to.
    pub refused: BTreeSet<String>,
    /// Loading the guard fails (no bpffs, say).
    pub load_refused: bool,
    /// The installed guard's enforcement per ifindex; None: no guard
    /// installed.
    pub enforcement: Option<BTreeMap<u32, crate::guard::Enforcement>>,
    /// The passive TCP tracepoints are attached.
    pub tcp_watch: bool,
    /// What the tracepoints and the guard counted, by interface (a test
    /// sets them as traffic would).
    pub tcp: BTreeMap<String, TcpCounts>,
}

/// A loaded guard in the model.
pub struct ModelGuard(pub(super) Arc<Mutex<GuardState>>);

impl ModelGuard {
    fn state(&self) -> MutexGuard<'_, GuardState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn pin(interface: &str, ifindex: u32) -> String {
    crate::guard::link_pin(interface, ifindex)
}

impl GuardPlane for ModelGuard {
    fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<(), GuardError> {
        let mut state = self.state();
        // What the real guard's uplink map holds: each uplink's mode.
        state.enforcement = Some(uplinks.iter().map(|u| (u.ifindex, u.enforcement)).collect());
        drop(state);
        self.state().uplinks = uplinks.to_vec();
        Ok(())
    }

    fn repair_pins(&mut self) -> Result<Vec<String>, GuardError> {
        Ok(Vec::new())
    }

    fn forget_detached(&mut self) -> Vec<String> {
        std::mem::take(&mut self.state().removed)
    }

    fn held_pins(&self) -> BTreeSet<String> {
        let state = self.state();
        state
            .uplinks
            .iter()
            .filter(|u| state.attached.contains(&u.interface))
            .map(|u| pin(&u.interface, u.ifindex))
            .collect()
    }

    fn attach_missing(
        &mut self,
        uplinks: &[GuardUplink],
        _mode: AttachMode,
    ) -> Result<Vec<GuardAttachment>, GuardError> {
        let mut state = self.state();
        let mut attached = Vec::new();
        for uplink in uplinks {
            if state.refused.contains(&uplink.interface) {
                return Err(GuardError::Attach {
                    interface: uplink.interface.clone(),
                    step: AttachStep::Tcx,
                    source: Box::new(std::io::Error::from_raw_os_error(libc::EPERM)),
                });
            }
            if state.attached.insert(uplink.interface.clone()) {
                attached.push(GuardAttachment {
                    interface: uplink.interface.clone(),
                    ifindex: uplink.ifindex,
                    mechanism: Mechanism::Tcx,
                    replaced: false,
                });
            }
        }
        Ok(attached)
    }

    fn attached_in_kernel(&mut self, interface: &str) -> bool {
        self.state().attached.contains(interface)
    }

    fn any_guard_runs(&self, interface: &str) -> Option<bool> {
        Some(self.state().attached.contains(interface))
    }

    fn holds(&self, interface: &str) -> bool {
        let state = self.state();
        state.uplinks.iter().any(|u| u.interface == interface)
    }

    fn pins_intact(&self) -> bool {
        true
    }

    fn watch_tcp(&mut self, on: bool) -> Result<(), GuardError> {
        self.state().tcp_watch = on;
        Ok(())
    }

    fn watches_tcp(&self) -> bool {
        self.state().tcp_watch
    }

    fn tcp_counts(&self) -> Result<BTreeMap<String, TcpCounts>, GuardError> {
        let state = self.state();
        Ok(if state.tcp_watch { state.tcp.clone() } else { BTreeMap::new() })
    }
}
