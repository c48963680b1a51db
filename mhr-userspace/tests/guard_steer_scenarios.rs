//! Steer mode's targets on the in-memory kernel model, in paused time: the
//! daemon tells the guard where each uplink's packets may be steered (its
//! gateway per family), and takes an uplink away as a target while it is
//! down or failing its probes, keeping its addresses its own.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{Scenario, wait_until, with_daemon_options};
use mhr_userspace::{
    daemon::DaemonOptions,
    guard::{Enforcement, SteerRoute, SteerVia},
    southbound::model::KernelModel,
};

const PATIENCE: Duration = Duration::from_secs(60);

fn steer_to(model: &KernelModel, interface: &str) -> Option<SteerRoute> {
    model.guard().uplinks.iter().find(|u| u.interface == interface).map(|u| u.steer_to)
}

/// One line per guarded uplink: what it takes.
fn targets(model: &KernelModel) -> String {
    let uplinks = model.guard().uplinks;
    uplinks.iter().map(|u| format!("{} takes {}", u.interface, u.steer_to)).collect::<Vec<_>>().join("; ")
}

fn via(gateway: &str) -> Option<SteerVia> {
    Some(SteerVia::Gateway(gateway.parse().unwrap()))
}

#[tokio::test(start_paused = true)]
async fn an_uplink_takes_steered_packets_only_while_it_is_up_and_healthy() {
    let mut s = Scenario::new("guard-steer", "seed-host.txt", "guard-steer.toml");
    let model = s.model.clone();
    let options = DaemonOptions { guard: true, ..common::daemon_options() };
    let reachable = SteerRoute { ipv4: via("10.0.4.1"), ipv6: via("2001:db8:4::1") };
    let own: IpAddr = "10.0.4.10".parse().unwrap();
    with_daemon_options(s.engine(), options, async {
        wait_until(&model, PATIENCE, "ens4 takes steered packets", || {
            steer_to(&model, "ens4") == Some(reachable)
        })
        .await;
        let guard = model.guard();
        assert!(
            guard.uplinks.iter().all(|u| u.enforcement == Enforcement::Steer { drop_unsteerable: false }),
            "{guard:?}"
        );
        s.step("mhr run starts in steer mode");
        s.say(&format!("steer targets: {}", targets(&model)));

        model.silence("ens4", true);
        // It probes IPv4 only: IPv6 is judged by the link, and stays.
        let ipv6_only = SteerRoute { ipv4: None, ..reachable };
        wait_until(&model, PATIENCE, "ens4 no longer an IPv4 target", || {
            steer_to(&model, "ens4") == Some(ipv6_only)
        })
        .await;
        s.step("ens4's probes fail");
        s.say(&format!("steer targets: {}", targets(&model)));
        model.silence("ens4", false);
        wait_until(&model, PATIENCE, "ens4 a target again", || steer_to(&model, "ens4") == Some(reachable))
            .await;
        s.step("ens4's probes answer again");
        s.say(&format!("steer targets: {}", targets(&model)));

        model.set_link("ens4", false, false);
        wait_until(&model, PATIENCE, "ens4 down: no target", || {
            steer_to(&model, "ens4") == Some(SteerRoute::default())
        })
        .await;
        let held = model.guard().uplinks.iter().any(|u| u.interface == "ens4" && u.addresses.contains(&own));
        assert!(held, "a down uplink's address is still its own, not spoofed");
        s.step("ens4's link goes down");
        s.say(&format!("steer targets: {}", targets(&model)));
    })
    .await;
    s.finish();
}
