//! mhr beside systemd-networkd (its default networkd.conf) configuring the
//! seed lab's uplinks: statically (`Address=`, `Gateway=`: defaults at
//! metric 0) and by DHCP (`DHCP=yes`: defaults at metric 1024).

mod common;

use std::time::Duration;

use common::{
    daemon::{DaemonThread, METRICS_PORT, eventually},
    managed, mhr,
};
use mhr_tests::{
    Netns, TempDir,
    managers::{Addressing, ManagedLab, Manager, main_defaults_on, networkd::Networkd},
    probe::http_get,
    require_root,
};

const STATIC: [Addressing; 2] = [Addressing::Static, Addressing::Static];
const DHCP: [Addressing; 2] = [Addressing::Dhcp, Addressing::Dhcp];

/// A lab whose uplinks networkd configured, both defaults in main.
fn lab(addressing: [Addressing; 2]) -> ManagedLab<Networkd> {
    require_root();
    let managed = ManagedLab::start(addressing, Networkd::start).unwrap();
    let metric = if addressing == STATIC { "proto static" } else { "proto dhcp" };
    managed
        .wait_for("both defaults in main", Duration::from_secs(20), |host| defaults_in_main(host, metric))
        .unwrap();
    managed
}

/// Ok once main holds networkd's default on each uplink (`proto`).
fn defaults_in_main(host: &Netns, proto: &str) -> Result<(), String> {
    for interface in ["ens3", "ens4"] {
        let defaults = main_defaults_on(host, interface);
        if !defaults.iter().any(|route| route.contains(proto)) {
            return Err(format!("{interface}: {defaults:?}"));
        }
    }
    Ok(())
}

#[test]
fn static_addresses_apply_then_down_leaves_networkds_routes() {
    let managed = lab(STATIC);
    let defaults = main_defaults_on(managed.host(), "ens4");
    assert!(defaults.iter().all(|route| !route.contains("metric")), "Gateway= is at metric 0: {defaults:?}");
    managed::apply_then_down(&managed, [None, None]);
}

#[test]
fn static_addresses_run_fails_over_and_back() {
    managed::run_fails_over_and_back(&lab(STATIC), [None, None]);
}

#[test]
fn dhcp_apply_then_down_leaves_networkds_routes() {
    let managed = lab(DHCP);
    let defaults = main_defaults_on(managed.host(), "ens4");
    assert!(
        defaults.iter().all(|route| route.contains("metric 1024")),
        "DHCP= is at metric 1024: {defaults:?}"
    );
    managed::apply_then_down(&managed, [None, None]);
}

#[test]
fn dhcp_run_fails_over_and_back() {
    managed::run_fails_over_and_back(&lab(DHCP), [None, None]);
}

/// mhr's rules (priority 7101…7299, proto 210) and its routes' tables.
fn mhrs_rules(host: &Netns) -> Vec<String> {
    let rules = host.ip(["-4", "rule", "show"]).unwrap();
    rules.lines().filter(|line| line.contains("proto 210")).map(str::to_owned).collect()
}

fn mhrs_routes(host: &Netns) -> Vec<String> {
    let routes = host.ip(["-4", "route", "show", "table", "all", "proto", "210"]).unwrap();
    let mut routes: Vec<String> = routes.lines().map(str::to_owned).collect();
    routes.sort();
    routes
}

/// networkd configuring a link removes every routing policy rule it did not
/// make (ManageForeignRoutingPolicyRules=yes) and the link's routes it did
/// not make, in every table (ManageForeignRoutes=yes): on a restart (all
/// links), and when a link it manages appears (that link's routes, every
/// rule). Under `mhr run` both heal, and afterwards mhr's rules and routes
/// stay put (no fight).
#[test]
fn a_networkd_restart_and_a_new_link_under_mhr_run_are_healed_without_a_fight() {
    let managed = lab(STATIC);
    let host = managed.host();
    let dir = TempDir::new("managed").unwrap();
    let config = managed::config(&dir, [None, None]);
    let daemon = DaemonThread::start(host, &config, managed::options());
    managed::wait_leaves_by(host, "ens3", Duration::from_secs(5), "the daemon converged");
    let (rules, routes) = (mhrs_rules(host), mhrs_routes(host));
    assert_eq!(rules.len(), 4, "two uplink rules and the two default rules: {rules:#?}");

    managed.manager.restart().unwrap();
    healed_and_quiet(&managed, &rules, &routes, "networkd's restart");

    // ens4 unplugged and plugged again: networkd configures the new link.
    managed.lab.recreate_uplink(1).unwrap();
    healed_and_quiet(&managed, &rules, &routes, "ens4 reappeared");
    managed::wait_leaves_by(host, "ens3", Duration::from_secs(1), "healed");
    daemon.stop();
    assert!(mhr(host, &config, &["down"]).succeeded());
    assert!(mhrs_rules(host).is_empty() && mhrs_routes(host).is_empty(), "down removed everything of mhr's");
    assert!(managed.manager.log().contains("Configuring with"), "networkd ran: {}", managed.manager.log());
}

/// mhr's corrections of drift so far (every kind).
fn corrections(host: &Netns) -> f64 {
    let body = http_get(host, METRICS_PORT, "/metrics").map(|(_, body)| body).unwrap_or_default();
    body.lines()
        .filter(|line| line.starts_with("mhr_drift_corrections_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// After `event`: networkd removed something of mhr's (mhr corrected it),
/// mhr's rules and routes are all back, and once networkd has settled
/// (1 s) they do not change for 3 s (sampled every 100 ms) and mhr
/// corrects nothing more: no fight.
fn healed_and_quiet(managed: &ManagedLab<Networkd>, rules: &[String], routes: &[String], event: &str) {
    let host = managed.host();
    let before = corrections(host);
    let healed = || {
        let now = (mhrs_rules(host), mhrs_routes(host));
        if corrections(host) > before && now.0 == rules && now.1 == routes {
            Ok(())
        } else {
            Err(format!("{} corrections since; {now:#?}\n{}", corrections(host) - before, managed.report()))
        }
    };
    eventually(
        &format!("networkd removed mhr's objects and mhr put them back after {event}"),
        Duration::from_secs(10),
        healed,
    );
    std::thread::sleep(Duration::from_secs(1));
    let settled = corrections(host);
    for _ in 0..30 {
        assert_eq!(mhrs_rules(host), rules, "mhr's rules stay put after {event}");
        assert_eq!(mhrs_routes(host), routes, "mhr's routes stay put after {event}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(corrections(host), settled, "no fight with networkd after {event}");
    managed
        .wait_for("both defaults in main", Duration::from_secs(10), |host| {
            defaults_in_main(host, "proto static")
        })
        .unwrap();
}
