//! The guard's part of `mhr status`: counters, offenders and attachment,
//! read from its pinned maps.

use std::collections::BTreeMap;

use mhr_common::guard::{PacketFamily, Verdict};
use serde::Serialize;

use crate::{
    engine::{Engine, EngineError},
    guard::{EventCounts, GuardMaps, OffenderReport, PinLayout},
};

pub const TOP_OFFENDERS: usize = 10;

/// The source guard on one uplink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardUplinkStatus {
    pub interface: String,
    /// The guard runs on this interface: a pinned TCX link or mhr's clsact
    /// filter.
    pub attached: bool,
    /// How it is attached (`tcx` or `clsact`), when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<crate::guard::tc::Mechanism>,
    pub mode: crate::config::GuardMode,
    pub enforce_asymmetric: bool,
    /// Packets and bytes by verdict (all families), and by family.
    pub verdicts: BTreeMap<&'static str, PacketCount>,
    pub by_family: BTreeMap<&'static str, BTreeMap<&'static str, PacketCount>>,
    pub events: EventCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardStatus {
    pub pin_dir: String,
    pub uplinks: Vec<GuardUplinkStatus>,
    /// The most active offenders, most packets first.
    pub top_offenders: Vec<OffenderReport>,
}

/// Packets and bytes, for JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

impl Engine {
    /// Counters, offenders and attachment of the installed guard, read from
    /// its pinned maps.
    pub fn guard_status(&self) -> Result<Option<GuardStatus>, EngineError> {
        let pin_dir = &self.config().guard.pin_dir;
        let Some(maps) = GuardMaps::from_pins(pin_dir)? else { return Ok(None) };
        let names = maps.slot_names()?;
        let links = PinLayout::new(pin_dir).links();
        let pinned: Vec<String> = std::fs::read_dir(&links)
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let mut uplinks = Vec::new();
        for uplink in &self.config().uplinks {
            let Some((&slot, _)) = names.iter().find(|(_, name)| **name == uplink.interface) else {
                continue;
            };
            let counts = maps.verdict_counts(slot)?;
            let count = |c: mhr_common::guard::Count| PacketCount { packets: c.packets, bytes: c.bytes };
            let (mode, enforce_asymmetric) = self.config().guard_mode(uplink);
            let prefix = crate::guard::pin_prefix(&uplink.interface);
            let attachment = if pinned.iter().any(|name| name.starts_with(&prefix)) {
                Some(crate::guard::tc::Mechanism::Tcx)
            } else {
                crate::guard::tc::interface_index(&uplink.interface)
                    .ok()
                    .and_then(|ifindex| crate::guard::clsact::guard_filters(ifindex).ok())
                    .is_some_and(|filters| !filters.is_empty())
                    .then_some(crate::guard::tc::Mechanism::Clsact)
            };
            uplinks.push(GuardUplinkStatus {
                interface: uplink.interface.clone(),
                attached: attachment.is_some(),
                attachment,
                mode,
                enforce_asymmetric,
                verdicts: Verdict::ALL.iter().map(|v| (v.name(), count(counts.total(*v)))).collect(),
                by_family: PacketFamily::ALL
                    .iter()
                    .map(|f| {
                        (
                            f.name(),
                            Verdict::ALL.iter().map(|v| (v.name(), count(counts.get(*f, *v)))).collect(),
                        )
                    })
                    .collect(),
                events: maps.event_counts(slot)?,
            });
        }
        let mut top_offenders = maps.offenders(&names)?;
        top_offenders.truncate(TOP_OFFENDERS);
        Ok(Some(GuardStatus { pin_dir: pin_dir.display().to_string(), uplinks, top_offenders }))
    }
}
