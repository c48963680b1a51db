//! Prometheus metrics: the control plane's counters, kept in a registry,
//! and the data path's, read from the guard's pinned maps at scrape time
//! (ebpf_exporter's pull model: no background copy).

use std::{path::PathBuf, sync::atomic::AtomicU64};

use mhr_common::guard::{MAX_OFFENDERS, PacketFamily, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family as MetricFamily,
        gauge::{ConstGauge, Gauge},
        info::Info,
    },
    registry::Registry,
};

use crate::guard::GuardMaps;

type Labels = Vec<(String, String)>;

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Control-plane metrics, updated by the daemon.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    pub reconciles: MetricFamily<Labels, Counter>,
    pub drift_corrections: MetricFamily<Labels, Counter>,
    pub host_changes: MetricFamily<Labels, Counter>,
    pub resyncs: MetricFamily<Labels, Counter>,
    pub rules_installed: Gauge,
    pub routes_installed: Gauge,
    pub last_success: Gauge<f64, AtomicU64>,
    pub guard_attached: MetricFamily<Labels, Gauge>,
    pub uplink_healthy: MetricFamily<Labels, Gauge>,
    pub uplink_active: MetricFamily<Labels, Gauge>,
    pub probe_rtt: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    pub probe_loss: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    pub failovers: MetricFamily<Labels, Counter>,
    pub guard_repairs: MetricFamily<Labels, Counter>,
    /// The guard failed to load or attach, by reason (guard::retry::REASONS).
    pub guard_failures: MetricFamily<Labels, Counter>,
    pub uplink_blocked: MetricFamily<Labels, Gauge>,
    pub flag_lines_suppressed: Counter,
    pub flag_records_folded: Counter,
    pub state_write_errors: Counter,
    pub drift_deferred: Counter,
    pub contested_objects: Gauge,
    /// 1 when the last reload (SIGHUP) took its config, 0 when it was refused.
    pub config_reload_success: Gauge,
    pub config_reload_failures: Counter,
}

impl ControlMetrics {
    pub fn reconcile(&self, ok: bool) {
        self.reconciles.get_or_create(&labels([("result", if ok { "ok" } else { "error" })])).inc();
    }

    pub fn correction(&self, kind: &str) {
        self.drift_corrections.get_or_create(&labels([("kind", kind)])).inc();
    }

    /// A guard pin or link someone removed, put back (`what`: map, link).
    pub fn guard_repair(&self, what: &str) {
        self.guard_repairs.get_or_create(&labels([("what", what)])).inc();
    }

    /// The guard failed to load or attach (`reason`: guard::retry::REASONS).
    pub fn guard_failure(&self, reason: &str) {
        self.guard_failures.get_or_create(&labels([("reason", reason)])).inc();
    }

    /// A change made because the host changed (an address, a link, a
    /// gateway, health), not to undo drift.
    pub fn host_change(&self, kind: &str) {
        self.host_changes.get_or_create(&labels([("kind", kind)])).inc();
    }

    /// Creates every label set known up front at zero, so that `increase()`
    /// sees the first event (a series appearing at 1 has no increase).
    pub fn initialise(&self, uplinks: &[&str]) {
        for result in ["ok", "error"] {
            drop(self.reconciles.get_or_create(&labels([("result", result)])));
        }
        let kinds = crate::plan::Action::KINDS.iter().chain(["guard_attached"].iter());
        for kind in kinds {
            drop(self.drift_corrections.get_or_create(&labels([("kind", kind)])));
            drop(self.host_changes.get_or_create(&labels([("kind", kind)])));
        }
        for reason in ["startup", "overrun", "periodic"] {
            drop(self.resyncs.get_or_create(&labels([("reason", reason)])));
        }
        for what in ["map", "link"] {
            drop(self.guard_repairs.get_or_create(&labels([("what", what)])));
        }
        for reason in crate::guard::retry::REASONS {
            drop(self.guard_failures.get_or_create(&labels([("reason", reason)])));
        }
        for family in ["ipv4", "ipv6"] {
            drop(self.failovers.get_or_create(&labels([("family", family)])));
        }
        for uplink in uplinks {
            drop(self.guard_attached.get_or_create(&labels([("uplink", uplink)])));
            drop(self.uplink_blocked.get_or_create(&labels([("uplink", uplink)])));
        }
    }

    pub fn resync(&self, reason: &str) {
        self.resyncs.get_or_create(&labels([("reason", reason)])).inc();
    }

    /// Health and probe figures of one uplink family.
    pub fn uplink_health(
        &self,
        uplink: &str,
        family: &str,
        primary: bool,
        health: &crate::health::FamilyHealth,
    ) {
        let key = labels([("uplink", uplink), ("family", family)]);
        let with_role = labels([
            ("uplink", uplink),
            ("family", family),
            ("primary", if primary { "true" } else { "false" }),
        ]);
        self.uplink_healthy.get_or_create(&with_role).set(i64::from(health.healthy));
        if let Some(rtt) = health.probe_rtt_seconds {
            self.probe_rtt.get_or_create(&key).set(rtt);
        }
        if let Some(loss) = health.probe_loss {
            self.probe_loss.get_or_create(&key).set(loss);
        }
    }

    /// An uplink family whose interface is gone: unhealthy, so alerts on
    /// the primary fire rather than go quiet.
    pub fn uplink_missing(&self, uplink: &str, family: &str, primary: bool) {
        let with_role = labels([
            ("uplink", uplink),
            ("family", family),
            ("primary", if primary { "true" } else { "false" }),
        ]);
        self.uplink_healthy.get_or_create(&with_role).set(0);
    }

    /// Removes one uplink family's health series under a role it no longer
    /// has; with `entirely`, its probe and active series too (the uplink
    /// left the config).
    pub fn forget_uplink_health(&self, uplink: &str, family: &str, primary: bool, entirely: bool) {
        let with_role = labels([
            ("uplink", uplink),
            ("family", family),
            ("primary", if primary { "true" } else { "false" }),
        ]);
        self.uplink_healthy.remove(&with_role);
        if entirely {
            let key = labels([("uplink", uplink), ("family", family)]);
            self.probe_rtt.remove(&key);
            self.probe_loss.remove(&key);
            self.uplink_active.remove(&key);
        }
    }

    /// Removes the per-uplink series of an uplink no longer configured.
    pub fn forget_uplink(&self, uplink: &str) {
        let key = labels([("uplink", uplink)]);
        self.guard_attached.remove(&key);
        self.uplink_blocked.remove(&key);
        for family in ["ipv4", "ipv6"] {
            self.uplink_active.remove(&labels([("uplink", uplink), ("family", family)]));
        }
    }

    /// The outcome of a reload.
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reload_success.set(i64::from(ok));
        if !ok {
            self.config_reload_failures.inc();
        }
    }

    pub fn uplink_active(&self, uplink: &str, family: &str, active: bool) {
        self.uplink_active
            .get_or_create(&labels([("uplink", uplink), ("family", family)]))
            .set(i64::from(active));
    }

    /// Starts the failover counter of a family at 0, so the first failover
    /// is an increase.
    pub fn failover(&self, family: &str, happened: bool) {
        let counter = self.failovers.get_or_create(&labels([("family", family)]));
        if happened {
            counter.inc();
        }
    }
}

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
struct Snapshot {
    packets: Vec<(Labels, u64)>,
    bytes: Vec<(Labels, u64)>,
    dropped: Vec<(Labels, u64)>,
    flags_emitted: Vec<(Labels, u64)>,
    flags_suppressed: Vec<(Labels, u64)>,
    errors: Vec<(Labels, u64)>,
    offenders: i64,
    top: Vec<(Labels, i64)>,
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
fn encode_snapshot(mut encoder: DescriptorEncoder, s: &Snapshot, top: bool) -> Result<(), std::fmt::Error> {
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

/// The registry behind `/metrics`.
pub fn registry(control: &std::sync::Arc<ControlMetrics>, collector: GuardCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register("mhr_reconciles", "Reconciles by result", control.reconciles.clone());
    registry.register(
        "mhr_drift_corrections",
        "Changes made to undo drift (someone changed what mhr keeps), by kind",
        control.drift_corrections.clone(),
    );
    registry.register(
        "mhr_host_changes",
        "Changes made because the host changed (addresses, links, gateways, health), by kind",
        control.host_changes.clone(),
    );
    registry.register("mhr_netlink_resyncs", "Full resyncs by reason", control.resyncs.clone());
    registry.register("mhr_rules_installed", "Policy rules mhr owns", control.rules_installed.clone());
    registry.register("mhr_routes_installed", "Routes mhr owns", control.routes_installed.clone());
    registry.register(
        "mhr_last_successful_reconcile_timestamp_seconds",
        "Unix time of the last successful reconcile",
        control.last_success.clone(),
    );
    registry.register(
        "mhr_guard_attached",
        "1 when the kernel runs the guard on the uplink's egress",
        control.guard_attached.clone(),
    );
    registry.register(
        "mhr_uplink_healthy",
        "1 when the uplink may carry main's default route in the family",
        control.uplink_healthy.clone(),
    );
    registry.register(
        "mhr_uplink_active",
        "1 when the uplink holds main's default route in the family",
        control.uplink_active.clone(),
    );
    registry.register(
        "mhr_uplink_probe_rtt_seconds",
        "Round-trip time of the last answered health probe",
        control.probe_rtt.clone(),
    );
    registry.register(
        "mhr_uplink_probe_loss_ratio",
        "Fraction of the last 20 probe rounds without an answer",
        control.probe_loss.clone(),
    );
    registry.register(
        "mhr_failovers",
        "Changes of the uplink holding main's default route, by family",
        control.failovers.clone(),
    );
    registry.register(
        "mhr_uplink_blocked",
        "1 when a foreign route or rule where the uplink's go makes mhr leave it as it is",
        control.uplink_blocked.clone(),
    );
    registry.register(
        "mhr_flag_log_lines_suppressed",
        "Flag log lines (first lines and summaries) not written because of the daemon's per-second log cap",
        control.flag_lines_suppressed.clone(),
    );
    registry.register(
        "mhr_flag_records_folded",
        "Flag records of offenders already logged, folded into their next summary line",
        control.flag_records_folded.clone(),
    );
    registry.register(
        "mhr_drift_corrections_deferred",
        "Corrections held back because another writer keeps removing the object (put back at a bounded rate)",
        control.drift_deferred.clone(),
    );
    registry.register(
        "mhr_drift_contested_objects",
        "Routes and rules another writer removed 3 times or more within a minute",
        control.contested_objects.clone(),
    );
    registry.register(
        "mhr_config_reload_success",
        "1 when the last config reload (SIGHUP) was taken, 0 when the file was refused and the running config stayed",
        control.config_reload_success.clone(),
    );
    registry.register(
        "mhr_config_reload_failures",
        "Config reloads refused (the running config stayed)",
        control.config_reload_failures.clone(),
    );
    registry.register(
        "mhr_state_write_errors",
        "Records (table names, gateways, the health view) that could not be written to disk; routing, health and failover go on, and the write is retried",
        control.state_write_errors.clone(),
    );
    registry.register(
        "mhr_guard_repairs",
        "Guard pins (map) and links (link) found removed and put back",
        control.guard_repairs.clone(),
    );
    registry.register(
        "mhr_guard_failures",
        "The source guard failed to load or attach, by reason; routing goes on and the guard is retried with backoff",
        control.guard_failures.clone(),
    );
    registry.register(
        "mhr_build",
        "Build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("revision", env!("MHR_REVISION"))]),
    );
    registry.register_collector(Box::new(collector));
    registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
    registry
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// Seconds since the Unix epoch, for the timestamp gauge.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
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

#[cfg(test)]
mod tests;
