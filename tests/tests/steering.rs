//! Steering rules on the seed lab: a `[[rule]]` sends TCP 443 through the
//! backup (its router sees it, the primary's does not) while other traffic
//! takes main's default; `mhr check` verifies it with the kernel's own
//! lookup; with the backup down, 443 moves to the next uplink of the list.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use common::{
    daemon::{DaemonThread, eventually},
    mhr, write_config,
};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    probe::{TcpResponder, tcp_exchange},
    require_root,
    seed_lab::{CLIENT, routing_section},
};
use mhr_userspace::daemon::DaemonOptions;

/// Counts forwarded TCP packets to `port` in a router.
fn count_port(router: &Netns, dir: &TempDir, port: u16) {
    let path = dir.path().join(format!("count-{}.nft", router.name()));
    let ruleset = format!(
        "table inet mhr_lab_count {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    tcp dport {port} counter\n  }}\n}}\n"
    );
    std::fs::write(&path, ruleset).unwrap();
    assert!(router.command("nft").arg("-f").arg(&path).status().unwrap().success());
}

fn counted(router: &Netns) -> u64 {
    let output = router.command("nft").args(["list", "table", "inet", "mhr_lab_count"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).find(|w| w[0] == "packets").and_then(|w| w[1].parse().ok()).unwrap_or(0)
}

#[test]
fn tcp_443_leaves_by_the_backup_and_moves_down_its_list_when_the_backup_fails() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("steering").unwrap();
    let _https = TcpResponder::start(&lab.client, 443).unwrap();
    let _http = TcpResponder::start(&lab.client, 80).unwrap();
    for router in &lab.routers {
        count_port(router, &dir, 443);
    }
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\n[[uplink]]\ninterface = \"ens4\"\n\n[[rule]]\nproto = \"tcp\"\ndport = 443\nuplink = [\"ens4\", \"ens3\"]\n\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let plan = mhr(&lab.host, &config, &["plan"]);
    assert!(
        plan.output.contains("ipproto tcp dport 443 lookup"),
        "plan shows the steering rule:\n{}",
        plan.output
    );
    let options =
        DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() };
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    eventually("the steering rule is installed", Duration::from_secs(5), || {
        let rules = lab.host.ip(["-4", "rule", "show"]).unwrap_or_default();
        if rules.contains("ipproto tcp dport 443 lookup 7101") { Ok(()) } else { Err(rules) }
    });

    let https = SocketAddr::new(IpAddr::V4(CLIENT), 443);
    let http = SocketAddr::new(IpAddr::V4(CLIENT), 80);
    assert!(tcp_exchange(&lab.host, https, Duration::from_secs(2)).unwrap(), "TCP 443 works");
    assert!(tcp_exchange(&lab.host, http, Duration::from_secs(2)).unwrap(), "TCP 80 works");
    assert!(counted(&lab.routers[1]) > 0, "ens4's router carried TCP 443");
    assert_eq!(counted(&lab.routers[0]), 0, "ens3's router never saw TCP 443");
    let route =
        lab.host.ip(["-4", "route", "get", &CLIENT.to_string(), "ipproto", "tcp", "dport", "80"]).unwrap();
    assert!(route.contains("dev ens3"), "other traffic takes main's default: {route}");
    let check = mhr(&lab.host, &config, &["check"]);
    assert!(
        check.output.contains("rule #1 sends 203.0.113.1 ipproto tcp dport 443 by ens4"),
        "{}",
        check.output
    );
    assert!(check.succeeded(), "{}", check.output);
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("rule #1 (IPv4): ens4"), "{}", status.output);

    // ens4 fails: TCP 443 takes the next uplink of its list.
    lab.host.ip(["link", "set", "ens4", "down"]).unwrap();
    eventually("443 moves to ens3", Duration::from_secs(3), || {
        let route = lab
            .host
            .ip(["-4", "route", "get", &CLIENT.to_string(), "ipproto", "tcp", "dport", "443"])
            .unwrap();
        if route.contains("dev ens3") { Ok(()) } else { Err(route) }
    });
    assert!(tcp_exchange(&lab.host, https, Duration::from_secs(2)).unwrap(), "TCP 443 works through ens3");
    assert!(counted(&lab.routers[0]) > 0, "now ens3's router carries it");
}
