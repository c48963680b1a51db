//! Uplink health as the planner sees it: the judge trait and its three
//! judges (one-shot, the daemon's book during a reconcile, a running
//! daemon's snapshot for one-shot commands), and what the link itself says.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Fault, HealthBook, Transition, snapshot::HealthSnapshot};
use crate::model::Family;

/// Whether an uplink may carry main's default route in one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FamilyVerdict {
    pub family: Family,
    pub healthy: bool,
    pub fault: Option<Fault>,
    /// Healthy, but over a quality threshold: main's default only when no
    /// healthy uplink is left.
    pub degraded: bool,
}

/// Decides uplink health for the planner: the daemon's [`crate::health::HealthBook`]
/// (with hysteresis), or a one-shot view.
pub trait HealthJudge {
    /// `link_fault` is what the link itself says; `gateway_unreachable`
    /// whether the gateway's neighbour entry failed.
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        gateway_unreachable: bool,
    ) -> FamilyVerdict;
}

/// Judges by what is true this instant: any fault makes an uplink
/// unhealthy. `probes_failed` lists uplink families whose probes got no
/// answer (one round).
#[derive(Clone, Debug, Default)]
pub struct InstantJudge {
    pub probes_failed: BTreeSet<(String, Family)>,
}

impl HealthJudge for InstantJudge {
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        gateway_unreachable: bool,
    ) -> FamilyVerdict {
        let probe = self.probes_failed.contains(&(interface.to_owned(), family));
        let sample = crate::health::RoundSample {
            gateway_unreachable,
            probe: probe.then_some(crate::health::ProbeOutcome { answered: false, rtt: None }),
            skipped: false,
            passive: None,
            busy: false,
        };
        let fault = crate::health::one_shot(link_fault, sample);
        FamilyVerdict { family, healthy: fault.is_none(), fault, degraded: false }
    }
}

/// What the link itself says about carrying a family: administratively
/// up, with carrier, an address and a gateway.
pub fn link_fault(up: bool, carrier: bool, has_address: bool, has_gateway: bool) -> Option<Fault> {
    if !up {
        Some(Fault::AdminDown)
    } else if !carrier {
        Some(Fault::NoCarrier)
    } else if !has_address {
        Some(Fault::NoAddress)
    } else if !has_gateway {
        Some(Fault::NoGateway)
    } else {
        None
    }
}

/// The planner's judge during a reconcile: link faults count at once,
/// everything else is what the rounds have established.
pub struct BookJudge<'a> {
    pub book: &'a mut HealthBook,
    pub now: u64,
    pub transitions: Vec<Transition>,
}

impl HealthJudge for BookJudge<'_> {
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        _: bool,
    ) -> FamilyVerdict {
        self.transitions.extend(self.book.observe_link(interface, family, link_fault, self.now));
        let entry = self.book.get(interface, family);
        FamilyVerdict {
            family,
            healthy: entry.is_some_and(|e| e.healthy),
            fault: entry.and_then(|e| e.fault),
            degraded: entry.is_some_and(|e| e.degraded.is_some()),
        }
    }
}

/// Judges by a running daemon's health view; uplink families it does not
/// know are judged by their link alone.
pub struct SnapshotJudge(pub HealthSnapshot);

impl HealthJudge for SnapshotJudge {
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        gateway_unreachable: bool,
    ) -> FamilyVerdict {
        match self.0.get(interface, family) {
            Some(entry) => FamilyVerdict {
                family,
                healthy: entry.healthy,
                fault: entry.fault,
                degraded: entry.degraded.is_some(),
            },
            None => InstantJudge::default().judge(interface, family, link_fault, gateway_unreachable),
        }
    }
}
