//! The data path's metrics: the guard's counters, read from its pinned
//! maps on every scrape.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use mhr_common::guard::{MAX_OFFENDERS, PacketFamily, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::{Labels, labels};
use crate::guard::{
    GuardError, GuardMaps,
    maps::{EventCounts, OffenderReport, VerdictCounts},
    tcp::TcpCounts,
};

/// What the collector reads from the guard: its pinned maps in the daemon,
/// a fake in the tests.
pub(super) trait GuardSource {
    fn slot_names(&self) -> Result<BTreeMap<u32, String>, GuardError>;
    fn verdict_counts(&self, slot: u32) -> Result<VerdictCounts, GuardError>;
    fn event_counts(&self, slot: u32) -> Result<EventCounts, GuardError>;
    fn offender_entries(&self) -> Result<usize, GuardError>;
    fn offenders(&self, names: &BTreeMap<u32, String>) -> Result<Vec<OffenderReport>, GuardError>;
    /// One uplink's TCP figures; `None` while passive TCP quality was
    /// never on.
    fn tcp_counts(&self, slot: u32) -> Result<Option<TcpCounts>, GuardError>;
}

impl GuardSource for GuardMaps {
    fn slot_names(&self) -> Result<BTreeMap<u32, String>, GuardError> {
        GuardMaps::slot_names(self)
    }

    fn verdict_counts(&self, slot: u32) -> Result<VerdictCounts, GuardError> {
        GuardMaps::verdict_counts(self, slot)
    }

    fn event_counts(&self, slot: u32) -> Result<EventCounts, GuardError> {
        GuardMaps::event_counts(self, slot)
    }

    fn offender_entries(&self) -> Result<usize, GuardError> {
        let mut entries = 0;
        for key in self.offenders.keys() {
            key.map_err(|source| GuardError::Map { name: mhr_common::guard::OFFENDERS_MAP, source })?;
            entries += 1;
        }
        Ok(entries)
    }

    fn offenders(&self, names: &BTreeMap<u32, String>) -> Result<Vec<OffenderReport>, GuardError> {
        GuardMaps::offenders(self, names)
    }

    fn tcp_counts(&self, slot: u32) -> Result<Option<TcpCounts>, GuardError> {
        GuardMaps::tcp_counts(self, slot)
    }
}

/// The parts of a scrape that can fail on their own, as the `source` label
/// of `mhr_scrape_errors_total`: the pins (nothing else could be read), the
/// slot names (no per-uplink series), an uplink's verdict counters (its
/// packets and bytes), its event counters (drops, flags, errors), the
/// offender table (its size and the top offenders), the TCP figures.
pub const SCRAPE_SOURCES: [&str; 6] = ["pins", "slot_names", "verdicts", "events", "offenders", "tcp"];

/// Opens what the collector reads; `None` when no guard is installed.
type Open = dyn Fn() -> Result<Option<Box<dyn GuardSource>>, GuardError> + Send + Sync;

/// The guard's counters, read from its pinned maps on every scrape. The
/// pins are opened anew each time (cheap), so a guard removed and
/// installed again by another process is never read through stale maps.
/// Each part is read on its own: a failed read leaves out only what it
/// would have given, and counts in `mhr_scrape_errors_total{source}`.
pub struct GuardCollector {
    open: Box<Open>,
    top_offenders: usize,
    /// Scrapes in which a source failed, by index into SCRAPE_SOURCES.
    scrape_errors: [AtomicU64; SCRAPE_SOURCES.len()],
}

impl std::fmt::Debug for GuardCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardCollector").field("top_offenders", &self.top_offenders).finish_non_exhaustive()
    }
}

impl GuardCollector {
    pub fn new(pin_dir: PathBuf, top_offenders: usize) -> Self {
        Self::reading(
            move || Ok(GuardMaps::from_pins(&pin_dir)?.map(|maps| Box::new(maps) as Box<dyn GuardSource>)),
            top_offenders,
        )
    }

    pub(super) fn reading(
        open: impl Fn() -> Result<Option<Box<dyn GuardSource>>, GuardError> + Send + Sync + 'static,
        top_offenders: usize,
    ) -> Self {
        Self { open: Box::new(open), top_offenders, scrape_errors: Default::default() }
    }

    /// Counts a failed source once per scrape.
    fn failed(&self, failed: &mut [bool; SCRAPE_SOURCES.len()], source: &'static str, err: &GuardError) {
        let index = SCRAPE_SOURCES.iter().position(|s| *s == source).unwrap_or_default();
        if !std::mem::replace(&mut failed[index], true) {
            self.scrape_errors[index].fetch_add(1, Ordering::Relaxed);
            // The error and its causes (the map's name, then the kernel's answer).
            let mut error = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(next) = cause {
                error = format!("{error}: {next}");
                cause = next.source();
            }
            tracing::debug!(source, error, "reading the guard's maps failed");
        }
    }

    fn scrape_error_rows(&self) -> Vec<(Labels, u64)> {
        SCRAPE_SOURCES
            .iter()
            .zip(&self.scrape_errors)
            .map(|(source, count)| (labels([("source", source)]), count.load(Ordering::Relaxed)))
            .collect()
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
    /// `None` when the offender table could not be read.
    pub(super) offenders: Option<i64>,
    pub(super) top: Vec<(Labels, i64)>,
    pub(super) tcp: Vec<(Labels, TcpCounts)>,
}

impl GuardCollector {
    /// Reads what can be read; `None` when no guard is installed.
    fn snapshot(&self) -> Option<Snapshot> {
        let mut failed = [false; SCRAPE_SOURCES.len()];
        match (self.open)() {
            Ok(Some(source)) => Some(self.read(source.as_ref(), &mut failed)),
            Ok(None) => None,
            Err(err) => {
                self.failed(&mut failed, "pins", &err);
                Some(Snapshot::default())
            }
        }
    }

    fn read(&self, maps: &dyn GuardSource, failed: &mut [bool; SCRAPE_SOURCES.len()]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let names = maps.slot_names().unwrap_or_else(|err| {
            self.failed(failed, "slot_names", &err);
            BTreeMap::new()
        });
        for (slot, uplink) in &names {
            match maps.verdict_counts(*slot) {
                Ok(counts) => {
                    for family in PacketFamily::ALL {
                        for verdict in Verdict::ALL {
                            let count = counts.get(family, verdict);
                            let labels = labels([
                                ("uplink", uplink),
                                ("family", family.name()),
                                ("verdict", verdict.name()),
                            ]);
                            snapshot.packets.push((labels.clone(), count.packets));
                            snapshot.bytes.push((labels, count.bytes));
                        }
                    }
                }
                Err(err) => self.failed(failed, "verdicts", &err),
            }
            match maps.event_counts(*slot) {
                Ok(events) => {
                    let uplink_label = labels([("uplink", uplink)]);
                    snapshot.dropped.push((uplink_label.clone(), events.dropped));
                    snapshot.flags_emitted.push((uplink_label.clone(), events.flags_emitted));
                    snapshot.flags_suppressed.push((uplink_label.clone(), events.flags_suppressed));
                    snapshot.errors.push((uplink_label, events.errors));
                }
                Err(err) => self.failed(failed, "events", &err),
            }
            match maps.tcp_counts(*slot) {
                Ok(Some(counts)) => snapshot.tcp.push((labels([("uplink", uplink)]), counts)),
                Ok(None) => {}
                Err(err) => self.failed(failed, "tcp", &err),
            }
        }
        match maps.offender_entries() {
            Ok(entries) => snapshot.offenders = Some(entries as i64),
            Err(err) => self.failed(failed, "offenders", &err),
        }
        if self.top_offenders > 0 {
            match maps.offenders(&names) {
                Ok(mut offenders) => {
                    offenders.truncate(self.top_offenders);
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
                Err(err) => self.failed(failed, "offenders", &err),
            }
        }
        snapshot
    }
}

impl Collector for GuardCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot();
        encode_snapshot(encoder, snapshot.as_ref(), self.top_offenders > 0, &self.scrape_error_rows())
    }
}

/// The guard's metric families from one snapshot of its maps.
/// `None` when no guard is installed: only the scrape errors then.
pub(super) fn encode_snapshot(
    mut encoder: DescriptorEncoder,
    snapshot: Option<&Snapshot>,
    top: bool,
    scrape_errors: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    {
        let e = &mut encoder;
        counter_family(
            e,
            "mhr_scrape_errors",
            "Scrapes in which reading a part of the guard's maps failed, by source; what could be read was exported",
            scrape_errors,
        )?;
        let Some(s) = snapshot else { return Ok(()) };
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
            &s.offenders.map(|n| (Labels::new(), n)).into_iter().collect::<Vec<_>>(),
        )?;
        gauge_family(
            e,
            "mhr_guard_offenders_capacity",
            "Capacity of the offender table",
            &[(Labels::new(), i64::from(MAX_OFFENDERS))],
        )?;
        super::tcp::encode(e, &s.tcp)?;
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
pub const DATAPATH_METRICS: [&str; 13] = [
    "mhr_uplink_tcp_rtt_seconds",
    "mhr_uplink_tcp_retransmits_total",
    "mhr_uplink_tcp_segments_sent_total",
    "mhr_scrape_errors_total",
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
