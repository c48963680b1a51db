//! mhr beside dhcpcd (as the DHCP lab runs it: a process per uplink, its
//! defaults at metrics 100 and 200) leasing the seed lab's uplinks from
//! dnsmasq in the routers. The DHCP lab's own tests (failover.rs,
//! daemon.rs) cover renewals, leases that change and re-created links.

mod common;

use std::time::Duration;

use common::managed::{self, AfterFlap};
use mhr_tests::{
    Netns,
    managers::{Addressing, ManagedLab, dhcpcd::Dhcpcd, main_defaults_on},
    require_root,
};

/// A lab whose uplinks dhcpcd leased, both defaults in main.
fn lab() -> ManagedLab<Dhcpcd> {
    require_root();
    let managed = ManagedLab::start([Addressing::Dhcp; 2], Dhcpcd::start).unwrap();
    managed.wait_for("both defaults in main", Duration::from_secs(20), defaults_in_main).unwrap();
    managed
}

fn defaults_in_main(host: &Netns) -> Result<(), String> {
    for (interface, metric) in [("ens3", "metric 100"), ("ens4", "metric 200")] {
        let defaults = main_defaults_on(host, interface);
        if !defaults.iter().any(|route| route.contains("proto dhcp") && route.contains(metric)) {
            return Err(format!("{interface}: {defaults:?}"));
        }
    }
    Ok(())
}

#[test]
fn apply_then_down_leaves_dhcpcds_routes() {
    managed::apply_then_down(&lab(), [None, None]);
}

#[test]
fn run_fails_over_and_back() {
    managed::run_fails_over_and_back(&lab(), [None, None], AfterFlap::Restores);
}
