//! The registry behind `/metrics`: the control plane's families, the
//! guard's collector and the process metrics, and their rendering.

use prometheus_client::{metrics::info::Info, registry::Registry};

use super::{ControlMetrics, GuardCollector};

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
        "mhr_uplink_state",
        "1 for the uplink family's state (healthy, degraded, down, drained), 0 for the others",
        control.uplink_state.clone(),
    );
    registry.register(
        "mhr_uplink_primary",
        "1 for the uplink configured as primary, 0 for the other configured uplinks",
        control.uplink_primary.clone(),
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
        "mhr_uplink_rx_silence_seconds",
        "How long the uplink has been sending with nothing received (0 while it receives or sends nothing)",
        control.rx_silence.clone(),
    );
    registry.register(
        "mhr_probe_rtt_seconds",
        "Round-trip time of each answered probe, by uplink and target",
        control.probes.rtt.clone(),
    );
    registry.register(
        "mhr_probe_loss_ratio",
        "Fraction of the probe rounds in [health] window the target did not answer, by uplink and target",
        control.probes.loss.clone(),
    );
    registry.register(
        "mhr_failback_resets",
        "TCP connections a failover put on a backup, closed when main's default returned to the primary (failback = \"reset\")",
        control.failback_resets.clone(),
    );
    registry.register(
        "mhr_hook_runs",
        "Runs of [[hook]] programs, by event and result (ok, failed, timeout, skipped: all slots busy)",
        control.hook_runs.clone(),
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
        "Guard pins (map) and links (link) found removed and put back, by kind",
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
