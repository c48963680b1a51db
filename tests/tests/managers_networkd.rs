//! mhr beside systemd-networkd (its default networkd.conf) configuring the
//! seed lab's uplinks: statically (`Address=`, `Gateway=`: defaults at
//! metric 0) and by DHCP (`DHCP=yes`: defaults at metric 1024).

mod common;

use std::time::Duration;

use common::{
    daemon::DaemonThread,
    managed::{self, AfterFlap, Removes},
    mhr,
};
use mhr_tests::{
    Netns, TempDir,
    managers::{Addressing, ManagedLab, Manager, main_defaults_on, networkd::Networkd},
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
    managed::run_fails_over_and_back(&lab(STATIC), [None, None], AfterFlap::Restores);
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
    managed::run_fails_over_and_back(&lab(DHCP), [None, None], AfterFlap::Restores);
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
    let init = mhr(host, &config, &["init"]);
    assert!(
        init.output
            .contains("#   NOW: systemd-networkd is set to delete foreign routing policy rules and routes"),
        "init names what to set: {}",
        init.output
    );
    let daemon = DaemonThread::start(host, &config, managed::options());
    managed::wait_leaves_by(host, "ens3", Duration::from_secs(5), "the daemon converged");
    let (rules, routes) = (managed::mhrs_rules(host), managed::mhrs_routes(host));
    assert_eq!(rules.len(), 4, "two uplink rules and the two default rules: {rules:#?}");

    let restarted = || managed.manager.restart().unwrap();
    managed::mhr_is_whole_and_quiet_after(
        &managed,
        &rules,
        &routes,
        "networkd's restart",
        Removes::Yes,
        restarted,
    );

    // ens4 unplugged and plugged again: networkd configures the new link.
    let recreated = || managed.lab.recreate_uplink(1).unwrap();
    managed::mhr_is_whole_and_quiet_after(
        &managed,
        &rules,
        &routes,
        "ens4 reappeared",
        Removes::Yes,
        recreated,
    );
    managed
        .wait_for("both defaults in main", Duration::from_secs(10), |host| {
            defaults_in_main(host, "proto static")
        })
        .unwrap();
    managed::wait_leaves_by(host, "ens3", Duration::from_secs(1), "healed");
    daemon.stop();
    assert!(mhr(host, &config, &["down"]).succeeded());
    assert!(
        managed::mhrs_rules(host).is_empty() && managed::mhrs_routes(host).is_empty(),
        "down removed everything of mhr's"
    );
    assert!(managed.manager.log().contains("Configuring with"), "networkd ran: {}", managed.manager.log());
}

#[test]
fn with_the_settings_init_prints_a_networkd_restart_leaves_mhr_alone_and_check_passes() {
    // networkd.conf: ManageForeignRoutingPolicyRules=no, ManageForeignRoutes=no;
    // the .network files: KeepConfiguration=static (without it a restart
    // drops and re-adds the addresses, and the kernel takes every route
    // through them, mhr's tables included).
    let managed = ManagedLab::start(STATIC, |host, dir, addressing| {
        Networkd::start_with(host, dir, addressing, mhr_tests::managers::networkd::KEEP_FOREIGN)
    })
    .unwrap();
    let host = managed.host();
    let dir = TempDir::new("managed").unwrap();
    let config = managed::config(&dir, [None, None]);
    // With its defaults, init names the setting; here it is set.
    let init = mhr(host, &config, &["init"]);
    assert!(init.output.contains("# - systemd-networkd (running (pid"), "{}", init.output);
    assert!(!init.output.contains("#   NOW:"), "nothing to fix: {}", init.output);
    managed::apply_then_down(&managed, [None, None]);
    assert!(mhr(host, &config, &["apply", "--no-guard"]).succeeded());
    let (rules, routes) = (managed::mhrs_rules(host), managed::mhrs_routes(host));
    managed.manager.restart().unwrap();
    managed
        .wait_for("networkd configured again", Duration::from_secs(10), |host| {
            defaults_in_main(host, "proto static")
        })
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        (managed::mhrs_rules(host), managed::mhrs_routes(host)),
        (rules, routes),
        "nothing of mhr's went"
    );
    assert!(mhr(host, &config, &["check"]).succeeded());
    assert!(mhr(host, &config, &["down"]).succeeded());
}
