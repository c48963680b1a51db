use std::{collections::BTreeSet, path::Path, sync::Arc};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

use super::{
    guard::{GuardSource, SCRAPE_SOURCES, Snapshot, encode_snapshot},
    *,
};
use crate::guard::{
    GuardError,
    maps::{EventCounts, OffenderReport, VerdictCounts},
};

/// Every metric name the daemon can export.
fn exported() -> BTreeSet<String> {
    let control = Arc::new(ControlMetrics::default());
    control.reconcile(true);
    control.reconcile(false);
    control.correction("rule_added");
    control.resync("startup");
    control.guard_attached.get_or_create(&labels([("uplink", "ens3")])).set(1);
    let mut health = crate::health::HealthBook::new(crate::config::HealthConfig::default());
    health.observe_link("ens3", crate::model::Family::V4, None, 0);
    let sample = crate::health::RoundSample {
        gateway_unreachable: false,
        probe: Some(crate::health::ProbeOutcome {
            answered: true,
            rtt: Some(std::time::Duration::from_millis(1)),
        }),
        skipped: false,
        passive: None,
        busy: false,
    };
    health.observe_round("ens3", crate::model::Family::V4, None, sample, 1);
    let entry = health.get("ens3", crate::model::Family::V4).unwrap();
    control.uplink_health("ens3", "ipv4", entry, false);
    control.uplink_active("ens3", "ipv4", true);
    control.failover("ipv4", false);
    control.rx_silence.get_or_create(&labels([("uplink", "ens3")])).set(0.5);
    control.hook_runs.get_or_create(&labels([("event", "down"), ("result", "ok")])).inc();
    control.guard_repair("map");
    control.initialise(&[("ens3", true)]);
    control.uplink_blocked.get_or_create(&labels([("uplink", "ens3")])).set(0);
    control.probes.answered("ens3", "tcp:192.0.2.1:443", std::time::Duration::from_millis(3));
    control.probes.loss("ens3", "tcp:192.0.2.1:443", 0.25);
    let mut registry = registry(&control, GuardCollector::new("/nonexistent".into(), 0));
    // The guard's families as the collector encodes them, from a
    // snapshot with one sample each.
    registry.register_collector(Box::new(GuardSample));
    sample_names(&render(&registry).unwrap())
}

/// The metric names in an exposition; a histogram's `_bucket`, `_sum`
/// and `_count` samples count as the histogram's name.
fn sample_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect();
    let histograms: Vec<String> =
        names.iter().filter_map(|name| name.strip_suffix("_bucket")).map(str::to_owned).collect();
    for histogram in histograms {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.remove(&format!("{histogram}{suffix}"));
        }
        names.insert(histogram);
    }
    names
}

#[derive(Debug)]
struct GuardSample;

impl Collector for GuardSample {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = vec![(labels([("uplink", "ens3")]), 1)];
        let snapshot = Snapshot {
            packets: one.clone(),
            bytes: one.clone(),
            dropped: one.clone(),
            flags_emitted: one.clone(),
            flags_suppressed: one.clone(),
            errors: one,
            offenders: Some(1),
            top: vec![(labels([("uplink", "ens3"), ("source", "192.0.2.66")]), 1)],
            tcp: vec![(labels([("uplink", "ens3")]), crate::guard::tcp::TcpCounts::default())],
        };
        encode_snapshot(encoder, Some(&snapshot), true, &[(labels([("source", "pins")]), 0)])
    }
}

#[test]
fn the_documented_guard_metrics_are_what_the_collector_encodes() {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GuardSample));
    let encoded = sample_names(&render(&registry).unwrap());
    let listed: BTreeSet<String> = DATAPATH_METRICS.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(encoded, listed);
}

#[test]
fn control_metrics_follow_prometheus_conventions() {
    let names = exported();
    for name in [
        "mhr_reconciles_total",
        "mhr_drift_corrections_total",
        "mhr_netlink_resyncs_total",
        "mhr_rules_installed",
        "mhr_routes_installed",
        "mhr_last_successful_reconcile_timestamp_seconds",
        "mhr_guard_attached",
        "mhr_build_info",
        "mhr_uplink_healthy",
        "mhr_uplink_primary",
        "mhr_uplink_active",
        "mhr_uplink_probe_rtt_seconds",
        "mhr_uplink_probe_loss_ratio",
        "mhr_failovers_total",
        "mhr_guard_repairs_total",
        "mhr_guard_failures_total",
        "mhr_uplink_blocked",
        "mhr_host_changes_total",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // mhr's own under mhr_, the standard process metrics under process_.
    assert!(names.iter().all(|n| n.starts_with("mhr_") || n.starts_with("process_")), "{names:?}");
    assert!(names.contains("process_cpu_seconds_total") && names.contains("process_open_fds"));
}

/// One healthy IPv4 family with an answered probe.
fn healthy_entry() -> crate::health::FamilyHealth {
    let mut health = crate::health::HealthBook::new(crate::config::HealthConfig::default());
    health.observe_link("ens3", crate::model::Family::V4, None, 0);
    let sample = crate::health::RoundSample {
        gateway_unreachable: false,
        probe: Some(crate::health::ProbeOutcome {
            answered: true,
            rtt: Some(std::time::Duration::from_millis(1)),
        }),
        skipped: false,
        passive: None,
        busy: false,
    };
    health.observe_round("ens3", crate::model::Family::V4, None, sample, 1);
    health.get("ens3", crate::model::Family::V4).unwrap().clone()
}

fn rendered(control: &Arc<ControlMetrics>) -> String {
    render(&registry(control, GuardCollector::new("/nonexistent".into(), 0))).unwrap()
}

#[test]
fn the_primary_is_a_value_not_a_label_and_a_reload_moves_it() {
    let control = Arc::new(ControlMetrics::default());
    let entry = healthy_entry();
    control.initialise(&[("ens3", true), ("ens4", false)]);
    for uplink in ["ens3", "ens4"] {
        control.uplink_health(uplink, "ipv4", &entry, false);
        control.uplink_active(uplink, "ipv4", uplink == "ens3");
    }
    let text = rendered(&control);
    assert!(text.contains("\nmhr_uplink_primary{uplink=\"ens3\"} 1\n"), "{text}");
    assert!(text.contains("\nmhr_uplink_primary{uplink=\"ens4\"} 0\n"), "{text}");
    assert!(text.contains("\nmhr_uplink_healthy{uplink=\"ens3\",family=\"ipv4\"} 1\n"), "{text}");
    assert!(!text.contains("primary=\""), "no series carries a primary label:\n{text}");
    // A reload makes ens4 the primary: the same series change value.
    control.initialise(&[("ens3", false), ("ens4", true)]);
    let text = rendered(&control);
    assert!(text.contains("\nmhr_uplink_primary{uplink=\"ens3\"} 0\n"), "{text}");
    assert!(text.contains("\nmhr_uplink_primary{uplink=\"ens4\"} 1\n"), "{text}");
}

#[test]
fn a_reload_that_removes_an_uplink_removes_all_its_series() {
    let control = Arc::new(ControlMetrics::default());
    let entry = healthy_entry();
    control.initialise(&[("ens3", true), ("ens4", false)]);
    for uplink in ["ens3", "ens4"] {
        for family in ["ipv4", "ipv6"] {
            control.uplink_health(uplink, family, &entry, false);
            control.uplink_active(uplink, family, uplink == "ens3");
        }
        control.rx_silence.get_or_create(&labels([("uplink", uplink)])).set(0.0);
    }
    assert!(rendered(&control).contains("uplink=\"ens3\""));
    // What Daemon::reload does when ens3 leaves and ens4 becomes primary.
    control.forget_uplink("ens3");
    control.initialise(&[("ens4", true)]);
    let text = rendered(&control);
    let left: Vec<&str> = text.lines().filter(|line| line.contains("uplink=\"ens3\"")).collect();
    assert!(left.is_empty(), "ens3's series stay: {left:?}");
    for metric in [
        "mhr_uplink_healthy",
        "mhr_uplink_active",
        "mhr_uplink_probe_rtt_seconds",
        "mhr_uplink_probe_loss_ratio",
    ] {
        assert!(text.contains(&format!("\n{metric}{{uplink=\"ens4\",family=\"ipv6\"}}")), "{metric}: {text}");
    }
    assert!(text.contains("\nmhr_uplink_primary{uplink=\"ens4\"} 1\n"), "{text}");
}

#[test]
fn one_label_name_per_idea() {
    let control = Arc::new(ControlMetrics::default());
    control.initialise(&[("ens3", true)]);
    control.guard_repair("link");
    let text = rendered(&control);
    assert!(text.contains("\nmhr_guard_repairs_total{kind=\"link\"} 1\n"), "{text}");
    assert!(!text.contains("what=\""), "{text}");
}

#[test]
fn the_docs_metrics_table_lists_every_metric_and_no_other() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"))
            .unwrap();
    let table: BTreeSet<String> = docs
        .lines()
        .filter(|line| line.starts_with("| `mhr_") || line.starts_with("| `process_"))
        .flat_map(|line| line.split('|').nth(1).unwrap_or_default().split('`').skip(1).step_by(2))
        .filter(|name| name.starts_with("mhr_") || name.starts_with("process_"))
        .map(str::to_owned)
        .collect();
    let mut names = exported();
    names.extend(DATAPATH_METRICS.iter().map(|n| (*n).to_owned()));
    assert_eq!(
        names.difference(&table).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exported, not in the docs' table"
    );
    assert_eq!(
        table.difference(&names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the docs' table, not exported"
    );
}

#[test]
fn deployment_files_only_use_metrics_mhr_exports() {
    let names = exported();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let files = ["prometheus/alerts.yml", "grafana/mhr-dashboard.json"];
    for file in files {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let used: BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|token| token.starts_with("mhr_") && !token.starts_with("mhr_lab"))
            .collect();
        assert!(!used.is_empty(), "{file} uses mhr metrics");
        for metric in used {
            // A histogram's samples: `_bucket`, `_sum`, `_count`.
            let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|s| metric.strip_suffix(s));
            let exported = names.contains(metric) || histogram.is_some_and(|base| names.contains(base));
            assert!(exported, "{file} uses `{metric}`, which mhr does not export");
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy.join("grafana/mhr-dashboard.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 11));
    let alerts = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap();
    for alert in [
        "MhrPrimaryUplinkUnhealthy",
        "MhrNoHealthyUplink",
        "MhrFailover",
        "MhrUplinkBlocked",
        "MhrGuardRepaired",
        "MhrGuardMapsUnreadable",
    ] {
        assert!(alerts.contains(&format!("alert: {alert}\n")), "{alert} missing");
    }
}

/// Two uplinks' worth of guard maps, one part of which fails to read.
struct FakeGuard {
    failing: &'static str,
}

impl FakeGuard {
    fn fail(&self, part: &'static str) -> Result<(), GuardError> {
        if self.failing == part { Err(GuardError::MissingMap(part)) } else { Ok(()) }
    }
}

impl GuardSource for FakeGuard {
    fn slot_names(&self) -> Result<std::collections::BTreeMap<u32, String>, GuardError> {
        self.fail("slot_names")?;
        Ok([(0, "ens3".to_owned()), (1, "ens4".to_owned())].into())
    }

    fn verdict_counts(&self, _slot: u32) -> Result<VerdictCounts, GuardError> {
        self.fail("verdicts")?;
        let mut counts = VerdictCounts::default();
        counts.0[0][0].packets = 7;
        Ok(counts)
    }

    fn event_counts(&self, _slot: u32) -> Result<EventCounts, GuardError> {
        self.fail("events")?;
        Ok(EventCounts { dropped: 2, ..EventCounts::default() })
    }

    fn offender_entries(&self) -> Result<usize, GuardError> {
        self.fail("offenders")?;
        Ok(3)
    }

    fn offenders(
        &self,
        _names: &std::collections::BTreeMap<u32, String>,
    ) -> Result<Vec<OffenderReport>, GuardError> {
        self.fail("offenders")?;
        Ok(vec![OffenderReport {
            uplink: "ens3".to_owned(),
            source: "192.0.2.66".parse().unwrap(),
            verdict: "spoofed",
            packets: 5,
            bytes: 500,
            first_seen_ns: 0,
            last_seen_ns: 0,
        }])
    }

    fn tcp_counts(&self, slot: u32) -> Result<Option<crate::guard::tcp::TcpCounts>, GuardError> {
        self.fail("tcp")?;
        let mut counts = crate::guard::tcp::TcpCounts { retransmits: 4, ..Default::default() };
        counts.rtt_buckets[2] = 3;
        counts.rtt_sum_us = 2400;
        Ok((slot == 1).then_some(counts))
    }
}

/// The body of two scrapes (the second) of a collector over `open`.
fn scrape_twice(
    open: impl Fn() -> Result<Option<Box<dyn GuardSource>>, GuardError> + Send + Sync + 'static,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GuardCollector::reading(open, 5)));
    render(&registry).unwrap();
    render(&registry).unwrap()
}

fn has_sample(body: &str, prefix: &str) -> bool {
    body.lines().any(|line| line.starts_with(prefix))
}

#[test]
fn a_failed_map_read_leaves_out_only_its_part_and_counts_once_per_scrape() {
    // What each part gives when it reads.
    let parts = [
        ("verdicts", "mhr_guard_packets_total{uplink=\"ens4\",family=\"ipv4\",verdict=\"ok\"} 7"),
        ("events", "mhr_guard_dropped_packets_total{uplink=\"ens4\"} 2"),
        ("offenders", "mhr_guard_offenders 3"),
        ("tcp", "mhr_uplink_tcp_retransmits_total{uplink=\"ens4\"} 4"),
        ("tcp", "mhr_uplink_tcp_rtt_seconds_bucket{uplink=\"ens4\",le=\"0.001\"} 3"),
        ("tcp", "mhr_uplink_tcp_rtt_seconds_bucket{uplink=\"ens4\",le=\"0.0005\"} 0"),
        ("tcp", "mhr_uplink_tcp_rtt_seconds_sum{uplink=\"ens4\"} 0.0024"),
        (
            "offenders",
            "mhr_guard_top_offender_packets{uplink=\"ens3\",source=\"192.0.2.66\",verdict=\"spoofed\"} 5",
        ),
    ];
    for failing in ["slot_names", "verdicts", "events", "offenders", "tcp"] {
        let body = scrape_twice(move || Ok(Some(Box::new(FakeGuard { failing }) as Box<dyn GuardSource>)));
        for source in SCRAPE_SOURCES {
            let count = if source == failing { 2 } else { 0 };
            let line = format!("mhr_scrape_errors_total{{source=\"{source}\"}} {count}");
            assert!(has_sample(&body, &line), "{failing} failing: {line} missing from\n{body}");
        }
        for (part, sample) in parts {
            // The uplinks' series need their names.
            let lost = part == failing || (failing == "slot_names" && sample.contains("uplink=\"ens4\""));
            assert_eq!(has_sample(&body, sample), !lost, "{failing} failing: {sample}\n{body}");
        }
        assert!(has_sample(&body, "mhr_guard_offenders_capacity 1024"), "{body}");
    }
}

#[test]
fn unreadable_pins_are_counted_and_no_guard_is_no_error() {
    let body = scrape_twice(|| Err(GuardError::MissingMap("MHR_UPLINKS")));
    assert!(has_sample(&body, "mhr_scrape_errors_total{source=\"pins\"} 2"), "{body}");
    assert!(!has_sample(&body, "mhr_guard_packets_total"), "{body}");
    let body = scrape_twice(|| Ok(None));
    for source in SCRAPE_SOURCES {
        assert!(has_sample(&body, &format!("mhr_scrape_errors_total{{source=\"{source}\"}} 0")), "{body}");
    }
    assert!(!has_sample(&body, "mhr_guard_"), "no guard, no guard series:\n{body}");
}

#[test]
fn probe_targets_get_a_histogram_and_a_loss_series_until_forgotten() {
    let control = Arc::new(ControlMetrics::default());
    control.probes.answered("ens3", "dns:192.0.2.53", std::time::Duration::from_millis(4));
    control.probes.answered("ens3", "dns:192.0.2.53", std::time::Duration::from_millis(40));
    control.probes.loss("ens3", "dns:192.0.2.53", 0.5);
    let text = rendered(&control);
    let series = "uplink=\"ens3\",target=\"dns:192.0.2.53\"";
    assert!(text.contains(&format!("\nmhr_probe_rtt_seconds_count{{{series}}} 2\n")), "{text}");
    assert!(text.contains(&format!("\nmhr_probe_rtt_seconds_bucket{{{series},le=\"0.005\"}} 1\n")), "{text}");
    assert!(text.contains(&format!("\nmhr_probe_loss_ratio{{{series}}} 0.5\n")), "{text}");
    control.probes.forget("ens3", "dns:192.0.2.53");
    let text = rendered(&control);
    assert!(!text.contains("target=\"dns:192.0.2.53\""), "{text}");
}
