//! mhr beside ISC dhclient with Debian's dhclient-script, leasing both of
//! the seed lab's uplinks from dnsmasq in the routers: the first lease's
//! default lands in main at metric 0, the second's not at all.

mod common;

use std::time::Duration;

use common::managed::{self, AfterFlap};
use mhr_tests::{
    managers::{Addressing, ManagedLab, dhclient::Dhclient},
    require_root,
};

/// A lab whose uplinks dhclient leased; one default in main, at metric 0.
/// Returns it with the config lines per uplink: the uplink without a
/// default in any route names dhclient's lease file (the lab keeps it in
/// its own directory; on a host mhr finds /var/lib/dhcp/dhclient*.leases by
/// itself), and mhr learns its gateway from it.
fn lab() -> (ManagedLab<Dhclient>, [String; 2]) {
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
    let mut lines = [String::new(), String::new()];
    let without = Dhclient::without_default(managed.host());
    assert_eq!(without.len(), 1, "dhclient-script installs one default: {without:?}\n{}", managed.report());
    let lease = managed.dir().join("dhclient/dhclient.leases");
    for (index, _) in without {
        lines[index] = format!("dhcp_lease = \"{}\"\n", lease.display());
    }
    (managed, lines)
}

#[test]
fn apply_then_down_leaves_dhclients_routes() {
    let (managed, lines) = lab();
    managed::apply_then_down_with(&managed, lines.clone());
    // The gateway no route names came from the lease, and status says so.
    let dir = mhr_tests::TempDir::new("managed").unwrap();
    let config = managed::config_with(&dir, lines);
    let status = common::mhr(managed.host(), &config, &["status"]);
    assert!(
        status.output.contains("gateway: 10.0.") && status.output.contains("(from dhclient's lease)"),
        "{}",
        status.output
    );
}

/// dhclient does not put back a default the kernel removed with ens3's
/// link; mhr keeps routing host traffic by ens3 all the same.
#[test]
fn run_fails_over_and_back() {
    let (managed, lines) = lab();
    managed::run_fails_over_and_back_with(&managed, lines, AfterFlap::Forgets);
}
