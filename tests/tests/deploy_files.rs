//! The shipped deployment files say what the operator needs: the systemd
//! unit grants what mhr uses and hardens the rest, every alert waits and
//! links a runbook that exists, and the dashboard keeps hosts apart.
//! (That they use only exported metrics is checked in mhr-userspace's
//! metrics tests; that the alerts fire, by promtool in `cargo xtask test`.)

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace().join(relative)).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

/// `Key=value` settings of a unit, in order (comments and sections left out).
fn settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .collect()
}

fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    settings(unit).into_iter().filter(|(k, _)| *k == key).map(|(_, v)| v).collect()
}

#[test]
fn the_unit_grants_what_mhr_uses_and_hardens_the_rest() {
    let unit = read("deploy/systemd/mhr.service");
    // Netlink and TC (NET_ADMIN), bpf (BPF, PERFMON), raw ICMP probes and
    // sockets bound to an uplink (NET_RAW); nothing else.
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let mut caps: Vec<&str> = values(&unit, key).iter().flat_map(|v| v.split_whitespace()).collect();
        caps.sort_unstable();
        assert_eq!(caps, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"], "{key}");
    }
    assert!(values(&unit, "Documentation").iter().any(|v| v.split_whitespace().any(|d| d == "man:mhr(8)")));
    // A host without rt_tables.d still starts the service; bpffs stays writable.
    let writable: Vec<&str> =
        values(&unit, "ReadWritePaths").iter().flat_map(|v| v.split_whitespace()).collect();
    assert!(writable.contains(&"-/etc/iproute2/rt_tables.d"), "{writable:?}");
    assert!(writable.contains(&"/sys/fs/bpf"), "{writable:?}");
    assert_eq!(values(&unit, "StateDirectory"), ["mhr"]);
    assert_eq!(values(&unit, "ProtectSystem"), ["strict"]);
    for (key, value) in [
        ("ProtectClock", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictRealtime", "yes"),
        ("NoNewPrivileges", "yes"),
        ("UMask", "0077"),
    ] {
        assert_eq!(values(&unit, key), [value], "{key}");
    }
    // Hardening that would break mhr is not there: /proc/sys and /sys stay
    // writable (sysctls, bpffs), netlink is allowed.
    assert!(values(&unit, "ProtectKernelTunables").is_empty());
    let families = values(&unit, "RestrictAddressFamilies").join(" ");
    for family in ["AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.split_whitespace().any(|f| f == family), "{family} in {families}");
    }
}

/// `(name, block)` for every `- alert:` in the rules file.
fn alerts(rules: &str) -> Vec<(String, String)> {
    rules
        .split("- alert: ")
        .skip(1)
        .map(|block| {
            let name = block.lines().next().unwrap_or_default().trim().to_owned();
            (name, block.to_owned())
        })
        .collect()
}

/// GitHub's anchors for the `###` headings of a markdown file.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .map(|heading| {
            heading
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_waits_describes_itself_and_links_a_runbook_that_exists() {
    let rules = read("deploy/prometheus/alerts.yml");
    let docs = read("docs/configuration.md");
    let anchors = anchors(&docs);
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 17, "{} alerts", alerts.len());
    for (name, block) in &alerts {
        assert!(block.contains("\n        for: "), "{name} has no for:");
        assert!(block.contains("\n          description: "), "{name} has no description");
        let url = block
            .lines()
            .find_map(|line| line.trim().strip_prefix("runbook_url: "))
            .unwrap_or_else(|| panic!("{name} has no runbook_url"))
            .trim_matches('"');
        let (page, anchor) = url.split_once('#').unwrap_or_else(|| panic!("{name}: {url} names no section"));
        assert!(page.ends_with("/docs/configuration.md"), "{name}: {url}");
        assert_eq!(anchor, name.to_lowercase(), "{name}'s runbook is its own section");
        assert!(anchors.iter().any(|a| a == anchor), "{name}: no `### {name}` in docs/configuration.md");
    }
    for name in [
        "MhrDown",
        "MhrTargetMissing",
        "MhrAbsent",
        "MhrGuardErrors",
        "MhrConfigReloadFailed",
        "MhrObjectContested",
        "MhrStateWriteFailing",
        "MhrReconcileFailing",
    ] {
        assert!(alerts.iter().any(|(n, _)| n == name), "{name} missing");
    }
}

#[test]
fn the_dashboard_keeps_hosts_apart_with_one_unit_per_panel() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/mhr-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = String::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
        assert!(unit.is_some_and(|u| !u.is_empty()), "{title}: no unit");
        let overrides = panel["fieldConfig"]["overrides"].to_string();
        assert!(!overrides.contains("\"unit\""), "{title}: a second unit in its overrides");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().unwrap_or_default();
            exprs += expr;
            // Every aggregation keeps the instance: no host merged with another.
            let mut rest = expr;
            while let Some(at) = rest.find(|c: char| c.is_ascii_lowercase()) {
                rest = &rest[at..];
                let word: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[word.len()..];
                if ["sum", "max", "min", "avg", "count"].contains(&word.as_str()) {
                    let clause = rest.trim_start();
                    assert!(clause.starts_with("by (instance"), "{title}: `{expr}` merges hosts");
                }
            }
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            assert!(legend.contains("{{instance}}"), "{title}: legend `{legend}` does not name the host");
        }
    }
    for metric in [
        "mhr_guard_errors_total",
        "mhr_guard_repairs_total",
        "mhr_drift_contested_objects",
        "mhr_config_reload_success",
    ] {
        assert!(exprs.contains(metric), "no panel shows {metric}");
    }
}
