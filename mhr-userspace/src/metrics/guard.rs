//! The data path's metrics: the guard's counters, read from its pinned
//! maps on every scrape.

use std::path::PathBuf;

use mhr_common::guard::{MAX_OFFENDERS, PacketFamily, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::{Labels, labels};
use crate::guard::GuardMaps;

/// The guard's counters, read from its pinned maps on every scrape. The
/// pins are opened anew each time (cheap), so a guard removed and
/// installed again by another process is never read through stale maps.
#[derive(Debug)]
pub struct GuardCollector {
    pin_dir: PathBuf,
    top_offenders: usize,
}

impl GuardCollector {
    pub fn new(pin_dir: PathBuf, top_offenders: usize) -> Self {
        Self { pin_dir, top_offenders }
    }
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// What one scrape reads from the maps.
#[derive(Clone, Default)]
pub(super) struct Snapshot {
    pub(super) packets: Vec<(Labels, u64)>,
    pub(super) bytes: Vec<(Labels, u64)>,
    pub(super) dropped: Vec<(Labels, u64)>,
    pub(super) flags_emitted: Vec<(Labels, u64)>,
    pub(super) flags_suppressed: Vec<(Labels, u64)>,
    pub(super) errors: Vec<(Labels, u64)>,
    pub(super) offenders: i64,
    pub(super) top: Vec<(Labels, i64)>,
}

impl GuardCollector {
    fn snapshot(&self) -> Option<Snapshot> {
        let maps = GuardMaps::from_pins(&self.pin_dir).ok().flatten()?;
        Self::read(&maps, self.top_offenders)
    }

    fn read(maps: &GuardMaps, top_offenders: usize) -> Option<Snapshot> {
        let names = maps.slot_names().ok()?;
        let mut snapshot = Snapshot::default();
        for (slot, uplink) in &names {
            let counts = maps.verdict_counts(*slot).ok()?;
            for family in PacketFamily::ALL {
                for verdict in Verdict::ALL {
                    let count = counts.get(family, verdict);
                    let labels =
                        labels([("uplink", uplink), ("family", family.name()), ("verdict", verdict.name())]);
                    snapshot.packets.push((labels.clone(), count.packets));
                    snapshot.bytes.push((labels, count.bytes));
                }
            }
            let events = maps.event_counts(*slot).ok()?;
            let uplink_label = labels([("uplink", uplink)]);
            snapshot.dropped.push((uplink_label.clone(), events.dropped));
            snapshot.flags_emitted.push((uplink_label.clone(), events.flags_emitted));
            snapshot.flags_suppressed.push((uplink_label.clone(), events.flags_suppressed));
            snapshot.errors.push((uplink_label, events.errors));
        }
        snapshot.offenders = maps.offenders.keys().filter(Result::is_ok).count() as i64;
        if top_offenders > 0 {
            let mut offenders = maps.offenders(&names).ok()?;
            offenders.truncate(top_offenders);
            snapshot.top = offenders
                .iter()
                .map(|o| {
                    let source = o.source.to_string();
                    (
                        labels([("uplink", &o.uplink), ("source", &source), ("verdict", o.verdict)]),
                        o.packets as i64,
                    )
                })
                .collect();
        }
        Some(snapshot)
    }
}

impl Collector for GuardCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.snapshot() {
            Some(snapshot) => encode_snapshot(encoder, &snapshot, self.top_offenders > 0),
            None => Ok(()),
        }
    }
}

/// The guard's metric families from one snapshot of its maps.
pub(super) fn encode_snapshot(
    mut encoder: DescriptorEncoder,
    s: &Snapshot,
    top: bool,
) -> Result<(), std::fmt::Error> {
    {
        let e = &mut encoder;
        counter_family(
            e,
            "mhr_guard_packets",
            "Egress packets seen by the source guard, by verdict",
            &s.packets,
        )?;
        counter_family(e, "mhr_guard_bytes", "Egress bytes seen by the source guard, by verdict", &s.bytes)?;
        counter_family(e, "mhr_guard_dropped_packets", "Packets dropped in enforce mode", &s.dropped)?;
        counter_family(e, "mhr_guard_flags_emitted", "Flagged-packet records written", &s.flags_emitted)?;
        counter_family(
            e,
            "mhr_guard_flags_suppressed",
            "Flagged-packet records suppressed by the rate limit",
            &s.flags_suppressed,
        )?;
        counter_family(e, "mhr_guard_errors", "Internal guard errors (the packet passed)", &s.errors)?;
        gauge_family(
            e,
            "mhr_guard_offenders",
            "Entries in the offender table",
            &[(Labels::new(), s.offenders)],
        )?;
        gauge_family(
            e,
            "mhr_guard_offenders_capacity",
            "Capacity of the offender table",
            &[(Labels::new(), i64::from(MAX_OFFENDERS))],
        )?;
        if top {
            gauge_family(
                e,
                "mhr_guard_top_offender_packets",
                "Packets of the most active offenders (opt-in)",
                &s.top,
            )?;
        }
        Ok(())
    }
}

/// Names the data-path collector exports (as rendered, counters with
/// `_total`): dashboards and alerts may use these.
pub const DATAPATH_METRICS: [&str; 9] = [
    "mhr_guard_packets_total",
    "mhr_guard_bytes_total",
    "mhr_guard_dropped_packets_total",
    "mhr_guard_flags_emitted_total",
    "mhr_guard_flags_suppressed_total",
    "mhr_guard_errors_total",
    "mhr_guard_offenders",
    "mhr_guard_offenders_capacity",
    "mhr_guard_top_offender_packets",
];
