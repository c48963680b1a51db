//! The fault suite: what an unlucky or hostile operator does to a host
//! running mhr, each in namespaces against the real kernel, and what mhr
//! must still guarantee afterwards.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{
    daemon::{DaemonProcess, DaemonThread, METRICS_PORT, eventually, sample, wait_healthy},
    mhr, snapshot, write_config,
};
use mhr_tests::{
    TempDir,
    many_uplinks::ManyUplinks,
    mount::Mount,
    probe::http_get,
    quiet_host::QuietHost,
    raw::{mac_of, send_frames, udp4_frame},
    require_root,
    seed_lab::routing_section,
};
use mhr_userspace::{daemon::DaemonOptions, guard::GuardMaps};

fn quiet_daemon() -> DaemonOptions {
    DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() }
}

#[test]
fn two_applies_at_once_take_turns_and_both_succeed() {
    require_root();
    let host = ManyUplinks::start(40, 2, 1).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    for round in 0..3 {
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| mhr(&host.host, &config, &["apply", "--no-guard"]));
            let second = scope.spawn(|| mhr(&host.host, &config, &["apply", "--no-guard"]));
            (first.join().unwrap(), second.join().unwrap())
        });
        assert!(first.succeeded(), "round {round}: {first:?}");
        assert!(second.succeeded(), "round {round}: {second:?}");
        // One did the work, the other found the host as desired.
        let idle = [&first, &second].iter().filter(|run| run.output.starts_with("no changes")).count();
        assert_eq!(idle, 1, "round {round}:\n{}\n{}", first.output, second.output);
        let check = mhr(&host.host, &config, &["check"]);
        assert!(check.succeeded(), "{}", check.output);
        assert!(mhr(&host.host, &config, &["down"]).succeeded());
    }
}

#[test]
fn apply_and_down_beside_the_daemon_are_refused_naming_it_and_change_nothing() {
    require_root();
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let daemon = DaemonThread::start(&host.host, &config, quiet_daemon());
    eventually("the daemon applied", Duration::from_secs(10), || {
        let rules = host.host.ip(["rule"]).unwrap_or_default();
        if rules.contains("lookup 7101") { Ok(()) } else { Err(rules) }
    });
    let before = snapshot(&host.host);
    for command in ["apply", "down"] {
        let started = std::time::Instant::now();
        let refused = mhr(&host.host, &config, &[command]);
        assert!(started.elapsed() < Duration::from_secs(2), "{command} is refused at once");
        let error = refused.error();
        assert!(
            error.contains(&format!("mhr run (pid {}, mhr run)", std::process::id()))
                && error.contains("stop it"),
            "{command}: {refused:?}"
        );
        assert_eq!(snapshot(&host.host), before, "{command} changed nothing");
    }
    // Read-only commands still work beside it.
    assert!(mhr(&host.host, &config, &["status"]).result.is_ok());
    daemon.stop();
    let down = mhr(&host.host, &config, &["down"]);
    assert!(down.succeeded(), "once the daemon stopped: {down:?}");
}

/// Two uplinks of a quiet host under `mhr run` in enforce mode.
fn enforce_config(dir: &TempDir) -> std::path::PathBuf {
    let text = format!(
        "mode = \"enforce\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

fn guard_daemon() -> DaemonOptions {
    DaemonOptions {
        resync: Duration::from_secs(3600),
        guard_repair_deadline: Duration::from_secs(3),
        exit_when_guard_lost: true,
        ..DaemonOptions::default()
    }
}

fn scrape(host: &QuietHost) -> String {
    http_get(&host.host, METRICS_PORT, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

fn spoofed_frame(host: &QuietHost) -> Vec<u8> {
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    udp4_frame(own, peer, Ipv4Addr::new(192, 0, 2, 66), host.uplinks[0].peer_address, 64)
}

fn start_guarded() -> (QuietHost, TempDir, DaemonThread) {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = enforce_config(&dir);
    let daemon = DaemonThread::start(&host.host, &config, guard_daemon());
    wait_healthy(&host.host, Duration::from_secs(10));
    (host, dir, daemon)
}

#[test]
fn removed_pins_are_put_back_the_guard_never_stops_dropping_and_counters_continue() {
    let (host, dir, _daemon) = start_guarded();
    let spoofed = spoofed_frame(&host);
    assert_eq!(send_frames(&host.host, "ens3", &spoofed, 5).unwrap(), 5, "enforce drops spoofed packets");

    // What `rm -r` of the pin directory (or an unmounted bpffs) does.
    std::fs::remove_dir_all(dir.pin_dir()).unwrap();
    assert_eq!(
        send_frames(&host.host, "ens3", &spoofed, 5).unwrap(),
        5,
        "the daemon holds its links: the guard kept dropping with its pins gone"
    );
    eventually("the pins are back", Duration::from_secs(5), || {
        let maps = GuardMaps::from_pins(&dir.pin_dir()).map_err(|e| e.to_string())?;
        let links: Vec<String> = std::fs::read_dir(
            dir.pin_dir().join(format!("v{}/links", mhr_common::guard::MAP_LAYOUT_VERSION)),
        )
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
        if maps.is_some() && links.len() == 2 { Ok(()) } else { Err(format!("links {links:?}")) }
    });
    let body = scrape(&host);
    assert!(sample(&body, "mhr_guard_repairs_total", "kind=\"map\"").unwrap_or(0.0) >= 10.0, "{body}");
    assert_eq!(sample(&body, "mhr_guard_repairs_total", "kind=\"link\""), Some(2.0), "{body}");
    assert_eq!(sample(&body, "mhr_guard_attached", "uplink=\"ens3\""), Some(1.0), "{body}");
    // The same maps: the counters went on through the repair.
    let spoofed_count = "uplink=\"ens3\",family=\"ipv4\",verdict=\"spoofed\"";
    assert_eq!(sample(&body, "mhr_guard_packets_total", spoofed_count), Some(10.0), "{body}");
    assert_eq!(send_frames(&host.host, "ens3", &spoofed, 5).unwrap(), 5);
    assert_eq!(sample(&scrape(&host), "mhr_guard_packets_total", spoofed_count), Some(15.0));
}

#[test]
fn a_guard_detached_behind_the_daemons_back_is_seen_and_attached_again() {
    let (host, dir, _daemon) = start_guarded();
    let spoofed = spoofed_frame(&host);
    let pin = dir.pin_dir().join(format!(
        "v{}/links/ens3@{}",
        mhr_common::guard::MAP_LAYOUT_VERSION,
        link_ifindex(&dir, "ens3")
    ));
    detach_link(&pin);
    eventually("the guard is attached again", Duration::from_secs(5), || {
        let body = scrape(&host);
        match sample(&body, "mhr_guard_repairs_total", "kind=\"link\"") {
            Some(count) if count >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(send_frames(&host.host, "ens3", &spoofed, 3).unwrap(), 3, "dropping again");
    assert_eq!(sample(&scrape(&host), "mhr_guard_attached", "uplink=\"ens3\""), Some(1.0));
}

#[test]
fn a_guard_that_cannot_be_repaired_fails_healthz_and_the_daemon_exits_for_its_supervisor() {
    let (host, dir, mut daemon) = start_guarded();
    let pin = dir.pin_dir().join(format!(
        "v{}/links/ens3@{}",
        mhr_common::guard::MAP_LAYOUT_VERSION,
        link_ifindex(&dir, "ens3")
    ));
    let link = open_pin(&pin);
    // Nothing can be pinned there any more (not a bpffs), and a removed map
    // pin makes the daemon try.
    let _tmpfs = Mount::tmpfs(&dir.pin_dir());
    eventually("/healthz fails naming the cause", Duration::from_secs(3), || {
        match http_get(&host.host, METRICS_PORT, "/healthz") {
            Some((503, body)) if body.contains("pinning") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The kernel still runs the guard (the daemon holds its links): staying
    // up past the deadline keeps it dropping.
    assert_eq!(daemon.exited_within(Duration::from_secs(4)), None, "stays up while the guard works");
    assert_eq!(send_frames(&host.host, "ens3", &spoofed_frame(&host), 3).unwrap(), 3);
    // Now the guard is detached from ens3 and cannot come back.
    link_detach(&link);
    let exited = daemon.exited_within(Duration::from_secs(10)).expect("the daemon exits within its deadline");
    let error = exited.expect_err("with an error");
    assert!(error.contains("could not be repaired"), "{error}");
}

/// A link pin that cannot be put back (its directory is no bpffs any more)
/// leaves the link attached: the daemon holds it by a descriptor of its
/// own, says why the pin is missing, and pins the same link again once it
/// can. (Pinning through aya's `FdLink::pin` consumed that handle, so a
/// failed re-pin detached the guard.)
#[test]
fn a_link_pin_that_cannot_be_put_back_leaves_the_guard_attached_until_it_can() {
    use std::os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _};
    let (host, dir, mut daemon) = start_guarded();
    let spoofed = spoofed_frame(&host);
    let links = dir.pin_dir().join(format!("v{}/links", mhr_common::guard::MAP_LAYOUT_VERSION));
    let name = format!("ens3@{}", link_ifindex(&dir, "ens3"));
    // The bpffs directory, reachable after a tmpfs hides it.
    let bpffs_links = std::fs::File::open(&links).unwrap();
    let tmpfs = Mount::tmpfs(&links);
    // Now remove the link's pin for good: only the daemon's handle is left.
    let pin = std::ffi::CString::new(std::ffi::OsStr::new(&name).as_bytes()).unwrap();
    // SAFETY: unlinkat(2) of a name in a directory this test opened.
    let removed = unsafe { libc::unlinkat(bpffs_links.as_raw_fd(), pin.as_ptr(), 0) };
    assert_eq!(removed, 0, "removing {name}: {}", std::io::Error::last_os_error());
    eventually("/healthz names the failed re-pin", Duration::from_secs(5), || {
        match http_get(&host.host, METRICS_PORT, "/healthz") {
            Some((503, body)) if body.contains("pinning the link") && body.contains(&name) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // Several repair rounds failed by now (one a second): the guard stays.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.exited_within(Duration::ZERO), None, "the daemon stays up: its guard works");
    assert_eq!(send_frames(&host.host, "ens3", &spoofed, 5).unwrap(), 5, "still dropping spoofed packets");
    let body = scrape(&host);
    assert_eq!(sample(&body, "mhr_guard_attached", "uplink=\"ens3\""), Some(1.0), "{body}");
    assert!(sample(&body, "mhr_guard_failures_total", "reason=\"pin\"").unwrap_or(0.0) >= 1.0, "{body}");

    // The bpffs is back: the same link is pinned again.
    drop(tmpfs);
    eventually("the link is pinned again", Duration::from_secs(5), || {
        if links.join(&name).exists() { Ok(()) } else { Err("no pin".into()) }
    });
    wait_healthy(&host.host, Duration::from_secs(5));
    assert_eq!(send_frames(&host.host, "ens3", &spoofed, 5).unwrap(), 5);
    let spoofed_count = "uplink=\"ens3\",family=\"ipv4\",verdict=\"spoofed\"";
    assert_eq!(sample(&scrape(&host), "mhr_guard_packets_total", spoofed_count), Some(10.0));
    // ens3's pin only: ens4's was hidden under the tmpfs, never removed.
    assert_eq!(sample(&scrape(&host), "mhr_guard_repairs_total", "kind=\"link\""), Some(1.0));
}

/// The ifindex in the name of `interface`'s link pin.
fn link_ifindex(dir: &TempDir, interface: &str) -> u32 {
    let links =
        std::fs::read_dir(dir.pin_dir().join(format!("v{}/links", mhr_common::guard::MAP_LAYOUT_VERSION)))
            .unwrap();
    links
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&format!("{interface}@"))?.parse().ok()
        })
        .expect("a link pin")
}

/// BPF_OBJ_GET: a file descriptor for a pinned object.
fn open_pin(path: &std::path::Path) -> std::os::fd::OwnedFd {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u64; 2];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: bpf(2) with a zero-padded attribute; the path outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    assert!(fd >= 0, "BPF_OBJ_GET {path:?}: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor we own.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

/// BPF_LINK_DETACH: detaches a link from its hook whoever holds it.
fn link_detach(link: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd as _;
    let mut attr = [0u64; 1];
    attr[0] = link.as_raw_fd() as u64;
    // SAFETY: bpf(2) with a zero-padded attribute.
    let result = unsafe { libc::syscall(libc::SYS_bpf, 34, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    assert_eq!(result, 0, "BPF_LINK_DETACH: {}", std::io::Error::last_os_error());
}

fn detach_link(pin: &std::path::Path) {
    link_detach(&open_pin(pin));
}

#[test]
fn slow_and_half_sent_http_clients_cannot_starve_the_daemon() {
    use std::io::{Read as _, Write as _};
    require_root();
    let host = ManyUplinks::start(2, 1, 0).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let daemon =
        DaemonProcess::spawn_with(&host.host, &config, &[], &["--no-guard"], std::process::Stdio::null());
    wait_healthy(&host.host, Duration::from_secs(10));
    let baseline = daemon.descriptors();

    // 100 clients that never finish their request's headers (slowloris):
    // more than the server's 32 connections, fewer than its listen backlog.
    let mut clients: Vec<std::net::TcpStream> = host
        .host
        .run(|| {
            (0..100)
                .map(|_| {
                    let mut stream = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT)).unwrap();
                    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: mhr\r\n").unwrap();
                    stream
                })
                .collect()
        })
        .unwrap();
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let held = daemon.descriptors();
    assert!(held <= baseline + 32 + 2, "connections are capped: {held} descriptors, {baseline} before");

    // Reconciliation goes on under that load.
    host.host.ip(["addr", "add", "10.150.0.50/24", "dev", "up0"]).unwrap();
    eventually("the new address's prefix gets its rule", Duration::from_secs(3), || {
        let rules = host.host.ip(["rule"]).unwrap_or_default();
        if rules.contains("from 10.150.0.0/24 lookup 7100") { Ok(()) } else { Err(rules) }
    });

    // The server hangs up on the half-sent requests after the header timeout.
    let first = &mut clients[0];
    first.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buffer = [0u8; 64];
    let read = first.read(&mut buffer);
    assert!(matches!(read, Ok(0)) || read.is_err(), "closed, not answered: {read:?}");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(8)).contains(&waited),
        "closed after the header timeout (5 s), not {waited:?}"
    );
    drop(clients);
    eventually("/metrics answers again", Duration::from_secs(15), || {
        match http_get(&host.host, METRICS_PORT, "/metrics") {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // An idle keep-alive connection is closed too.
    let idle_closed = host
        .host
        .run(|| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT)).unwrap();
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: mhr\r\n\r\n").unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
            let started = std::time::Instant::now();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            (started.elapsed(), String::from_utf8_lossy(&response).into_owned())
        })
        .unwrap();
    assert!(idle_closed.1.starts_with("HTTP/1.1 200"), "{}", idle_closed.1);
    assert!(idle_closed.0 < Duration::from_secs(8), "idle keep-alive closed after {:?}", idle_closed.0);
}

#[test]
fn a_foreign_rule_on_one_uplinks_priority_blocks_that_uplink_only() {
    require_root();
    let host = ManyUplinks::start(2, 1, 0).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let _daemon = DaemonThread::start(&host.host, &config, quiet_daemon());
    let rules = || host.host.ip(["rule"]).unwrap_or_default();
    eventually("the daemon applied", Duration::from_secs(10), || {
        if rules().contains("from 10.100.1.0/24 lookup 7101") { Ok(()) } else { Err(rules()) }
    });

    // Someone else's rule at up1's "from" priority (7103).
    host.host.ip(["rule", "add", "priority", "7103", "lookup", "100"]).unwrap();
    host.host.ip(["addr", "add", "10.150.0.50/24", "dev", "up0"]).unwrap();
    eventually("up0 goes on: its new prefix gets its rule", Duration::from_secs(5), || {
        if rules().contains("from 10.150.0.0/24 lookup 7100") { Ok(()) } else { Err(rules()) }
    });
    let now = rules();
    assert!(now.contains("7103:\tfrom all lookup 100"), "the foreign rule stays: {now}");
    assert!(now.contains("from 10.100.1.0/24 lookup 7101"), "up1's rules stay as they were: {now}");
    let body = http_get(&host.host, METRICS_PORT, "/metrics").unwrap().1;
    assert_eq!(sample(&body, "mhr_uplink_blocked", "uplink=\"up1\""), Some(1.0), "{body}");
    assert_eq!(sample(&body, "mhr_uplink_blocked", "uplink=\"up0\""), Some(0.0), "{body}");
    assert_eq!(sample(&body, "mhr_reconciles_total", "result=\"error\""), Some(0.0), "{body}");
    let status = mhr(&host.host, &config, &["status"]);
    assert!(
        status.output.contains("BLOCKED, left as it is: priority 7103 (for `up1`) is already used by a rule"),
        "{}",
        status.output
    );

    host.host.ip(["rule", "del", "priority", "7103", "lookup", "100"]).unwrap();
    eventually("up1 is managed again", Duration::from_secs(5), || {
        let body = http_get(&host.host, METRICS_PORT, "/metrics").map(|r| r.1).unwrap_or_default();
        match sample(&body, "mhr_uplink_blocked", "uplink=\"up1\"") {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn what_apply_could_not_finish_is_refused_before_any_change() {
    require_root();
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let good = host.mhr_config(dir.path());
    let before = snapshot(&host.host);
    let refused = |text: &str, expected: &str| {
        let config = write_config(&dir, text);
        let run = mhr(&host.host, &config, &["apply"]);
        assert!(run.error().contains(expected), "expected `{expected}` in: {run:?}");
        assert_eq!(snapshot(&host.host), before, "nothing changed for `{expected}`");
    };

    // A pin_dir that is not on a bpffs: refused, and no directory left there.
    let not_bpffs = dir.path().join("pins");
    let pin_line = format!("pin_dir = \"{}\"", dir.pin_dir().display());
    refused(&good.replace(&pin_line, &format!("pin_dir = \"{}\"", not_bpffs.display())), "is not on a bpffs");
    assert!(!not_bpffs.exists(), "no directory created");

    // A read-only rt_tables_dir.
    let tables = dir.path().join("rt_tables.d");
    std::fs::create_dir_all(&tables).unwrap();
    {
        let _read_only = Mount::read_only_tmpfs(&tables);
        refused(&good, "rt_tables.d is not writable");
    }

    // More IPv4 addresses than the guard's owner map holds (4096).
    host.host
        .ip_batch(
            &(0..4100)
                .map(|i| format!("addr add 10.200.{}.{}/32 dev up1\n", i / 250, i % 250 + 1))
                .collect::<String>(),
        )
        .unwrap();
    let before_addresses = snapshot(&host.host);
    let config = write_config(&dir, &good);
    let run = mhr(&host.host, &config, &["apply"]);
    assert!(
        run.error().contains("4102 IPv4 addresses on the uplinks; the guard holds at most 4096"),
        "{run:?}"
    );
    assert_eq!(snapshot(&host.host), before_addresses);
    // Routing alone has no such limit.
    assert!(mhr(&host.host, &config, &["apply", "--no-guard"]).succeeded());
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn corrupt_state_files_are_set_aside_and_apply_status_and_down_still_work() {
    require_root();
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let before = snapshot(&host.host);
    assert!(mhr(&host.host, &config, &["apply", "--no-guard"]).succeeded());
    let state = dir.path().join("state");
    for file in ["moved-routes.json", "gateways.json", "health.json"] {
        std::fs::write(state.join(file), b"{ not json \xff").unwrap();
    }
    std::fs::write(dir.path().join("rt_tables.d/mhr.conf"), b"7100 up0 extra\n\xff").unwrap();
    let status = mhr(&host.host, &config, &["status"]);
    assert!(status.result.is_ok(), "{status:?}");
    assert!(status.output.contains("in sync"), "{}", status.output);
    let again = mhr(&host.host, &config, &["apply", "--no-guard"]);
    assert!(again.succeeded(), "{again:?}");
    let down = mhr(&host.host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    assert_eq!(snapshot(&host.host), before, "down restored the host");
    let aside: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".corrupt-"))
        .collect();
    assert!(aside.iter().any(|n| n.starts_with("gateways.json.corrupt-")), "set aside: {aside:?}");
    let tables: Vec<String> = std::fs::read_dir(dir.path().join("rt_tables.d"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tables.iter().any(|n| n.starts_with("mhr.conf.corrupt-")), "set aside: {tables:?}");
}

#[test]
fn in_enforce_mode_a_new_address_is_learned_before_the_debounced_reconcile() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = enforce_config(&dir);
    // A long debounce: only the guard's fast path can learn the address in time.
    let options = DaemonOptions {
        debounce: Duration::from_secs(3),
        max_delay: Duration::from_secs(3),
        ..guard_daemon()
    };
    let _daemon = DaemonThread::start(&host.host, &config, options);
    wait_healthy(&host.host, Duration::from_secs(10));
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    let renumbered = Ipv4Addr::new(10, 99, 50, 20);
    let frame = udp4_frame(own, peer, renumbered, host.uplinks[0].peer_address, 64);
    assert_eq!(send_frames(&host.host, "ens3", &frame, 1).unwrap(), 1, "not yet an address of ens3: dropped");

    host.host.ip(["addr", "add", "10.99.50.20/24", "dev", "ens3"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        send_frames(&host.host, "ens3", &frame, 5).unwrap(),
        0,
        "the new address passes long before the reconcile (3 s debounce)"
    );
    let rules = host.host.ip(["rule"]).unwrap();
    assert!(!rules.contains("from 10.99.50.0/24"), "routing waits for the reconcile: {rules}");
}
