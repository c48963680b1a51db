//! `mhr run` drops privileges once start-up is done: only CAP_NET_ADMIN,
//! CAP_BPF and CAP_NET_RAW stay (effective, permitted and
//! bounding, on every thread), no-new-privs is set, a seccomp filter is in
//! place, and the daemon still does its whole job afterwards: puts back a
//! deleted rule, attaches the guard to a re-created uplink, reloads on
//! SIGHUP and serves /metrics.

mod common;

use std::{process::Stdio, time::Duration};

use common::{
    daemon::{DaemonProcess, METRICS_PORT, eventually, sample, wait_healthy},
    mhr, write_config,
};
use mhr_tests::{Netns, SeedLab, TempDir, probe::http_get, require_root, seed_lab::mhr_config};
use mhr_userspace::tc::interface_index;

const CONVERGE: Duration = Duration::from_secs(10);

/// CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_BPF (39).
const KEPT_MASK: u64 = (1 << 12) | (1 << 13) | (1 << 39);

/// The `Name:` field of every thread's /proc status.
fn thread_fields(pid: u32, name: &str) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon runs");
    tasks
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).expect("status readable");
            status
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| panic!("no {name} in {}", task.path().display()))
        })
        .collect()
}

fn capability_mask(pid: u32, name: &str) -> Vec<u64> {
    thread_fields(pid, name).iter().map(|hex| u64::from_str_radix(hex, 16).expect("hex mask")).collect()
}

fn in_sync(netns: &Netns, config: &std::path::Path) -> Result<(), String> {
    let status = mhr(netns, config, &["status", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(&status.output).map_err(|e| format!("{e}: {status:?}"))?;
    if json["in_sync"] == true { Ok(()) } else { Err(format!("pending: {}", json["pending"])) }
}

fn metrics(netns: &Netns) -> String {
    let (status, body) = http_get(netns, METRICS_PORT, "/metrics").expect("metrics served");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the daemon has dropped its privileges (it does so right
/// after start-up, before the first reconcile).
fn wait_sandboxed(pid: u32) {
    eventually("privileges dropped", CONVERGE, || {
        let seccomp = thread_fields(pid, "Seccomp");
        if seccomp.iter().all(|mode| mode == "2") { Ok(()) } else { Err(format!("Seccomp {seccomp:?}")) }
    });
}

fn probe_lines(body: &str) -> String {
    body.lines().filter(|line| line.starts_with("mhr_uplink_probe")).collect::<Vec<_>>().join("\n")
}

#[test]
fn after_start_up_only_the_kept_capabilities_remain_and_the_daemon_still_works() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("sandbox").unwrap();
    // Probes to both gateways: ICMP sockets opened after the drop (raw ones,
    // as a new namespace's ping_group_range allows no unprivileged ICMP).
    let probed = mhr_config(dir.path())
        .replacen("primary = true\n", "primary = true\nprobe = [\"10.0.3.1\"]\n", 1)
        .replacen("interface = \"ens4\"\n", "interface = \"ens4\"\nprobe = [\"10.0.4.1\"]\n", 1);
    let config = write_config(&dir, &probed);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = DaemonProcess::spawn_with(&lab.host, &config, &[], &[], Stdio::from(log));
    let pid = daemon.0.id();
    let host = &lab.host;
    wait_sandboxed(pid);
    wait_healthy(host, CONVERGE);
    eventually("start-up", CONVERGE, || in_sync(host, &config));

    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let masks = capability_mask(pid, set);
        assert!(masks.iter().all(|&mask| mask == KEPT_MASK), "{set} {masks:x?}, want {KEPT_MASK:x}");
    }
    for set in ["CapInh", "CapAmb"] {
        assert!(capability_mask(pid, set).iter().all(|&mask| mask == 0), "{set} not empty");
    }
    assert!(thread_fields(pid, "NoNewPrivs").iter().all(|v| v == "1"));
    assert!(thread_fields(pid, "Seccomp").iter().all(|v| v == "2"));

    // Drift is still corrected: netlink writes need CAP_NET_ADMIN.
    host.ip(["rule", "del", "from", "10.0.4.0/24", "lookup", "7101", "priority", "7103"]).unwrap();
    eventually("a deleted rule put back", CONVERGE, || in_sync(host, &config));
    assert!(host.ip(["rule"]).unwrap().contains("from 10.0.4.0/24 lookup 7101"));

    // A re-created uplink gets the guard again: map updates and a new TCX
    // link (or clsact filter) through bpf(2) and netlink, after the drop.
    let old_index = host.run(|| interface_index("ens4").unwrap()).unwrap();
    lab.recreate_uplink(1).unwrap();
    let new_index = host.run(|| interface_index("ens4").unwrap()).unwrap();
    assert_ne!(old_index, new_index);
    let pin = dir.pin_dir().join(format!("v1/links/ens4@{new_index}"));
    eventually("the guard attached to the re-created ens4", CONVERGE, || {
        in_sync(host, &config)?;
        let body = metrics(host);
        match (pin.exists(), sample(&body, "mhr_guard_attached", "uplink=\"ens4\"")) {
            (true, Some(1.0)) => Ok(()),
            other => Err(format!("pin {} / attached {:?}", other.0, other.1)),
        }
    });

    // Probes answer: the ICMP sockets work in the sandbox.
    eventually("probes answered on both uplinks", CONVERGE, || {
        let body = metrics(host);
        let answered = |uplink: &str| {
            body.lines().any(|line| {
                line.starts_with("mhr_uplink_probe_rtt_seconds{")
                    && line.contains(&format!("uplink=\"{uplink}\""))
                    && line.contains("family=\"ipv4\"")
            })
        };
        if answered("ens3") && answered("ens4") { Ok(()) } else { Err(probe_lines(&body)) }
    });

    // SIGHUP reloads the config (reads the file, re-plans, reconciles).
    // SAFETY: kill(2) on the daemon's own pid, which this test spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    wait_healthy(host, CONVERGE);

    let body = metrics(host);
    assert_eq!(sample(&body, "mhr_reconciles_total", "result=\"error\""), Some(0.0), "{body}");
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon still runs");
    daemon.kill_9();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("privileges dropped"), "{log}");
    assert!(!log.contains("Operation not permitted"), "a call the sandbox refused:\n{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn no_sandbox_keeps_every_privilege() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("sandbox-off").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let daemon = DaemonProcess::spawn_with(&lab.host, &config, &[], &["--no-sandbox"], Stdio::null());
    let pid = daemon.0.id();
    wait_healthy(&lab.host, CONVERGE);
    assert!(thread_fields(pid, "Seccomp").iter().all(|v| v == "0"));
    assert!(thread_fields(pid, "NoNewPrivs").iter().all(|v| v == "0"));
    let effective = capability_mask(pid, "CapEff");
    assert!(effective.iter().all(|&mask| mask & !KEPT_MASK != 0), "CapEff {effective:x?}");
}

/// `--cleanup-on-exit` under the sandbox: on SIGTERM the daemon detaches
/// the guard, removes its pins and deletes its rules and routes, and exits 0.
#[test]
fn a_sandboxed_daemon_cleans_up_on_exit() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("sandbox-cleanup").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let before = common::snapshot(&lab.host);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon =
        DaemonProcess::spawn_with(&lab.host, &config, &[], &["--cleanup-on-exit"], Stdio::from(log));
    let pid = daemon.0.id();
    wait_sandboxed(pid);
    eventually("start-up", CONVERGE, || in_sync(&lab.host, &config));
    assert_ne!(common::snapshot(&lab.host), before);
    // SAFETY: kill(2) on the daemon's own pid, which this test spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let status = daemon.0.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status}: {log}");
    assert_eq!(common::snapshot(&lab.host), before, "everything removed:\n{log}");
    let links = std::fs::read_dir(dir.pin_dir().join("v1/links")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(links, 0, "no guard link left pinned:\n{log}");
    assert!(!log.contains("Operation not permitted"), "{log}");
}
