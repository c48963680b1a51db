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
use mhr_userspace::guard::tc::interface_index;

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
    let pin =
        dir.pin_dir().join(format!("v{}/links/ens4@{}", mhr_common::guard::MAP_LAYOUT_VERSION, new_index));
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
    let links =
        std::fs::read_dir(dir.pin_dir().join(format!("v{}/links", mhr_common::guard::MAP_LAYOUT_VERSION)))
            .map(|d| d.count())
            .unwrap_or(0);
    assert_eq!(links, 0, "no guard link left pinned:\n{log}");
    assert!(!dir.pin_dir().exists(), "the emptied pin directories are removed (rmdir):\n{log}");
    assert!(!log.contains("Operation not permitted"), "{log}");
}

/// `GET /metrics` inside `netns` on 127.0.0.1:`port`, over TLS trusting
/// `root` when given, with basic-auth `login` when given: the status code.
fn scrape(
    netns: &Netns,
    port: u16,
    root: Option<rustls::pki_types::CertificateDer<'static>>,
    login: Option<(&str, &str)>,
) -> Option<u16> {
    use base64::Engine as _;
    use std::io::{Read as _, Write as _};
    let authorization = login.map_or(String::new(), |(user, password)| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {encoded}\r\n")
    });
    let request = format!("GET /metrics HTTP/1.0\r\nHost: localhost\r\n{authorization}\r\n");
    netns
        .run(move || {
            let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut answer = String::new();
            match root {
                None => {
                    let mut tcp = tcp;
                    tcp.write_all(request.as_bytes()).ok()?;
                    tcp.read_to_string(&mut answer).ok()?;
                }
                Some(root) => {
                    let mut roots = rustls::RootCertStore::empty();
                    roots.add(root).ok()?;
                    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                    let config = rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .ok()?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                    let name = "localhost".try_into().ok()?;
                    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
                    let mut stream = rustls::StreamOwned::new(connection, tcp);
                    stream.write_all(request.as_bytes()).ok()?;
                    let _ = stream.read_to_string(&mut answer);
                }
            }
            answer.split_whitespace().nth(1)?.parse().ok()
        })
        .ok()
        .flatten()
}

/// TLS and basic auth work in the sandbox: bcrypt runs on a thread the
/// daemon starts after the drop, which inherits the reduced capabilities.
#[test]
fn a_sandboxed_daemon_serves_metrics_over_tls_to_configured_users_only() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("sandbox-tls").unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let hash = bcrypt::hash_with_result("s3cret", 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    let text = format!(
        "{}\n[metrics]\ntls_cert = \"{}\"\ntls_key = \"{}\"\nbasic_auth_users = {{ prometheus = \"{hash}\" }}\n",
        mhr_config(dir.path()),
        cert.display(),
        key.display()
    );
    let config = write_config(&dir, &text);
    let daemon = DaemonProcess::spawn(&lab.host, &config);
    let pid = daemon.0.id();
    wait_sandboxed(pid);
    let root = || Some(certified.cert.der().clone());
    eventually("metrics over TLS", CONVERGE, || {
        match scrape(&lab.host, METRICS_PORT, root(), Some(("prometheus", "s3cret"))) {
            Some(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(scrape(&lab.host, METRICS_PORT, root(), None), Some(401));
    assert_eq!(scrape(&lab.host, METRICS_PORT, root(), Some(("prometheus", "wrong"))), Some(401));
    assert_eq!(scrape(&lab.host, METRICS_PORT, None, Some(("prometheus", "s3cret"))), None, "no clear text");
    let masks = capability_mask(pid, "CapEff");
    assert!(masks.iter().all(|&mask| mask == KEPT_MASK), "every thread, bcrypt's too: {masks:x?}");
}

/// Strict modes: a config in a world-writable directory is refused naming
/// the directory and the fix, unless the directory is a read-only mount
/// (a Kubernetes pod's config volume, 0777 but mounted `readOnly`).
#[test]
fn a_config_others_can_write_is_refused_unless_its_mount_is_read_only() {
    require_root();
    let dir = TempDir::new("strict").unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let config = open.join("mhr.toml");
    std::fs::write(&config, "[[uplink]]\ninterface = \"nonexistent0\"\nprimary = true\n").unwrap();
    let check = |script: &str| {
        let output = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c", script])
            .env("DIR", &open)
            .env("MHR", common::daemon::mhr_binary())
            .output()
            .expect("unshare runs");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let refused = check("\"$MHR\" --config \"$DIR/mhr.toml\" check");
    let real = std::fs::canonicalize(&open).unwrap();
    assert!(
        refused.contains(&format!("{} is writable by its group and by others", real.display())),
        "{refused}"
    );
    assert!(refused.contains(&format!("chmod go-w {}", real.display())), "{refused}");
    let read_only = check(
        "mount --bind \"$DIR\" \"$DIR\" && mount -o remount,bind,ro \"$DIR\" && \"$MHR\" --config \"$DIR/mhr.toml\" check",
    );
    assert!(!read_only.contains("writable by"), "{read_only}");
    assert!(read_only.contains("nonexistent0"), "the config was read and validated: {read_only}");
}

/// As systemd starts it (deploy/systemd/mhr.service): uid 0 with a
/// bounding set of the unit's capabilities and no CAP_SETPCAP. The daemon
/// keeps those of them it uses and does its job.
#[test]
fn started_with_the_units_capabilities_the_daemon_drops_what_it_does_not_use() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("sandbox-unit").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.host.name()))
        .args(["setpriv", "--bounding-set=-all,+net_admin,+bpf,+perfmon,+net_raw", "--"])
        .arg(common::daemon::mhr_binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mhr run starts");
    let daemon = DaemonProcess(child);
    let pid = daemon.0.id();
    wait_sandboxed(pid);
    eventually("start-up", CONVERGE, || in_sync(&lab.host, &config));
    assert!(capability_mask(pid, "CapEff").iter().all(|&mask| mask == KEPT_MASK));
    // CAP_PERFMON stays in the bounding set (no CAP_SETPCAP), inert under no-new-privs.
    let bounding = capability_mask(pid, "CapBnd");
    assert!(bounding.iter().all(|&mask| mask == KEPT_MASK | (1 << 38)), "{bounding:x?}");
    lab.host.ip(["rule", "del", "from", "10.0.4.0/24", "lookup", "7101", "priority", "7103"]).unwrap();
    eventually("a deleted rule put back", CONVERGE, || in_sync(&lab.host, &config));
}
