//! mhr beside the host's own network manager: whatever default routes
//! main holds, at whatever metric, mhr's health choice carries host
//! traffic while it is applied, and after `mhr down` the host routes
//! exactly as its manager made it.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{
    daemon::{DaemonThread, eventually},
    mhr, write_config,
};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    probe::ping,
    require_root,
    seed_lab::{CLIENT, routing_section},
};
use mhr_userspace::daemon::DaemonOptions;

/// The interface `ip route get` names for host traffic to `destination`.
fn leaves_by(host: &Netns, destination: IpAddr) -> String {
    let family = if destination.is_ipv4() { "-4" } else { "-6" };
    let answer = host.ip([family, "route", "get", &destination.to_string()]).unwrap_or_default();
    answer.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("nowhere").to_owned()
}

fn main_defaults(host: &Netns) -> String {
    host.ip(["-4", "route", "show", "default", "table", "main"]).unwrap()
}

#[test]
fn a_static_default_at_metric_zero_neither_blocks_apply_nor_outranks_failover_and_down_leaves_it_as_it_was() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let host = &lab.host;
    let [primary, backup] = lab.uplinks() else { panic!("two uplinks") };
    // As ifupdown's `gateway`, dhclient-script and networkd's `Gateway=`
    // leave it: one IPv4 default, at metric 0, and on the backup.
    for uplink in [primary, backup] {
        host.ip(["-4", "route", "del", "default", "via", &uplink.gateway.to_string()]).unwrap();
    }
    host.ip(["-4", "route", "add", "default", "via", &backup.gateway.to_string(), "dev", backup.interface])
        .unwrap();
    let managers_main = main_defaults(host);
    assert!(managers_main.contains(&format!("dev {}", backup.interface)), "{managers_main}");
    assert!(!managers_main.contains("metric"), "metric 0: {managers_main}");

    let dir = TempDir::new("coexistence").unwrap();
    let text = format!(
        "[[uplink]]\ninterface = \"{}\"\nprimary = true\ngateway = \"{}\"\nprobe = [\"{CLIENT}\"]\n\n[[uplink]]\ninterface = \"{}\"\nprobe = [\"{CLIENT}\"]\n\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\ndown_after = 3\nup_after = 3\n\n{}",
        primary.interface,
        primary.gateway,
        backup.interface,
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let applied = mhr(host, &config, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "a metric-0 default does not stop apply: {applied:?}");
    assert_eq!(main_defaults(host), managers_main, "main's own default is left as it was");
    let client = IpAddr::V4(CLIENT);
    let debug = format!(
        "{}\n{}\n{}\n{}",
        applied.output,
        host.ip(["rule"]).unwrap(),
        host.ip(["route", "show", "table", "all"]).unwrap(),
        host.ip(["route", "get", "192.0.2.100"]).unwrap()
    );
    assert_eq!(
        leaves_by(host, client),
        primary.interface,
        "mhr.s choice wins over the metric-0 default: {debug}"
    );
    assert!(ping(host, client, Duration::from_secs(1)).unwrap(), "the host reaches the client");
    let check = mhr(host, &config, &["check"]);
    assert!(check.succeeded(), "{check:?}");

    // The primary's router loses its internet side: only probes can tell.
    let daemon = DaemonThread::start(
        host,
        &config,
        DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() },
    );
    lab.silence_upstream(0).unwrap();
    eventually("host traffic fails over to the backup", Duration::from_secs(5), || {
        let way = leaves_by(host, client);
        if way == backup.interface { Ok(()) } else { Err(way) }
    });
    assert!(
        ping(host, client, Duration::from_secs(1)).unwrap(),
        "the host reaches the client via the backup"
    );
    lab.restore_upstream(0).unwrap();
    eventually("host traffic fails back to the primary", Duration::from_secs(5), || {
        let way = leaves_by(host, client);
        if way == primary.interface { Ok(()) } else { Err(way) }
    });
    daemon.stop();
    assert_eq!(main_defaults(host), managers_main, "mhr never touched main's default");

    let down = mhr(host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    assert_eq!(main_defaults(host), managers_main);
    assert_eq!(
        leaves_by(host, client),
        backup.interface,
        "after down the host routes as its manager made it"
    );
    assert!(!host.ip(["rule"]).unwrap().contains("proto 210"), "no rule of mhr's is left");
}

#[test]
fn a_writer_that_keeps_deleting_mhrs_rule_meets_a_bounded_rate_of_corrections_and_is_named_once() {
    use std::io::Write as _;

    require_root();
    let lab = SeedLab::start().unwrap();
    let host = &lab.host;
    let dir = TempDir::new("coexistence").unwrap();
    let config = write_config(
        &dir,
        &format!(
            "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\n[[uplink]]\ninterface = \"ens4\"\n\n{}",
            routing_section(dir.path())
        ),
    );
    let log_path = dir.path().join("mhr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _daemon = common::daemon::DaemonProcess::spawn_with(host, &config, &[], &["--no-guard"], log.into());
    let rule = ["rule", "del", "from", "10.0.4.0/24", "lookup", "7101", "priority", "7103"];
    let present = || host.ip(["-4", "rule"]).unwrap_or_default().contains("from 10.0.4.0/24 lookup 7101");
    eventually("mhr applied", Duration::from_secs(10), || {
        if present() { Ok(()) } else { Err("no rule".into()) }
    });

    // One long-lived writer (one netlink socket) deleting the rule every 100 ms for 5 s.
    let mut fighter = host
        .command("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdin = fighter.stdin.as_mut().unwrap();
    for _ in 0..50 {
        writeln!(stdin, "{}", rule.join(" ")).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = mhr_tests::probe::http_get(host, common::daemon::METRICS_PORT, "/metrics").unwrap().1;
    let corrections =
        common::daemon::sample(&body, "mhr_drift_corrections_total", "kind=\"rule_added\"").unwrap();
    // 3 at once, then after 1, 2 s (doubling): never one per deletion.
    assert!((3.0..=6.0).contains(&corrections), "{corrections} corrections for 50 deletions");
    assert!(common::daemon::sample(&body, "mhr_drift_corrections_deferred_total", "").unwrap() >= 1.0);
    assert_eq!(common::daemon::sample(&body, "mhr_drift_contested_objects", ""), Some(1.0));
    drop(fighter.stdin.take());
    let _ = fighter.wait();
    eventually("the rule is back once the writer stops", Duration::from_secs(10), || {
        if present() { Ok(()) } else { Err("rule still missing".into()) }
    });
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("another writer keeps undoing")).collect();
    assert_eq!(lines.len(), 1, "one line:\n{text}");
    assert!(lines[0].contains("ip (pid"), "names the writer: {}", lines[0]);
    assert!(lines[0].contains("from 10.0.4.0/24 lookup 7101"), "names the object: {}", lines[0]);
}
