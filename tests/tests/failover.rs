//! Failover: `mhr run` keeps main's default route on a healthy uplink.
//! Every test breaks something real in the seed lab (a link, a carrier, an
//! upstream, a probe target) and asserts both the route in main and that
//! the host really reaches the internet client.

mod common;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use common::{
    daemon::{DaemonThread, METRICS_PORT, eventually, sample},
    mhr, write_config,
};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    probe::{http_get, ping},
    require_root,
    seed_lab::{CLIENT, CLIENT6, routing_section},
};
use mhr_userspace::{cli::Outcome, daemon::DaemonOptions};

/// Health interval of these tests: failover by probes within
/// down_after × interval (+1 s).
const INTERVAL_MS: u64 = 200;
const DOWN_AFTER: u32 = 3;
const UP_AFTER: u32 = 5;

fn config_text(dir: &TempDir, extra_top: &str, probes: bool) -> String {
    let probe = if probes { format!("probe = [\"{CLIENT}\", \"{CLIENT6}\"]\n") } else { String::new() };
    format!(
        "{extra_top}[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{probe}\n[[uplink]]\ninterface = \"ens4\"\n{probe}\n[health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{INTERVAL_MS}ms\"\ndown_after = {DOWN_AFTER}\nup_after = {UP_AFTER}\n\n{}",
        routing_section(dir.path())
    )
}

fn options() -> DaemonOptions {
    DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() }
}

/// The interface(s) of mhr's default route (in its default table) for a family (`-4`/`-6`).
fn main_default(host: &Netns, family: &str) -> String {
    let routes =
        host.ip([family, "route", "show", "default", "table", "7199", "proto", "210"]).unwrap_or_default();
    let mut devices: Vec<String> = routes
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| pair[0] == "dev")
        .map(|pair| pair[1].to_owned())
        .collect();
    devices.sort();
    devices.dedup();
    devices.join("+")
}

fn reaches(host: &Netns, target: IpAddr) -> bool {
    (0..3).any(|_| ping(host, target, Duration::from_millis(500)).unwrap_or(false))
}

/// Waits until main's default for both families is on `device`, then
/// checks the host reaches the client over both.
fn wait_for_default(host: &Netns, device: &str, within: Duration) -> Duration {
    let start = Instant::now();
    eventually(&format!("main's default moves to {device}"), within, || {
        let (v4, v6) = (main_default(host, "-4"), main_default(host, "-6"));
        if v4 == device && v6 == device { Ok(()) } else { Err(format!("IPv4 on {v4:?}, IPv6 on {v6:?}")) }
    });
    let took = start.elapsed();
    assert!(reaches(host, IpAddr::V4(CLIENT)), "the host reaches the client over IPv4 via {device}");
    assert!(reaches(host, IpAddr::V6(CLIENT6)), "the host reaches the client over IPv6 via {device}");
    took
}

fn metrics(host: &Netns) -> String {
    http_get(host, METRICS_PORT, "/metrics").expect("metrics served").1
}

/// Loads an nftables ruleset into a router.
fn nft(router: &Netns, dir: &TempDir, ruleset: &str) {
    let path = dir.path().join("rules.nft");
    std::fs::write(&path, ruleset).unwrap();
    let status = router.command("nft").arg("-f").arg(&path).status().unwrap();
    assert!(status.success(), "nft -f {ruleset}");
}

fn start(probes: bool) -> (SeedLab, TempDir, std::path::PathBuf, DaemonThread) {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("failover").unwrap();
    let config = write_config(&dir, &config_text(&dir, "", probes));
    let daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    (lab, dir, config, daemon)
}

#[test]
fn admin_down_fails_over_at_once_and_fails_back_only_after_up_after_rounds() {
    let (lab, _dir, config, _daemon) = start(false);
    let host = &lab.host;

    host.ip(["link", "set", "ens3", "down"]).unwrap();
    let took = wait_for_default(host, "ens4", Duration::from_secs(1));
    eprintln!("failover after admin down took {took:?}");
    let status = mhr(host, &config, &["status"]);
    assert!(status.output.contains("IPv4 UNHEALTHY: link administratively down"), "{}", status.output);
    assert!(status.output.contains("main's IPv4 default: ens4"), "{}", status.output);
    let check = mhr(host, &config, &["check"]);
    assert!(
        matches!(check.result, Ok(Outcome::ChecksFailed)),
        "check reports the unhealthy uplink: {check:?}"
    );

    // The kernel dropped every route of ens3 and no DHCP client re-adds
    // them: the remembered gateway brings its table back.
    host.ip(["link", "set", "ens3", "up"]).unwrap();
    // The kernel flushed ens3's IPv6 address on down (keep_addr_on_down=0);
    // its configuration puts it back, as networkd or SLAAC would.
    host.ip(["addr", "add", "2001:db8:3::10/64", "dev", "ens3", "nodad"]).unwrap();
    let back = Instant::now();
    eventually("ens3's table is back", Duration::from_secs(2), || {
        let table = host.ip(["route", "show", "table", "7100"]).unwrap_or_default();
        if table.contains("default via 10.0.3.1 dev ens3") { Ok(()) } else { Err(table) }
    });
    wait_for_default(host, "ens3", Duration::from_secs(5));
    let hysteresis = Duration::from_millis(INTERVAL_MS * u64::from(UP_AFTER - 1));
    assert!(back.elapsed() >= hysteresis, "fail-back waited for up_after rounds: {:?}", back.elapsed());

    let body = metrics(host);
    assert_eq!(sample(&body, "mhr_failovers_total", "family=\"ipv4\""), Some(2.0), "{body}");
    assert_eq!(sample(&body, "mhr_failovers_total", "family=\"ipv6\""), Some(2.0));
    assert_eq!(sample(&body, "mhr_uplink_healthy", "uplink=\"ens3\",family=\"ipv4\""), Some(1.0));
    assert_eq!(sample(&body, "mhr_uplink_primary", "uplink=\"ens3\""), Some(1.0));
    assert_eq!(sample(&body, "mhr_uplink_primary", "uplink=\"ens4\""), Some(0.0));
    assert_eq!(sample(&body, "mhr_uplink_active", "uplink=\"ens3\",family=\"ipv4\""), Some(1.0));
    assert_eq!(sample(&body, "mhr_uplink_active", "uplink=\"ens4\",family=\"ipv4\""), Some(0.0));
}

#[test]
fn carrier_loss_fails_over_within_a_second() {
    let (lab, _dir, _config, _daemon) = start(false);
    // The router's side goes down: the host's ens3 stays up, without carrier.
    lab.routers[0].ip(["link", "set", "lan", "down"]).unwrap();
    let took = wait_for_default(&lab.host, "ens4", Duration::from_secs(1));
    eprintln!("failover after carrier loss took {took:?}");
    lab.routers[0].ip(["link", "set", "lan", "up"]).unwrap();
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
}

#[test]
fn an_upstream_that_silently_drops_fails_over_by_probes_and_back() {
    let (lab, _dir, config, _daemon) = start(true);
    // Link and gateway stay fine; the router stops forwarding.
    lab.silence_upstream(0).unwrap();
    let limit = Duration::from_millis(INTERVAL_MS * u64::from(DOWN_AFTER)) + Duration::from_secs(1);
    let took = wait_for_default(&lab.host, "ens4", limit);
    eprintln!(
        "failover after upstream loss took {took:?} (minimum {}ms)",
        INTERVAL_MS * u64::from(DOWN_AFTER)
    );
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("IPv4 UNHEALTHY: probes failing"), "{}", status.output);
    assert!(status.output.contains("probe loss"), "{}", status.output);
    assert!(status.output.contains("[daemon]"), "status shows the daemon's view: {}", status.output);
    let json = mhr(&lab.host, &config, &["status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json.output).expect("status --json");
    assert_eq!(parsed["uplinks"][0]["health"][0]["fault"], "probes_failing", "{}", json.output);
    assert_eq!(parsed["active"]["v4"][0], "ens4");

    lab.restore_upstream(0).unwrap();
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    let body = metrics(&lab.host);
    let rtt = sample(&body, "mhr_uplink_probe_rtt_seconds", "uplink=\"ens3\",family=\"ipv4\"");
    assert!(rtt.is_some_and(|rtt| rtt > 0.0 && rtt < 1.0), "probe rtt exported: {rtt:?}");
    let loss = sample(&body, "mhr_uplink_probe_loss_ratio", "uplink=\"ens4\",family=\"ipv4\"");
    assert_eq!(loss, Some(0.0), "ens4's probes all answered");
}

#[test]
fn with_no_healthy_uplink_main_keeps_the_last_default() {
    let (lab, _dir, config, _daemon) = start(true);
    for index in 0..lab.routers.len() {
        lab.silence_upstream(index).unwrap();
    }
    eventually("both uplinks unhealthy", Duration::from_secs(3), || {
        let body = metrics(&lab.host);
        let healthy = ["ens3", "ens4"]
            .map(|u| sample(&body, "mhr_uplink_healthy", &format!("uplink=\"{u}\",family=\"ipv4\"")));
        if healthy == [Some(0.0), Some(0.0)] { Ok(()) } else { Err(format!("{healthy:?}")) }
    });
    assert_eq!(main_default(&lab.host, "-4"), "ens3", "the last default stays rather than none");
    assert_eq!(main_default(&lab.host, "-6"), "ens3");
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("no healthy IPv4 uplink: keeping main's default"), "{}", status.output);
    // The first uplink back takes main's default.
    lab.restore_upstream(1).unwrap();
    wait_for_default(&lab.host, "ens4", Duration::from_secs(5));
}

#[test]
fn ten_percent_probe_loss_does_not_flap() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("failover").unwrap();
    // Five failed rounds in a row at 10% loss: about 1 in 100,000 rounds.
    let text = config_text(&dir, "", true).replace(&format!("down_after = {DOWN_AFTER}"), "down_after = 5");
    let config = write_config(&dir, &text);
    let _daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    let ruleset = "table inet mhr_lab_loss {\n  chain forward {\n    type filter hook forward priority -10; policy accept;\n    meta l4proto { icmp, ipv6-icmp } numgen random mod 10 == 0 counter drop\n  }\n}\n";
    for router in &lab.routers {
        nft(router, &dir, ruleset);
    }
    std::thread::sleep(Duration::from_secs(8));
    let body = metrics(&lab.host);
    // Per target, over [health] window (60 s): every round of the 8 s
    // counts (the uplink's own ratio keeps only the last 20 rounds, which
    // may all have answered).
    let lost = sample(&body, "mhr_probe_loss_ratio", &format!("uplink=\"ens3\",target=\"{CLIENT}\""));
    assert!(lost.is_some_and(|l| l > 0.0), "loss was injected and seen: {lost:?}");
    assert_eq!(sample(&body, "mhr_failovers_total", "family=\"ipv4\""), Some(0.0), "{body}");
    assert_eq!(sample(&body, "mhr_failovers_total", "family=\"ipv6\""), Some(0.0));
    assert_eq!(main_default(&lab.host, "-4"), "ens3");
}

#[test]
fn balance_spreads_flows_over_both_uplinks_and_replies_stay_symmetric() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("failover").unwrap();
    let config = write_config(&dir, &config_text(&dir, "policy = \"balance\"\n", false));
    let applied = mhr(&lab.host, &config, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "{applied:?}");
    assert!(applied.output.contains("main's IPv4 default: ens3 + ens4"), "{}", applied.output);
    assert_eq!(main_default(&lab.host, "-4"), "ens3+ens4");
    assert_eq!(main_default(&lab.host, "-6"), "ens3+ens4");
    // Destinations (balance_hash = "destination") spread over both
    // uplinks; every flow to one destination takes one uplink.
    let leaves_by = |destination: &str, port: u16| {
        let port = port.to_string();
        let route = lab
            .host
            .ip(["route", "get", destination, "ipproto", "udp", "sport", &port, "dport", "53"])
            .unwrap();
        route.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("").to_owned()
    };
    let by_destination: std::collections::BTreeSet<String> =
        (1..64).map(|host| leaves_by(&format!("198.51.100.{host}"), 10000)).collect();
    assert_eq!(by_destination.into_iter().collect::<Vec<_>>(), vec!["ens3", "ens4"]);
    let by_port: std::collections::BTreeSet<String> =
        (10000..10064).map(|port| leaves_by(&CLIENT.to_string(), port)).collect();
    assert_eq!(by_port.len(), 1, "one destination, one uplink: {by_port:?}");
    // Replies from each uplink's address still leave by that uplink.
    let check = mhr(&lab.host, &config, &["check"]);
    assert!(check.succeeded(), "{}", check.output);
    for uplink in lab.uplinks() {
        assert!(reaches(&lab.client, IpAddr::V4(uplink.floating)), "{} answers", uplink.floating);
        assert!(reaches(&lab.client, IpAddr::V6(uplink.address6)), "{} answers", uplink.address6);
    }
    assert!(mhr(&lab.host, &config, &["down"]).succeeded());
}

#[test]
fn down_always_finishes_and_names_what_must_wait() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("failover").unwrap();
    let config = write_config(&dir, &config_text(&dir, "", false));
    // An earlier mhr moved ens4's IPv4 default out of main and recorded it.
    lab.host.ip(["route", "del", "default", "via", "10.0.4.1", "dev", "ens4"]).unwrap();
    let index: u32 = lab.host.run(|| mhr_userspace::guard::tc::interface_index("ens4").unwrap()).unwrap();
    let record = format!(
        r#"[{{"interface":"ens4","route":{{"table":254,"destination":"0.0.0.0/0","gateway":"10.0.4.1","interface":{index},"source":null,"protocol":4,"scope":0,"metric":200,"onlink":false}}}}]"#
    );
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/moved-routes.json"), record).unwrap();
    assert!(mhr(&lab.host, &config, &["apply", "--no-guard"]).succeeded());
    assert!(
        lab.host
            .ip(["route", "show", "default"])
            .unwrap()
            .contains("default via 10.0.4.1 dev ens4 proto static metric 200"),
        "apply put the moved route back"
    );
    lab.host.ip(["route", "del", "default", "via", "10.0.4.1", "dev", "ens4", "metric", "200"]).unwrap();
    std::fs::write(dir.path().join("state/moved-routes.json"), format!(
        r#"[{{"interface":"ens4","route":{{"table":254,"destination":"0.0.0.0/0","gateway":"10.0.4.1","interface":{index},"source":null,"protocol":4,"scope":0,"metric":200,"onlink":false}}}}]"#
    )).unwrap();

    // The uplink whose route must go back is down: down removes all of
    // mhr's objects anyway, names the restore it could not do, exits 1.
    lab.host.ip(["link", "set", "ens4", "down"]).unwrap();
    lab.host.ip(["link", "set", "ens4", "up"]).unwrap();
    lab.host.ip(["addr", "flush", "dev", "ens4"]).unwrap();
    let down = mhr(&lab.host, &config, &["down"]);
    assert!(matches!(down.result, Ok(Outcome::Incomplete)), "{down:?}");
    assert!(down.output.contains("could not be done now"), "{}", down.output);
    assert!(down.output.contains("restore ens4's default route to main"), "{}", down.output);
    let left = common::snapshot(&lab.host);
    assert!(!left.contains("proto 210"), "nothing of mhr's is left:\n{left}");
    assert!(dir.path().join("state/moved-routes.json").exists(), "the record waits for a later down");

    // Once the uplink has its address again, a second down finishes the job.
    lab.host.ip(["addr", "add", "10.0.4.10/24", "dev", "ens4"]).unwrap();
    let again = mhr(&lab.host, &config, &["down"]);
    assert!(again.succeeded(), "{again:?}");
    assert!(lab.host.ip(["route", "show", "default"]).unwrap().contains("default via 10.0.4.1 dev ens4"));
    assert!(!dir.path().join("state/moved-routes.json").exists());
}

#[test]
fn with_real_dhcp_and_router_advertisements_mhr_never_fights_the_clients_and_fails_over() {
    require_root();
    let resolv_before = std::fs::read("/etc/resolv.conf").ok();
    {
        let lab = SeedLab::start_dhcp().unwrap();
        let dir = TempDir::new("failover").unwrap();
        let config = write_config(&dir, &config_text(&dir, "", false));
        let daemon = DaemonThread::start(&lab.host, &config, options());
        wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
        let defaults = lab.host.ip(["route", "show", "default"]).unwrap();
        assert!(defaults.contains("proto dhcp"), "dhcpcd's defaults stay in main: {defaults}");

        // Renewals: the clients keep their routes, mhr changes nothing.
        let dhcp = lab.dhcp.as_ref().expect("a DHCP lab");
        for client in &dhcp.clients {
            client.renew().unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        let body = metrics(&lab.host);
        let corrections: f64 = body
            .lines()
            .filter(|l| l.starts_with("mhr_drift_corrections_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(corrections, 0.0, "no fight with the DHCP client or RAs:\n{body}");

        // A flap: failover at once, dhcpcd and the RA bring ens3 back, fail-back after hysteresis.
        lab.host.ip(["link", "set", "ens3", "down"]).unwrap();
        wait_for_default(&lab.host, "ens4", Duration::from_secs(1));
        lab.host.ip(["link", "set", "ens3", "up"]).unwrap();
        wait_for_default(&lab.host, "ens3", Duration::from_secs(10));
        eventually("dhcpcd re-added its default", Duration::from_secs(10), || {
            let defaults = lab.host.ip(["route", "show", "default"]).unwrap_or_default();
            if defaults.contains("default via 10.0.3.1 dev ens3 proto dhcp") { Ok(()) } else { Err(defaults) }
        });
        daemon.stop();
        let down = mhr(&lab.host, &config, &["down"]);
        assert!(down.succeeded(), "{down:?}");
        assert!(!down.output.contains("dhcp"), "down touches nothing of the client's: {}", down.output);
    }
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        resolv_before,
        "the lab never touches the machine's files"
    );
}

#[test]
fn a_lease_that_changes_address_and_gateway_converges() {
    require_root();
    let mut lab = SeedLab::start_dhcp().unwrap();
    let dir = TempDir::new("failover").unwrap();
    let config = write_config(&dir, &config_text(&dir, "", false));
    let _daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));

    // ens3 is plugged into a renumbered network: a new address and a new
    // gateway. On carrier up dhcpcd asks for its old address, is refused
    // (NAK) and takes the new lease.
    let (address, gateway) = ("10.0.3.20", "10.0.3.2");
    lab.routers[0].ip(["addr", "add", &format!("{gateway}/24"), "dev", "lan"]).unwrap();
    let dhcp = lab.dhcp.as_mut().expect("a DHCP lab");
    dhcp.servers[0].serve(address.parse().unwrap(), gateway.parse().unwrap()).unwrap();
    lab.host.ip(["link", "set", "ens3", "down"]).unwrap();
    lab.host.ip(["link", "set", "ens3", "up"]).unwrap();

    eventually("mhr follows the new lease", Duration::from_secs(20), || {
        let rules = lab.host.ip(["-4", "rule"]).unwrap_or_default();
        let table = lab.host.ip(["-4", "route", "show", "table", "7100"]).unwrap_or_default();
        let main = lab
            .host
            .ip(["-4", "route", "show", "default", "table", "7199", "proto", "210"])
            .unwrap_or_default();
        // Same /24: the prefix rule stays; the table and main follow the gateway.
        let converged = rules.contains("from 10.0.3.0/24 lookup 7100")
            && table.contains(&format!("default via {gateway} dev ens3"))
            && main.contains(&format!("default via {gateway} dev ens3"));
        let report = lab.dhcp.as_ref().map(|dhcp| dhcp.report(&lab.host)).unwrap_or_default();
        if converged {
            Ok(())
        } else {
            Err(format!("rules:\n{rules}\ntable 7100:\n{table}\nmain:\n{main}\n{report}"))
        }
    });
    let check = mhr(&lab.host, &config, &["check"]);
    assert!(check.succeeded(), "{check:?}");
    // Really through the new gateway, from the new address: the router's
    // internet side answers.
    let router_wan = lab.uplinks()[0].router_wan.to_string();
    let route = lab.host.ip(["-4", "route", "get", &router_wan, "from", address]).unwrap();
    assert!(route.contains(&format!("via {gateway} dev ens3")), "{route}");
    let ping = lab.host.command("ping").args(["-c1", "-W1", "-I", address, &router_wan]).output().unwrap();
    assert!(ping.status.success(), "ping {router_wan} from {address}: {ping:?}");
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains(&format!("IPv4 gateway: {gateway}")), "{}", status.output);
}
