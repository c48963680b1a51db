//! The control plane's metrics, kept in the registry and updated by the
//! daemon: reconciles, drift and host changes, uplink health and probes,
//! failovers, guard repairs and failures, reloads.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::{counter::Counter, family::Family as MetricFamily, gauge::Gauge};

use super::{Labels, labels};

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
    /// 1 for the uplink family's state (healthy, degraded, down, drained), 0 for the others.
    pub uplink_state: MetricFamily<Labels, Gauge>,
    /// 1 for the configured primary, 0 for the other configured uplinks.
    pub uplink_primary: MetricFamily<Labels, Gauge>,
    pub uplink_active: MetricFamily<Labels, Gauge>,
    pub probe_rtt: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    pub probe_loss: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    /// Seconds the uplink has been sending with nothing received.
    pub rx_silence: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    /// Per probe target: round trips and loss.
    pub probes: super::ProbeMetrics,
    pub failovers: MetricFamily<Labels, Counter>,
    /// Connections closed at fail-back (`failback = "reset"`).
    pub failback_resets: Counter,
    /// `[[hook]]` runs, by event and result (ok, failed, timeout, skipped).
    pub hook_runs: MetricFamily<Labels, Counter>,
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

    /// A guard pin or link someone removed, put back (`kind`: map, link).
    pub fn guard_repair(&self, kind: &str) {
        self.guard_repairs.get_or_create(&labels([("kind", kind)])).inc();
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
    /// sees the first event (a series appearing at 1 has no increase), and
    /// sets each configured uplink's role (`uplinks`: interface, primary).
    pub fn initialise(&self, uplinks: &[(&str, bool)]) {
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
        for kind in ["map", "link"] {
            drop(self.guard_repairs.get_or_create(&labels([("kind", kind)])));
        }
        for reason in crate::guard::retry::REASONS {
            drop(self.guard_failures.get_or_create(&labels([("reason", reason)])));
        }
        for family in ["ipv4", "ipv6"] {
            drop(self.failovers.get_or_create(&labels([("family", family)])));
        }
        for (uplink, primary) in uplinks {
            drop(self.guard_attached.get_or_create(&labels([("uplink", uplink)])));
            drop(self.uplink_blocked.get_or_create(&labels([("uplink", uplink)])));
            self.uplink_primary.get_or_create(&labels([("uplink", uplink)])).set(i64::from(*primary));
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
        health: &crate::health::FamilyHealth,
        drained: bool,
    ) {
        let key = labels([("uplink", uplink), ("family", family)]);
        self.uplink_healthy.get_or_create(&key).set(i64::from(health.healthy));
        let state = if drained { crate::health::quality::UplinkState::Drained } else { health.state() };
        self.set_state(uplink, family, state);
        if let Some(rtt) = health.probe_rtt_seconds {
            self.probe_rtt.get_or_create(&key).set(rtt);
        }
        if let Some(loss) = health.probe_loss {
            self.probe_loss.get_or_create(&key).set(loss);
        }
    }

    /// An uplink family whose interface is gone: unhealthy, so alerts on
    /// the primary fire rather than go quiet.
    pub fn uplink_missing(&self, uplink: &str, family: &str) {
        self.uplink_healthy.get_or_create(&labels([("uplink", uplink), ("family", family)])).set(0);
        self.set_state(uplink, family, crate::health::quality::UplinkState::Down);
    }

    /// One series per state, 1 for the current one (the enum-as-gauges
    /// convention: `mhr_uplink_state{state="degraded"} == 1` selects).
    fn set_state(&self, uplink: &str, family: &str, current: crate::health::quality::UplinkState) {
        for state in crate::health::quality::UplinkState::ALL {
            let key = labels([("uplink", uplink), ("family", family), ("state", state.name())]);
            self.uplink_state.get_or_create(&key).set(i64::from(state == current));
        }
    }

    /// Removes one uplink family's health, probe and active series (the
    /// uplink left the config, or no longer routes the family).
    pub fn forget_uplink_health(&self, uplink: &str, family: &str) {
        let key = labels([("uplink", uplink), ("family", family)]);
        self.uplink_healthy.remove(&key);
        for state in crate::health::quality::UplinkState::ALL {
            self.uplink_state.remove(&labels([
                ("uplink", uplink),
                ("family", family),
                ("state", state.name()),
            ]));
        }
        self.probe_rtt.remove(&key);
        self.probe_loss.remove(&key);
        self.uplink_active.remove(&key);
    }

    /// Removes every per-uplink series of an uplink no longer configured.
    pub fn forget_uplink(&self, uplink: &str) {
        let key = labels([("uplink", uplink)]);
        self.guard_attached.remove(&key);
        self.rx_silence.remove(&key);
        self.uplink_blocked.remove(&key);
        self.uplink_primary.remove(&key);
        for family in ["ipv4", "ipv6"] {
            self.forget_uplink_health(uplink, family);
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
