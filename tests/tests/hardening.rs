//! The second hardening round: a full disk, a restart during a failover, a
//! primary already dead at start, a re-created primary. None may cost
//! reachability. Each in the seed lab against the real kernel.

mod common;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use common::{
    daemon::{DaemonThread, METRICS_PORT, eventually, sample, wait_healthy},
    mhr, snapshot, write_config,
};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    mount::Mount,
    probe::{http_get, ping},
    require_root,
    seed_lab::{CLIENT, CLIENT6, routing_section},
};
use mhr_userspace::{cli::Outcome, daemon::DaemonOptions};

const INTERVAL_MS: u64 = 200;
const UP_AFTER: u64 = 5;

fn config(dir: &TempDir) -> std::path::PathBuf {
    let probe = format!("probe = [\"{CLIENT}\", \"{CLIENT6}\"]\n");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{probe}\n[[uplink]]\ninterface = \"ens4\"\n{probe}\n[health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{INTERVAL_MS}ms\"\ndown_after = 3\nup_after = {UP_AFTER}\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

fn options() -> DaemonOptions {
    DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() }
}

/// The interface of mhr's IPv4 default (its default table), or "none".
fn mhr_default(host: &Netns) -> String {
    let routes =
        host.ip(["-4", "route", "show", "default", "table", "7199", "proto", "210"]).unwrap_or_default();
    routes.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("none").to_owned()
}

fn wait_for_default(host: &Netns, device: &str, within: Duration) {
    eventually(&format!("mhr's default on {device}"), within, || {
        let now = mhr_default(host);
        if now == device { Ok(()) } else { Err(now) }
    });
}

/// Samples mhr's IPv4 default every 50 ms for `period`: every device seen.
fn sample_defaults(host: &Netns, period: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < period {
        let now = mhr_default(host);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn a_full_state_dir_neither_stops_failover_nor_lets_apply_change_the_host() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("hardening").unwrap();
    let config = config(&dir);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let disk = Mount::sized_tmpfs(&state, 64 * 1024);
    let filler = disk.fill();

    let before = snapshot(&lab.host);
    let apply = mhr(&lab.host, &config, &["apply", "--no-guard"]);
    assert!(apply.result.is_err(), "apply refuses on a full disk: {apply:?}");
    assert!(apply.error().contains(&state.display().to_string()), "names the directory: {}", apply.error());
    assert_eq!(snapshot(&lab.host), before, "nothing changed");

    let _daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    wait_healthy(&lab.host, Duration::from_secs(2));
    lab.silence_upstream(0).unwrap();
    wait_for_default(&lab.host, "ens4", Duration::from_secs(3));
    assert!(
        ping(&lab.host, IpAddr::V4(CLIENT), Duration::from_secs(1)).unwrap(),
        "the host reaches the client"
    );
    let body = http_get(&lab.host, METRICS_PORT, "/metrics").unwrap().1;
    let errors = sample(&body, "mhr_state_write_errors_total", "").unwrap_or(0.0);
    assert!(errors >= 1.0, "the failed writes are counted: {errors}");
    wait_healthy(&lab.host, Duration::from_secs(2));

    // Space comes back: the next reconcile writes the records.
    std::fs::remove_file(filler).unwrap();
    lab.restore_upstream(0).unwrap();
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    eventually("the gateways are recorded", Duration::from_secs(3), || {
        if state.join("gateways.json").exists() { Ok(()) } else { Err("no gateways.json".into()) }
    });
}

#[test]
fn a_restart_during_a_failover_keeps_the_failover() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("hardening").unwrap();
    let config = config(&dir);
    let daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    lab.silence_upstream(0).unwrap();
    wait_for_default(&lab.host, "ens4", Duration::from_secs(3));
    daemon.stop();

    let restarted = DaemonThread::start(&lab.host, &config, options());
    let seen = sample_defaults(&lab.host, Duration::from_millis(3 * INTERVAL_MS * UP_AFTER));
    assert_eq!(seen, ["ens4"], "the dead primary never takes the default back");
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("IPv4 UNHEALTHY: probes failing"), "{}", status.output);
    lab.restore_upstream(0).unwrap();
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    restarted.stop();
}

#[test]
fn a_daemon_started_while_the_primary_is_dead_never_routes_through_it() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("hardening").unwrap();
    let config = config(&dir);
    lab.silence_upstream(0).unwrap();
    let _daemon = DaemonThread::start(&lab.host, &config, options());
    // From the start: before the first reconcile there is no default of mhr's.
    let mut seen = sample_defaults(&lab.host, Duration::from_secs(3));
    seen.retain(|device| device != "none");
    assert_eq!(seen, ["ens4"], "mhr's default was never on the dead primary");
    assert!(ping(&lab.host, IpAddr::V4(CLIENT), Duration::from_secs(1)).unwrap());
}

#[test]
fn a_recreated_primary_takes_the_default_only_after_up_after_good_rounds() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("hardening").unwrap();
    let config = config(&dir);
    let _daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    lab.recreate_uplink(0).unwrap();
    let back = Instant::now();
    wait_for_default(&lab.host, "ens4", Duration::from_secs(2));
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    let took = back.elapsed();
    // A lower bound only: a slow machine makes it longer, never shorter.
    let proven = Duration::from_millis(INTERVAL_MS * (UP_AFTER - 1));
    assert!(took >= proven, "back on ens3 after {took:?}, before {UP_AFTER} good rounds ({proven:?})");
    let apply = mhr(&lab.host, &config, &["check"]);
    assert!(matches!(apply.result, Ok(Outcome::Success)), "{apply:?}");
}

/// The exposition lines of `metric` that name `uplink`.
fn series_of(body: &str, metric: &str, uplink: &str) -> Vec<String> {
    let needle = format!("uplink=\"{uplink}\"");
    body.lines().filter(|l| l.starts_with(metric) && l.contains(&needle)).map(str::to_owned).collect()
}

#[test]
fn metrics_follow_what_exists_across_a_missing_interface_and_reloads() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("hardening").unwrap();
    let config = config(&dir);
    let mut daemon = common::daemon::DaemonProcess::spawn_with(
        &lab.host,
        &config,
        &[],
        &["--no-guard"],
        std::process::Stdio::null(),
    );
    wait_healthy(&lab.host, Duration::from_secs(10));
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    let scrape = || http_get(&lab.host, METRICS_PORT, "/metrics").expect("metrics served").1;
    let healthy = |body: &str, uplink: &str| {
        sample(body, "mhr_uplink_healthy", &format!("uplink=\"{uplink}\",family=\"ipv4\""))
    };
    eventually("ens4 healthy", Duration::from_secs(3), || match healthy(&scrape(), "ens4") {
        Some(1.0) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(sample(&scrape(), "mhr_config_reload_success", ""), Some(1.0));

    let pid = daemon.0.id().to_string();
    let hangup = || {
        let sent = std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    };
    let text = std::fs::read_to_string(&config).unwrap();
    // ens4 becomes the primary: the role is the value of
    // mhr_uplink_primary, and no series carries it as a label.
    let swapped = text.replacen("primary = true\n", "", 1).replacen(
        "interface = \"ens4\"\n",
        "interface = \"ens4\"\nprimary = true\n",
        1,
    );
    std::fs::write(&config, &swapped).unwrap();
    hangup();
    eventually("the primary moved", Duration::from_secs(3), || {
        let body = scrape();
        let roles = ["ens3", "ens4"].map(|u| sample(&body, "mhr_uplink_primary", &format!("uplink=\"{u}\"")));
        let labelled: Vec<&str> = body.lines().filter(|l| l.contains("primary=\"")).collect();
        if roles == [Some(0.0), Some(1.0)] && labelled.is_empty() {
            Ok(())
        } else {
            Err(format!("{roles:?} {labelled:?}"))
        }
    });

    // The interface goes away: its health says so instead of freezing at 1.
    lab.host.ip(["link", "del", "ens4"]).unwrap();
    eventually("a missing interface is unhealthy", Duration::from_secs(3), || {
        match healthy(&scrape(), "ens4") {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // A broken config: refused, counted, the running one stays.
    std::fs::write(&config, "[[uplink]\n").unwrap();
    hangup();
    eventually("the refused reload is counted", Duration::from_secs(3), || {
        let body = scrape();
        let (ok, failed) = (
            sample(&body, "mhr_config_reload_success", ""),
            sample(&body, "mhr_config_reload_failures_total", ""),
        );
        if (ok, failed) == (Some(0.0), Some(1.0)) { Ok(()) } else { Err(format!("{ok:?} {failed:?}")) }
    });

    // ens4 leaves the config (ens3 primary again): every series naming it goes.
    let start = text.find("[[uplink]]\ninterface = \"ens4\"").unwrap();
    let end = text.find("[health]").unwrap();
    std::fs::write(&config, format!("{}{}", &text[..start], &text[end..])).unwrap();
    hangup();
    eventually("ens4's series are gone", Duration::from_secs(3), || {
        let body = scrape();
        let left: Vec<String> = ["mhr_uplink_", "mhr_guard_attached"]
            .iter()
            .flat_map(|metric| series_of(&body, metric, "ens4"))
            .collect();
        let ok = sample(&body, "mhr_config_reload_success", "");
        let primary = sample(&body, "mhr_uplink_primary", "uplink=\"ens3\"");
        if left.is_empty() && ok == Some(1.0) && primary == Some(1.0) {
            Ok(())
        } else {
            Err(format!("{ok:?} {primary:?} {left:?}"))
        }
    });
    daemon.kill_9();
}

#[test]
fn a_new_ula_or_vip_changes_neither_the_probe_source_nor_health() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("hardening").unwrap();
    let config = config(&dir);
    let _daemon = DaemonThread::start(&lab.host, &config, options());
    wait_for_default(&lab.host, "ens3", Duration::from_secs(5));
    // Addresses the upstream does not route, added after the uplink's own:
    // the kernel lists the newest first.
    lab.host.ip(["-6", "addr", "add", "fd00:3::10/64", "dev", "ens3", "nodad"]).unwrap();
    lab.host.ip(["-6", "addr", "add", "2001:db8:99::10/128", "dev", "ens3", "nodad"]).unwrap();
    lab.host.ip(["addr", "add", "192.0.2.250/32", "dev", "ens3"]).unwrap();
    // A deprecated address on the gateway's own prefix: never the source.
    lab.host
        .ip(["-6", "addr", "add", "2001:db8:3::99/64", "dev", "ens3", "nodad", "preferred_lft", "0"])
        .unwrap();
    let rounds = Duration::from_millis(INTERVAL_MS * 6);
    let seen = sample_defaults(&lab.host, rounds);
    assert_eq!(seen, ["ens3"], "IPv4 stays");
    let v6 = lab.host.ip(["-6", "route", "show", "default", "table", "7199"]).unwrap();
    assert!(v6.contains("dev ens3"), "IPv6 stays on ens3: {v6}");
    let check = mhr(&lab.host, &config, &["check"]);
    assert!(check.succeeded(), "{}", check.output);
    assert!(check.output.contains("(probes from 2001:db8:3::10)"), "{}", check.output);
    assert!(check.output.contains("(probes from 10.0.3.10)"), "{}", check.output);
}
