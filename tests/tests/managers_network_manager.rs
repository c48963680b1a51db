//! mhr beside NetworkManager (with its own D-Bus) configuring the seed
//! lab's uplinks: ens3 by a static connection (`method=manual`), ens4 by
//! DHCP (`method=auto`, its internal client); NetworkManager sets the
//! defaults' metrics itself (100 and 101).

mod common;

use std::time::Duration;

use common::{
    daemon::{DaemonThread, eventually},
    managed::{self, AfterFlap, Removes},
    mhr,
};
use mhr_tests::{
    Netns, TempDir,
    managers::{Addressing, ManagedLab, Manager, main_defaults_on, network_manager::NetworkManager},
    require_root,
};

const ADDRESSING: [Addressing; 2] = [Addressing::Static, Addressing::Dhcp];

/// A lab whose uplinks NetworkManager configured, both defaults in main.
fn lab() -> ManagedLab<NetworkManager> {
    require_root();
    let managed = ManagedLab::start(ADDRESSING, NetworkManager::start).unwrap();
    managed.wait_for("both defaults in main", Duration::from_secs(20), defaults_in_main).unwrap();
    managed
}

fn defaults_in_main(host: &Netns) -> Result<(), String> {
    let expected = [("ens3", "proto static"), ("ens4", "proto dhcp")];
    for (interface, proto) in expected {
        let defaults = main_defaults_on(host, interface);
        if !defaults.iter().any(|route| route.contains(proto)) {
            return Err(format!("{interface}: {defaults:?}"));
        }
    }
    Ok(())
}

#[test]
fn a_static_and_a_dhcp_connection_apply_then_down_leaves_network_managers_routes() {
    managed::apply_then_down(&lab(), [None, None]);
}

#[test]
fn a_static_and_a_dhcp_connection_run_fails_over_and_back() {
    managed::run_fails_over_and_back(&lab(), [None, None], AfterFlap::Restores);
}

/// NetworkManager restarting (SIGTERM, start again; its /run state kept,
/// as on a host) takes its devices back and leaves mhr's rules and routes
/// alone: mhr has nothing to correct and nothing changes.
#[test]
fn a_network_manager_restart_under_mhr_run_leaves_mhrs_rules_and_routes_alone() {
    let managed = lab();
    let host = managed.host();
    let dir = TempDir::new("managed").unwrap();
    let config = managed::config(&dir, [None, None]);
    let daemon = DaemonThread::start(host, &config, managed::options());
    managed::wait_leaves_by(host, "ens3", Duration::from_secs(5), "the daemon converged");
    // NetworkManager's own default leaves by ens3 too: wait for mhr's rules.
    eventually("two uplink rules and the two default rules", Duration::from_secs(5), || {
        let rules = managed::mhrs_rules(host);
        if rules.len() == 4 { Ok(()) } else { Err(format!("{rules:#?}")) }
    });
    let (rules, routes) = (managed::mhrs_rules(host), managed::mhrs_routes(host));

    let restarted = || managed.manager.restart().unwrap();
    managed::mhr_is_whole_and_quiet_after(&managed, &rules, &routes, "its restart", Removes::No, restarted);
    managed.wait_for("both defaults in main", Duration::from_secs(10), defaults_in_main).unwrap();
    assert!(managed.manager.log().contains("startup complete"), "{}", managed.manager.log());
    managed::wait_leaves_by(host, "ens3", Duration::from_secs(1), "after the restart");
    daemon.stop();
    assert!(mhr(host, &config, &["down"]).succeeded());
}
