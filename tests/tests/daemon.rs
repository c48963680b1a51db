//! `mhr run` keeps the host true: every drift scenario converges to exactly
//! the desired state (bounded waits that fail with what they saw), metrics
//! match the traffic, and a killed daemon leaves the guard working.

mod common;

use std::{
    net::Ipv4Addr,
    process::{Child, Command},
    time::Duration,
};

use common::{
    daemon::{DaemonProcess, DaemonThread, METRICS_PORT, eventually, healthy, mhr_binary, sample},
    mhr, write_config,
};
use mhr_common::guard::{PacketFamily, Verdict};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    probe::http_get,
    quiet_host::QuietHost,
    raw::{RawSender, mac_of, send_frames, udp4_frame},
    require_root,
    seed_lab::{mhr_config, routing_section},
};
use mhr_userspace::{daemon::DaemonOptions, guard::GuardMaps, guard::tc::interface_index};

const CONVERGE: Duration = Duration::from_secs(10);

/// The addresses `interface` holds, link-local ones aside.
fn held_addresses(netns: &Netns, interface: &str) -> Result<Vec<String>, String> {
    let text = netns.ip(["-j", "addr", "show", "dev", interface]).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let info = json[0]["addr_info"].as_array().cloned().unwrap_or_default();
    Ok(info
        .iter()
        .filter(|a| a["scope"] != "link")
        .filter_map(|a| a["local"].as_str().map(str::to_owned))
        .collect())
}

/// Converged: `apply` would change nothing, and the guard's maps and links
/// hold exactly the current uplinks (by ifindex) with exactly their current
/// addresses (IPv4 and IPv6, inline and in the owner maps).
fn converged(netns: &Netns, config: &std::path::Path, pin_dir: &std::path::Path) -> Result<(), String> {
    let status = mhr(netns, config, &["status", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(&status.output).map_err(|e| format!("{e}: {status:?}"))?;
    if json["in_sync"] != true {
        return Err(format!("pending: {}", json["pending"]));
    }
    let maps = GuardMaps::from_pins(pin_dir).map_err(|e| e.to_string())?.ok_or("no guard")?;
    let links: Vec<String> =
        std::fs::read_dir(pin_dir.join(format!("v{}/links", mhr_common::guard::MAP_LAYOUT_VERSION)))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    for uplink in json["uplinks"].as_array().ok_or("no uplinks")? {
        let name = uplink["interface"].as_str().ok_or("no name")?;
        let index = uplink["index"].as_u64().ok_or("no index")? as u32;
        if !links.contains(&format!("{name}@{index}")) {
            return Err(format!("no link pinned for {name}@{index}: {links:?}"));
        }
        let entry = maps.uplinks.get(&index, 0).map_err(|e| e.to_string())?;
        if entry.enabled == 0 {
            return Err(format!("guard map entry for {name}@{index} disabled"));
        }
        // A down link routes none of its addresses, but they stay its own.
        let mut addresses: Vec<String> = if uplink["up"] == false {
            held_addresses(netns, name)?
        } else {
            uplink["addresses"]
                .as_array()
                .ok_or("no addresses")?
                .iter()
                .filter_map(|a| a.as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_owned())
                .collect()
        };
        let mut mapped: Vec<String> = entry.v4[..usize::from(entry.v4_count)]
            .iter()
            .map(|w| Ipv4Addr::from(w.to_ne_bytes()).to_string())
            .collect();
        mapped.extend(entry.v6[..usize::from(entry.v6_count)].iter().map(|[high, low]| {
            let mut octets = [0u8; 16];
            octets[..8].copy_from_slice(&high.to_ne_bytes());
            octets[8..].copy_from_slice(&low.to_ne_bytes());
            std::net::Ipv6Addr::from(octets).to_string()
        }));
        addresses.sort();
        mapped.sort();
        if addresses != mapped {
            return Err(format!("{name}: guard holds {mapped:?}, uplink has {addresses:?}"));
        }
        let slot = entry.slot;
        for address in addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
            let owner =
                maps.owners_v4.get(&u32::from_ne_bytes(address.octets()), 0).map_err(|e| e.to_string())?;
            if owner != slot {
                return Err(format!("{address} is owned by slot {owner}, not {name}'s {slot}"));
            }
        }
    }
    if links.len() != json["uplinks"].as_array().map_or(0, Vec::len) {
        return Err(format!("leaked links: {links:?}"));
    }
    Ok(())
}

fn options() -> DaemonOptions {
    DaemonOptions { resync: Duration::from_secs(3600), ..DaemonOptions::default() }
}

#[test]
fn every_drift_scenario_converges_to_exactly_the_desired_state() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let pin_dir = dir.pin_dir();
    let host = &lab.host;
    let _daemon = DaemonThread::start(host, &config, options());
    let settle = |what: &str| eventually(what, CONVERGE, || converged(host, &config, &pin_dir));
    settle("start-up");

    host.ip(["rule", "del", "from", "10.0.4.0/24", "lookup", "7101", "priority", "7103"]).unwrap();
    settle("an mhr rule deleted by someone else");
    host.ip(["route", "del", "default", "table", "7101"]).unwrap();
    settle("an mhr route deleted by someone else");

    host.ip(["route", "del", "default", "table", "7199", "proto", "210"]).unwrap();
    settle("mhr's default deleted by someone else");
    let defaults = host.ip(["route", "show", "default", "table", "7199"]).unwrap();
    assert!(defaults.contains("default via 10.0.3.1 dev ens3 proto 210"), "{defaults}");
    host.ip(["rule", "del", "priority", "7298"]).unwrap();
    settle("mhr's rule to main without its defaults deleted by someone else");
    host.ip(["route", "del", "default", "via", "10.0.4.1", "dev", "ens4"]).unwrap();
    host.ip(["route", "add", "default", "via", "10.0.4.1", "dev", "ens4", "proto", "dhcp", "metric", "200"])
        .unwrap();
    settle("a DHCP client re-adding the secondary default route to main");
    let defaults = host.ip(["route", "show", "default"]).unwrap();
    assert!(
        defaults.contains("default via 10.0.4.1 dev ens4 proto dhcp metric 200"),
        "left alone: {defaults}"
    );

    host.ip(["addr", "add", "10.0.40.20/24", "dev", "ens4"]).unwrap();
    settle("an address in a new prefix added");
    assert!(host.ip(["rule"]).unwrap().contains("from 10.0.40.0/24 lookup 7101"));
    host.ip(["addr", "del", "10.0.40.20/24", "dev", "ens4"]).unwrap();
    settle("an address removed");
    assert!(!host.ip(["rule"]).unwrap().contains("10.0.40."));

    host.ip(["link", "set", "ens4", "down"]).unwrap();
    settle("link down");
    assert!(!host.ip(["rule"]).unwrap().contains("lookup 7101"), "a down uplink has no rules");
    host.ip(["link", "set", "ens4", "up"]).unwrap();
    settle("link up");
    assert!(host.ip(["rule"]).unwrap().contains("from 10.0.4.0/24 lookup 7101"));

    let old_index = host.run(|| interface_index("ens4").unwrap()).unwrap();
    lab.recreate_uplink(1).unwrap();
    let new_index = host.run(|| interface_index("ens4").unwrap()).unwrap();
    assert_ne!(old_index, new_index);
    settle("interface removed and re-created with the same name");
    let maps = GuardMaps::from_pins(&pin_dir).unwrap().unwrap();
    assert_eq!(maps.uplinks.get(&old_index, 0).unwrap().enabled, 0, "the old ifindex is no longer guarded");

    let (status, body) = http_get(host, METRICS_PORT, "/metrics").expect("metrics served");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&body, "mhr_reconciles_total", "result=\"error\""),
        Some(0.0),
        "no reconcile failed (the series exists from the start):\n{body}"
    );
    // Drift: two rules and two routes someone deleted, put back; the rest
    // followed the host (an address added and removed, a link flap, a
    // re-created interface).
    let drift = |kind: &str| sample(&body, "mhr_drift_corrections_total", &format!("kind=\"{kind}\""));
    let host_change = |kind: &str| sample(&body, "mhr_host_changes_total", &format!("kind=\"{kind}\""));
    assert_eq!(drift("rule_added"), Some(2.0), "{body}");
    assert_eq!(drift("route_added"), Some(2.0), "{body}");
    assert_eq!(drift("route_deleted"), Some(0.0), "nothing foreign deleted");
    assert!(host_change("rule_added").unwrap_or(0.0) >= 2.0, "{body}");
    assert!(host_change("rule_deleted").unwrap_or(0.0) >= 2.0, "{body}");
    assert!(sample(&body, "mhr_drift_corrections_total", "kind=\"guard_attached\"").unwrap_or(0.0) >= 1.0);
    assert_eq!(sample(&body, "mhr_guard_attached", "uplink=\"ens4\""), Some(1.0));
    assert_eq!(http_get(host, METRICS_PORT, "/healthz"), Some((200, "ok\n".to_owned())));

    // mhr never moved the DHCP default: after `down` it is still there, once.
    drop(_daemon);
    let down = mhr(host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    let defaults = host.ip(["route", "show", "default"]).unwrap();
    assert_eq!(defaults.matches("dev ens4").count(), 1, "{defaults}");
}

#[test]
fn two_hundred_address_flaps_end_exactly_desired_with_no_reconcile_errors() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let pin_dir = dir.pin_dir();
    // A small notification buffer: the burst overruns it, which must end
    // in a full resync rather than a missed change.
    let small = DaemonOptions { netlink_buffer: 4096, ..options() };
    let _daemon = DaemonThread::start(&lab.host, &config, small);
    eventually("start-up", CONVERGE, || converged(&lab.host, &config, &pin_dir));
    let mut batch = String::new();
    for _ in 0..200 {
        batch += "addr add 10.0.4.30/24 dev ens4\naddr del 10.0.4.30/24 dev ens4\n";
    }
    lab.host.ip_batch(&batch).unwrap();
    // Wait until the daemon has reconciled after the flaps, then check.
    eventually("a reconcile after the flaps", CONVERGE, || {
        let (_, body) = http_get(&lab.host, METRICS_PORT, "/metrics").ok_or("no metrics")?;
        let ok = sample(&body, "mhr_reconciles_total", "result=\"ok\"").unwrap_or(0.0);
        if ok >= 2.0 { Ok(()) } else { Err(format!("{ok} reconciles")) }
    });
    eventually("after 200 flaps", CONVERGE, || converged(&lab.host, &config, &pin_dir));
    assert!(!lab.host.ip(["rule"]).unwrap().contains("10.0.4.30"));
    let (_, body) = http_get(&lab.host, METRICS_PORT, "/metrics").unwrap();
    assert_eq!(sample(&body, "mhr_reconciles_total", "result=\"error\""), Some(0.0), "{body}");
    assert!(
        sample(&body, "mhr_netlink_resyncs_total", "reason=\"overrun\"").unwrap_or(0.0) >= 1.0,
        "the burst overran the socket and forced a resync:\n{body}"
    );
}

/// A quiet host (nothing but what the test sends) under the daemon.
fn quiet_daemon_config(dir: &TempDir) -> std::path::PathBuf {
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n[metrics]\ntop_offenders = 3\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

fn offending_frames(host: &QuietHost) -> (Vec<u8>, Vec<u8>) {
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    let good = udp4_frame(own, peer, host.uplinks[0].address, host.uplinks[0].peer_address, 64);
    let spoofed = udp4_frame(own, peer, Ipv4Addr::new(192, 0, 2, 66), host.uplinks[0].peer_address, 64);
    (good, spoofed)
}

#[test]
fn scraped_metrics_match_the_packets_sent_exactly() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = quiet_daemon_config(&dir);
    let _daemon = DaemonThread::start(&host.host, &config, options());
    eventually("first reconcile done", CONVERGE, || healthy(&host.host));
    let (good, spoofed) = offending_frames(&host);
    send_frames(&host.host, "ens3", &good, 7).unwrap();
    send_frames(&host.host, "ens3", &spoofed, 5).unwrap();
    let frame = good.len() as f64;

    let (status, body) = http_get(&host.host, METRICS_PORT, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_promtool_accepts(&body);
    let packets = |verdict: Verdict| {
        let labels = format!(
            "uplink=\"ens3\",family=\"{}\",verdict=\"{}\"",
            PacketFamily::Ipv4.name(),
            verdict.name()
        );
        (sample(&body, "mhr_guard_packets_total", &labels), sample(&body, "mhr_guard_bytes_total", &labels))
    };
    assert_eq!(packets(Verdict::Ok), (Some(7.0), Some(7.0 * frame)), "{body}");
    assert_eq!(packets(Verdict::Spoofed), (Some(5.0), Some(5.0 * frame)));
    assert_eq!(packets(Verdict::Asymmetric), (Some(0.0), Some(0.0)));
    assert_eq!(sample(&body, "mhr_guard_flags_emitted_total", "uplink=\"ens3\""), Some(5.0));
    assert_eq!(sample(&body, "mhr_guard_flags_suppressed_total", "uplink=\"ens3\""), Some(0.0));
    assert_eq!(sample(&body, "mhr_guard_offenders", ""), Some(1.0));
    assert_eq!(sample(&body, "mhr_guard_offenders_capacity", ""), Some(1024.0));
    assert_eq!(
        sample(
            &body,
            "mhr_guard_top_offender_packets",
            "uplink=\"ens3\",source=\"192.0.2.66\",verdict=\"spoofed\""
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&body, "mhr_rules_installed", ""),
        Some(4.0),
        "a from rule per uplink prefix, two to mhr's default"
    );
    assert!(sample(&body, "mhr_last_successful_reconcile_timestamp_seconds", "").unwrap_or(0.0) > 1.7e9);
    assert!(body.contains("mhr_build_info{version=\""));
    assert_eq!(
        body.matches("mhr_guard_packets_total{").count(),
        2 * 3 * mhr_common::guard::VERDICTS,
        "labels bounded by uplinks"
    );
    // The TCP figures come with `[health] passive` (tests/tests/passive.rs).
    for name in mhr_userspace::metrics::DATAPATH_METRICS.iter().filter(|name| !name.contains("_tcp_")) {
        assert!(
            body.contains(&format!("\n{name}{{")) || body.contains(&format!("\n{name} ")),
            "{name} exported"
        );
    }
}

fn scraped_ok(host: &QuietHost) -> Option<f64> {
    let (_, body) = http_get(&host.host, METRICS_PORT, "/metrics")?;
    sample(&body, "mhr_guard_packets_total", "uplink=\"ens3\",family=\"ipv4\",verdict=\"ok\"")
}

#[test]
fn after_kill_9_the_guard_keeps_counting_and_a_restart_continues_the_counters() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = quiet_daemon_config(&dir);
    let (good, _) = offending_frames(&host);

    let mut first = DaemonProcess::spawn(&host.host, &config);
    eventually("first daemon reconciled", CONVERGE, || healthy(&host.host));
    send_frames(&host.host, "ens3", &good, 10).unwrap();
    assert_eq!(scraped_ok(&host), Some(10.0));

    first.kill_9(); // no clean-up runs
    send_frames(&host.host, "ens3", &good, 10).unwrap();
    let maps = GuardMaps::from_pins(&dir.pin_dir()).unwrap().expect("pins survive the daemon");
    let slot = maps.slot_of("ens3").unwrap().expect("ens3 has a slot");
    let ok = maps.verdict_counts(slot).unwrap().get(PacketFamily::Ipv4, Verdict::Ok).packets;
    assert_eq!(ok, 20, "the guard stayed attached and counted while no daemon ran");

    let mut second = DaemonProcess::spawn(&host.host, &config);
    eventually("second daemon reconciled", CONVERGE, || healthy(&host.host));
    send_frames(&host.host, "ens3", &good, 10).unwrap();
    assert_eq!(scraped_ok(&host), Some(30.0), "counters continue, not reset");
    second.kill_9();
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn flagged_packets_are_logged_as_structured_json_lines() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = quiet_daemon_config(&dir);
    let mut daemon = DaemonProcess::spawn_with(
        &host.host,
        &config,
        &["--log-format", "json"],
        &[],
        std::process::Stdio::piped(),
    );
    let stderr = daemon.0.stderr.take().expect("stderr piped");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    eventually("first reconcile done", CONVERGE, || healthy(&host.host));
    // Two offenders: each one's first flagged packet is a line.
    for source in [66, 67] {
        send_frames(&host.host, "ens3", &spoofed_from(&host, source), 1).unwrap();
    }

    let mut flagged = Vec::new();
    let deadline = std::time::Instant::now() + CONVERGE;
    while flagged.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = received.recv_timeout(left).expect("two flagged-packet lines within the timeout");
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if json["fields"]["message"] == "flagged packet" {
            flagged.push(json);
        }
    }
    for line in &flagged {
        assert_eq!(line["target"], "mhr::flag");
        assert_eq!(line["fields"]["uplink"], "ens3");
        assert_eq!(line["fields"]["verdict"], "spoofed");
        assert_eq!(line["fields"]["dst"], host.uplinks[0].peer_address.to_string());
        assert_eq!(line["fields"]["dropped"], false);
        assert_eq!(line["fields"]["proto"], "udp", "the flag schema's names, as in `watch --json`");
        assert!(line["fields"]["len"].as_u64().is_some_and(|len| len > 0), "{line}");
    }
    let sources: Vec<&str> = flagged.iter().filter_map(|line| line["fields"]["src"].as_str()).collect();
    assert_eq!(sources, ["192.0.2.66", "192.0.2.67"]);
    daemon.kill_9();
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn cleanup_on_exit_removes_everything_and_the_default_leaves_it_in_place() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let pin_dir = dir.pin_dir();
    let before = common::snapshot(&lab.host);

    let daemon = DaemonThread::start(&lab.host, &config, options());
    eventually("start-up", CONVERGE, || converged(&lab.host, &config, &pin_dir));
    daemon.stop();
    assert_ne!(common::snapshot(&lab.host), before, "by default routing stays after the daemon stops");
    assert!(GuardMaps::from_pins(&pin_dir).unwrap().is_some(), "and so does the guard");

    let cleaning = DaemonOptions { cleanup_on_exit: true, ..options() };
    let daemon = DaemonThread::start(&lab.host, &config, cleaning);
    eventually("adopted", CONVERGE, || converged(&lab.host, &config, &pin_dir));
    daemon.stop();
    assert_eq!(common::snapshot(&lab.host), before, "--cleanup-on-exit restores the host");
    assert!(GuardMaps::from_pins(&pin_dir).unwrap().is_none(), "and unpins the guard");
}

/// `promtool check metrics`: the exposition parses and follows the
/// Prometheus naming and help conventions.
fn assert_promtool_accepts(exposition: &str) {
    use std::io::Write as _;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{exposition}"
    );
}

#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping_and_sighup_reloads_the_config() {
    use std::os::unix::net::UnixDatagram;
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = quiet_daemon_config(&dir);
    let socket_path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    // As systemd starts it: WATCHDOG_PID names the service's own pid (the
    // shell's, kept through both execs).
    let child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec nsenter --net=/run/netns/\"$0\" \"$1\" --config \"$2\" run"])
        .arg(host.host.name())
        .arg(mhr_binary())
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = DaemonProcess(child);
    let next = |what: &str| -> String {
        let mut buffer = [0u8; 256];
        loop {
            let size = systemd.recv(&mut buffer).unwrap_or_else(|err| panic!("waiting for {what}: {err}"));
            let message = String::from_utf8_lossy(&buffer[..size]).into_owned();
            if message.contains(what) {
                return message;
            }
        }
    };
    next("READY=1");
    assert!(healthy(&host.host).is_ok(), "ready once the first reconcile ran");
    next("WATCHDOG=1");

    // SIGHUP with a changed config: the seed's `to` rules as well.
    assert!(!host.host.ip(["rule"]).unwrap().contains("from all to"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("[routing]\n", "[routing]\nto_rules = true\n")).unwrap();
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    next("RELOADING=1");
    next("READY=1");
    eventually("the reloaded config is in force", CONVERGE, || {
        let rules = host.host.ip(["rule"]).unwrap_or_default();
        if rules.contains("from all to 10.99.0.10 lookup") { Ok(()) } else { Err(rules) }
    });
    // A broken config: logged, the daemon and the running config stay.
    std::fs::write(&config, "[[uplink]\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(daemon.0.try_wait().unwrap().is_none(), "a bad config does not stop the daemon");
    assert!(healthy(&host.host).is_ok());
    assert!(host.host.ip(["rule"]).unwrap().contains("lookup 7101"), "routing stays");

    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    next("STOPPING=1");
    let output = daemon.0.wait_with_output_owned();
    assert!(output.contains("reloading the config failed"), "{output}");
    assert!(output.contains("config reloaded"), "{output}");
    let named = output
        .lines()
        .any(|line| line.contains("changed") && line.contains("add rule from all to 10.99.0.10"));
    assert!(named, "each change the daemon makes is a log line naming it: {output}");
    assert!(!output.contains('\u{1b}'), "no ANSI colours in a log that is not a terminal: {output:?}");
}

trait WaitOwned {
    fn wait_with_output_owned(&mut self) -> String;
}

impl WaitOwned for Child {
    /// Waits for the process and returns what it wrote to stderr.
    fn wait_with_output_owned(&mut self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        let _ = self.wait();
        text
    }
}

#[test]
fn route_churn_in_tables_mhr_does_not_use_triggers_no_reconcile() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let _daemon = DaemonThread::start(&lab.host, &config, options());
    let reconciles = || {
        let body = http_get(&lab.host, METRICS_PORT, "/metrics").map(|r| r.1).unwrap_or_default();
        sample(&body, "mhr_reconciles_total", "result=\"ok\"")
    };
    // The series exists (at 0) before the first reconcile ends.
    eventually("first reconcile", CONVERGE, || match reconciles() {
        Some(count) if count >= 1.0 => Ok(()),
        other => Err(format!("{other:?}")),
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = reconciles();

    // A BGP-like table: 2,000 prefixes added and removed in table 100.
    let mut batch = String::new();
    for i in 0..2000u32 {
        batch +=
            &format!("route add 172.{}.{}.0/24 via 10.0.3.1 dev ens3 table 100\n", 16 + i / 256, i % 256);
    }
    lab.host.ip_batch(&batch).unwrap();
    lab.host.ip(["route", "flush", "table", "100"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(reconciles(), before, "foreign route churn is ignored");

    // A route in main still counts.
    lab.host.ip(["route", "add", "198.18.0.0/15", "via", "10.0.3.1", "dev", "ens3"]).unwrap();
    eventually("a change in main is reconciled", CONVERGE, || match (reconciles(), before) {
        (Some(now), Some(before)) if now > before => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// The daemon's JSON log lines (stderr) once it is killed.
fn log_lines(daemon: &mut DaemonProcess) -> Vec<String> {
    use std::io::BufRead as _;
    let _ = daemon.0.kill();
    let stderr = daemon.0.stderr.take().unwrap();
    std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect()
}

/// A spoofed frame out of ens3 from 192.0.2.`host`.
fn spoofed_from(host: &QuietHost, source: u8) -> Vec<u8> {
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    udp4_frame(own, peer, Ipv4Addr::new(192, 0, 2, source), host.uplinks[0].peer_address, 64)
}

fn flag_daemon(host: &QuietHost, dir: &TempDir, args: &[&str]) -> DaemonProcess {
    let config = quiet_daemon_config(dir);
    let daemon = DaemonProcess::spawn_with(
        &host.host,
        &config,
        &["--log-format", "json"],
        args,
        std::process::Stdio::piped(),
    );
    eventually("first reconcile done", CONVERGE, || healthy(&host.host));
    daemon
}

#[test]
fn a_flood_of_new_offenders_leaves_the_log_bounded_and_counted() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let mut daemon = flag_daemon(&host, &dir, &["--flag-log-rate", "5"]);
    // Frames built first and sent through one socket: the burst takes
    // milliseconds, so it spans at most two of the cap's one-second windows.
    let frames: Vec<Vec<u8>> = (1..=100).map(|source| spoofed_from(&host, source)).collect();
    let sender = RawSender::open(&host.host, "ens3").unwrap();
    let burst = std::time::Instant::now();
    for frame in &frames {
        assert!(sender.send(frame).unwrap(), "frame sent");
    }
    let windows = burst.elapsed().as_secs() + 2;
    // The summary comes when the second ends.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let body = http_get(&host.host, METRICS_PORT, "/metrics").unwrap().1;
    let emitted = sample(&body, "mhr_guard_flags_emitted_total", "uplink=\"ens3\"").unwrap();
    let not_logged = sample(&body, "mhr_flag_log_lines_suppressed_total", "").unwrap();
    let lines = log_lines(&mut daemon);
    let flagged = lines.iter().filter(|l| l.contains("\"flagged packet\"")).count();
    let summaries: u64 = lines
        .iter()
        .filter(|l| l.contains("not written (log cap per second)"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["fields"]["suppressed"].as_u64())
        .sum();
    assert_eq!(emitted, 100.0, "the kernel flagged each: {body}");
    // 5 a second, in every window the burst touched.
    assert!((5..=5 * windows as usize).contains(&flagged), "the cap: {flagged} lines: {lines:?}");
    assert_eq!(flagged as f64 + not_logged, emitted, "every new offender's line logged or counted");
    assert_eq!(summaries as f64, not_logged, "the summary says how many: {lines:?}");
}

#[test]
fn an_offender_is_logged_once_then_summarised_once_per_interval() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("daemon").unwrap();
    let mut daemon = flag_daemon(&host, &dir, &["--flag-summary-interval", "1s"]);
    for source in [66, 67, 68] {
        send_frames(&host.host, "ens3", &spoofed_from(&host, source), 20).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let body = http_get(&host.host, METRICS_PORT, "/metrics").unwrap().1;
    let lines = log_lines(&mut daemon);
    let json: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or_default().to_owned();
    let first: Vec<&serde_json::Value> = json.iter().filter(|v| message(v) == "flagged packet").collect();
    let summaries: Vec<&serde_json::Value> =
        json.iter().filter(|v| message(v) == "offender still flagged").collect();
    assert_eq!(first.len(), 3, "one line per new offender: {lines:?}");
    assert_eq!(summaries.len(), 3, "one summary per offender, none once it is quiet: {lines:?}");
    for summary in &summaries {
        assert_eq!(summary["fields"]["packets"].as_u64(), Some(19), "{summary}");
        assert_eq!(summary["fields"]["uplink"].as_str(), Some("ens3"));
    }
    let sources: std::collections::BTreeSet<&str> =
        summaries.iter().filter_map(|s| s["fields"]["src"].as_str()).collect();
    assert_eq!(sources.len(), 3, "{sources:?}");
    assert_eq!(sample(&body, "mhr_flag_records_folded_total", ""), Some(57.0), "{body}");
    assert_eq!(sample(&body, "mhr_flag_log_lines_suppressed_total", ""), Some(0.0));
}
