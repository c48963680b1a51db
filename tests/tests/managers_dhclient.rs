//! mhr beside ISC dhclient with Debian's dhclient-script, leasing both of
//! the seed lab's uplinks from dnsmasq in the routers: the first lease's
//! default lands in main at metric 0, the second's not at all.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::managed::{self, AfterFlap};
use mhr_tests::{
    managers::{Addressing, ManagedLab, dhclient::Dhclient},
    require_root,
    seed_lab::UPLINKS,
};

/// A lab whose uplinks dhclient leased; one default in main, at metric 0.
/// Returns it with mhr's gateways: for the uplink without a default in any
/// route, the lab's gateway. mhr cannot learn it yet (learning it from
/// dhclient's lease file is separate work), so the config names it.
fn lab() -> (ManagedLab<Dhclient>, [Option<Ipv4Addr>; 2]) {
    require_root();
    let managed = ManagedLab::start([Addressing::Dhcp; 2], Dhclient::start).unwrap();
    managed
        .wait_for("one default in main", Duration::from_secs(10), |host| {
            let defaults = host.ip(["-4", "route", "show", "default", "table", "main"]).unwrap_or_default();
            match defaults.lines().count() {
                1 if !defaults.contains("metric") => Ok(()),
                _ => Err(defaults),
            }
        })
        .unwrap();
    let mut gateways = [None, None];
    let without = Dhclient::without_default(managed.host());
    assert_eq!(without.len(), 1, "dhclient-script installs one default: {without:?}\n{}", managed.report());
    for (index, _) in without {
        gateways[index] = Some(UPLINKS[index].gateway);
    }
    (managed, gateways)
}

#[test]
fn apply_then_down_leaves_dhclients_routes() {
    let (managed, gateways) = lab();
    managed::apply_then_down(&managed, gateways);
}

/// dhclient does not put back a default the kernel removed with ens3's
/// link; mhr keeps routing host traffic by ens3 all the same.
#[test]
fn run_fails_over_and_back() {
    let (managed, gateways) = lab();
    managed::run_fails_over_and_back(&managed, gateways, AfterFlap::Forgets);
}
