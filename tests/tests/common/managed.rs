//! The scenario every real network manager goes through on the seed lab
//! (tests/tests/managers_*.rs): mhr applies and runs beside it, both
//! floating IPs answer, host traffic leaves by the primary, failover and
//! fail-back, and `mhr down` leaves exactly what the manager made.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use mhr_tests::{
    Netns, SeedLab, TempDir,
    managers::{ManagedLab, Manager},
    probe::{TcpResponder, http_get, ping, tcp_exchange},
    seed_lab::{CLIENT, routing_section},
};
use mhr_userspace::daemon::DaemonOptions;

use super::{
    daemon::{DaemonThread, METRICS_PORT, eventually},
    mhr, write_config,
};

const TIMEOUT: Duration = Duration::from_secs(1);

/// mhr's config for a managed lab: ens3 primary, both uplinks probing the
/// internet client every 200 ms (down after 3 misses, up after 3 answers);
/// a gateway per uplink only where `gateways` names one.
pub fn config(dir: &TempDir, gateways: [Option<Ipv4Addr>; 2]) -> PathBuf {
    config_with(dir, gateway_lines(gateways))
}

/// `gateway = "…"` lines where `gateways` names one.
pub fn gateway_lines(gateways: [Option<Ipv4Addr>; 2]) -> [String; 2] {
    gateways.map(|gateway| gateway.map_or_else(String::new, |gateway| format!("gateway = \"{gateway}\"\n")))
}

/// [`config`] with `lines` (whole lines) added to each uplink.
pub fn config_with(dir: &TempDir, lines: [String; 2]) -> PathBuf {
    let gateway = |index: usize| lines[index].clone();
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{}probe = [\"{CLIENT}\"]\n\n\
         [[uplink]]\ninterface = \"ens4\"\n{}probe = [\"{CLIENT}\"]\n\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\ndown_after = 3\nup_after = 3\n\n{}",
        gateway(0),
        gateway(1),
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

pub fn options() -> DaemonOptions {
    DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() }
}

/// Every rule and route of both families, one per line, sorted (the
/// kernel's dump order of equal routes is not part of the state).
pub fn routing(host: &Netns) -> Vec<String> {
    let mut lines = Vec::new();
    for family in ["-4", "-6"] {
        for args in [&["rule", "show"][..], &["route", "show", "table", "all"]] {
            let output = host.ip(std::iter::once(family).chain(args.iter().copied())).expect("ip");
            lines.extend(output.lines().map(|line| line.trim_end().to_owned()));
        }
    }
    lines.sort();
    lines
}

/// The lines `routing` shows only on one side, for a readable failure.
pub fn difference(before: &[String], after: &[String]) -> String {
    let gone: Vec<&String> = before.iter().filter(|line| !after.contains(line)).collect();
    let new: Vec<&String> = after.iter().filter(|line| !before.contains(line)).collect();
    format!("gone: {gone:#?}\nnew: {new:#?}")
}

/// The interface `ip route get` names for host traffic to the client.
pub fn leaves_by(host: &Netns) -> String {
    let answer = host.ip(["-4", "route", "get", &CLIENT.to_string()]).unwrap_or_default();
    answer.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("nowhere").to_owned()
}

/// Waits until host traffic leaves by `interface`, then checks the host
/// reaches the client.
pub fn wait_leaves_by(host: &Netns, interface: &str, within: Duration, why: &str) {
    eventually(&format!("host traffic leaves by {interface} ({why})"), within, || {
        let way = leaves_by(host);
        if way == interface { Ok(()) } else { Err(way) }
    });
    let reached = (0..3).any(|_| ping(host, IpAddr::V4(CLIENT), TIMEOUT).unwrap_or(false));
    assert!(reached, "the host reaches the client by {interface} ({why})");
}

/// Both floating IPs answer ping and TCP from the internet client, and no
/// reply left by the wrong uplink (the routers dropped nothing as spoofed).
pub fn assert_both_floating_ips_answer(lab: &SeedLab, responder: &TcpResponder) {
    let drops_before: Vec<u64> = (0..2).map(|index| lab.spoof_drops(index).unwrap()).collect();
    for uplink in lab.uplinks() {
        let floating = IpAddr::V4(uplink.floating);
        let pinged = (0..3).any(|_| ping(&lab.client, floating, TIMEOUT).unwrap());
        assert!(pinged, "{} ({}) answers ping", uplink.floating, uplink.interface);
        let service = SocketAddr::new(floating, responder.port());
        assert!(
            tcp_exchange(&lab.client, service, TIMEOUT).unwrap(),
            "{service} ({}) answers TCP",
            uplink.interface
        );
    }
    let drops_after: Vec<u64> = (0..2).map(|index| lab.spoof_drops(index).unwrap()).collect();
    assert_eq!(drops_after, drops_before, "no reply left by the other uplink");
}

/// `mhr apply` beside the manager converges (`mhr check` passes), both
/// floating IPs answer, host traffic leaves by the primary, and `mhr down`
/// leaves every rule and route as the manager made them.
pub fn apply_then_down<M: Manager>(managed: &ManagedLab<M>, gateways: [Option<Ipv4Addr>; 2]) {
    apply_then_down_with(managed, gateway_lines(gateways));
}

/// [`apply_then_down`] with `lines` added to each uplink's config.
pub fn apply_then_down_with<M: Manager>(managed: &ManagedLab<M>, lines: [String; 2]) {
    let (lab, host) = (&managed.lab, managed.host());
    let responder = TcpResponder::start(host, 0).unwrap();
    let before = routing(host);
    let dir = TempDir::new("managed").unwrap();
    let config = config_with(&dir, lines);

    let applied = mhr(host, &config, &["apply", "--no-guard"]);
    assert!(
        applied.succeeded(),
        "apply beside {}: {applied:?}\n{}",
        managed.manager.name(),
        managed.report()
    );
    let check = mhr(host, &config, &["check"]);
    let failed: Vec<&str> = check.output.lines().filter(|line| line.starts_with("FAIL")).collect();
    if managed.manager.deletes_foreign() {
        // check knows the neighbour: networkd's defaults delete mhr's objects.
        assert_eq!(
            failed,
            [
                "FAIL  systemd-networkd leaves mhr's rules and routes alone: systemd-networkd is set to delete foreign routing policy rules and routes: mhr's would go on every networkd restart"
            ],
            "{check:?}"
        );
    } else {
        assert!(check.succeeded(), "{check:?}\n{}", managed.report());
    }
    assert_both_floating_ips_answer(lab, &responder);
    assert_eq!(leaves_by(host), "ens3", "host traffic leaves by the primary\n{}", managed.report());

    let down = mhr(host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    let after = routing(host);
    assert!(
        after == before,
        "down leaves what {} made:\n{}",
        managed.manager.name(),
        difference(&before, &after)
    );
}

/// Whether a manager puts back what the kernel removed with a link that
/// went administratively down (its default route) once the link is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFlap {
    Restores,
    /// dhclient: not until its lease is bound anew.
    Forgets,
}

/// `mhr run` beside the manager: converges, both floating IPs answer,
/// fails over when the primary goes administratively down, loses its
/// carrier and when its upstream goes silent, fails back each time, and `mhr down` removes
/// exactly mhr's rules and routes. With `AfterFlap::Restores` every rule
/// and route is then as the manager made them before mhr started.
pub fn run_fails_over_and_back<M: Manager>(
    managed: &ManagedLab<M>,
    gateways: [Option<Ipv4Addr>; 2],
    after_flap: AfterFlap,
) {
    run_fails_over_and_back_with(managed, gateway_lines(gateways), after_flap);
}

/// [`run_fails_over_and_back`] with `lines` added to each uplink's config.
pub fn run_fails_over_and_back_with<M: Manager>(
    managed: &ManagedLab<M>,
    lines: [String; 2],
    after_flap: AfterFlap,
) {
    let (lab, host) = (&managed.lab, managed.host());
    let responder = TcpResponder::start(host, 0).unwrap();
    let before = routing(host);
    let dir = TempDir::new("managed").unwrap();
    let config = config_with(&dir, lines);

    let daemon = DaemonThread::start(host, &config, options());
    wait_leaves_by(host, "ens3", Duration::from_secs(5), "the daemon converged");
    assert_both_floating_ips_answer(lab, &responder);

    host.ip(["link", "set", "ens3", "down"]).unwrap();
    wait_leaves_by(host, "ens4", Duration::from_secs(2), "ens3 administratively down");
    // An outage, not a blip: the manager has taken note (networkd removes
    // its address and routes on carrier loss; brought up again while that
    // is in flight, it races itself, re-adds its gateway before the
    // address's prefix route is back, fails and leaves the link without
    // its default).
    std::thread::sleep(Duration::from_secs(1));
    host.ip(["link", "set", "ens3", "up"]).unwrap();
    wait_leaves_by(host, "ens3", Duration::from_secs(15), "ens3 up again");
    assert_both_floating_ips_answer(lab, &responder);

    // The router's side goes down: ens3 stays up, without carrier.
    lab.routers[0].ip(["link", "set", "lan", "down"]).unwrap();
    wait_leaves_by(host, "ens4", Duration::from_secs(2), "ens3 without carrier");
    std::thread::sleep(Duration::from_secs(1));
    lab.routers[0].ip(["link", "set", "lan", "up"]).unwrap();
    wait_leaves_by(host, "ens3", Duration::from_secs(15), "ens3's carrier back");

    lab.silence_upstream(0).unwrap();
    wait_leaves_by(host, "ens4", Duration::from_secs(5), "ens3's upstream silent");
    lab.restore_upstream(0).unwrap();
    wait_leaves_by(host, "ens3", Duration::from_secs(5), "ens3's upstream back");
    assert_both_floating_ips_answer(lab, &responder);
    daemon.stop();

    let others: Vec<String> = routing(host).into_iter().filter(|line| !line.contains("proto 210")).collect();
    let down = mhr(host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    let after = routing(host);
    assert!(after == others, "down removes mhr's objects and nothing else:\n{}", difference(&others, &after));
    if after_flap == AfterFlap::Forgets {
        return;
    }
    eventually(&format!("down leaves what {} made", managed.manager.name()), Duration::from_secs(10), || {
        let after = routing(host);
        if after == before {
            Ok(())
        } else {
            Err(format!("{}\n{}", difference(&before, &after), managed.report()))
        }
    });
}

/// mhr's rules (proto 210), as `ip` prints them.
pub fn mhrs_rules(host: &Netns) -> Vec<String> {
    let rules = host.ip(["-4", "rule", "show"]).unwrap();
    rules.lines().filter(|line| line.contains("proto 210")).map(str::to_owned).collect()
}

/// mhr's routes (proto 210) in every table, sorted.
pub fn mhrs_routes(host: &Netns) -> Vec<String> {
    let routes = host.ip(["-4", "route", "show", "table", "all", "proto", "210"]).unwrap();
    let mut routes: Vec<String> = routes.lines().map(str::to_owned).collect();
    routes.sort();
    routes
}

/// mhr's corrections of drift so far (every kind), from its metrics.
pub fn corrections(host: &Netns) -> f64 {
    let body = http_get(host, METRICS_PORT, "/metrics").map(|(_, body)| body).unwrap_or_default();
    body.lines()
        .filter(|line| line.starts_with("mhr_drift_corrections_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Whether a manager removes mhr's rules and routes on some event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removes {
    Yes,
    No,
}

/// Under `mhr run`, `event` happens (`act`). With `Removes::Yes` the
/// manager removed something of mhr's (mhr corrected it) and mhr's `rules`
/// and `routes` are all back; with `Removes::No` mhr had nothing to
/// correct. Either way, once the manager has settled (1 s) they do not
/// change for 3 s (sampled every 100 ms) and mhr corrects nothing more:
/// no fight.
pub fn mhr_is_whole_and_quiet_after<M: Manager>(
    managed: &ManagedLab<M>,
    rules: &[String],
    routes: &[String],
    event: &str,
    removes: Removes,
    act: impl FnOnce(),
) {
    let host = managed.host();
    let before = corrections(host);
    act();
    let whole = |host: &Netns| (mhrs_rules(host), mhrs_routes(host)) == (rules.to_vec(), routes.to_vec());
    if removes == Removes::Yes {
        eventually(
            &format!("mhr's objects are whole again after {event} beside {}", managed.manager.name()),
            Duration::from_secs(10),
            || {
                // networkd usually deletes mhr's rules on a restart (drift,
                // corrected); when it only drops and re-adds its addresses
                // the kernel takes the routes with them and they come back
                // as a host change. Either way mhr must be whole again.
                let corrected = corrections(host) - before;
                if whole(host) {
                    Ok(())
                } else {
                    Err(format!("{corrected} corrections; {:#?}\n{}", mhrs_rules(host), managed.report()))
                }
            },
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let settled = corrections(host);
    for _ in 0..30 {
        assert_eq!(mhrs_rules(host), rules, "mhr's rules stay put after {event}");
        assert_eq!(mhrs_routes(host), routes, "mhr's routes stay put after {event}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(corrections(host), settled, "no fight with {} after {event}", managed.manager.name());
    if removes == Removes::No {
        assert_eq!(settled, before, "{} left mhr's objects alone on {event}", managed.manager.name());
    }
}
