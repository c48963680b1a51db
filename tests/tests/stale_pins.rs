//! Pins are checked before they are trusted (issue 24, item 4): a map
//! another mhr pinned with another shape is named in one line and
//! replaced; a pin tree of another layout version, with its program still
//! attached, is detached and removed by `apply` and `down`; and
//! `down --purge-pins` leaves no pin behind.

mod common;

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aya::{maps::MapInfo, programs::links::PinnedLink};
use common::{
    daemon::{DaemonProcess, DaemonThread, METRICS_PORT, eventually, sample},
    mhr, write_config,
};
use mhr_common::{
    MAX_IFINDEX,
    guard::{UPLINKS_MAP, UplinkGuard},
};
use mhr_tests::{
    TempDir,
    mount::Mount,
    probe::http_get,
    quiet_host::QuietHost,
    raw::{mac_of, send_frames, udp4_frame},
    require_root,
    seed_lab::routing_section,
};
use mhr_userspace::{
    daemon::DaemonOptions,
    guard::{Guard, GuardUplink},
    tc::{AttachMode, interface_index},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const UPLINK_VALUE: u32 = size_of::<UplinkGuard>() as u32;

/// Creates an array map of the given shape with bpf(2) and pins it at
/// `path`; returns its fd.
fn pin_array(path: &Path, value_size: u32, max_entries: u32) -> OwnedFd {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut attr = [0u32; 12];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, value_size, max_entries]);
    // SAFETY: a zeroed bpf_attr for BPF_MAP_CREATE, 48 bytes.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), 48) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    pin(&fd, path);
    fd
}

/// Pins the object behind `fd` at `path`.
fn pin(fd: &OwnedFd, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut attr = [name.as_ptr() as u64, fd.as_raw_fd() as u64];
    // SAFETY: a bpf_attr for BPF_OBJ_PIN: the path and the fd.
    let pinned = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), 16) };
    assert_eq!(pinned, 0, "BPF_OBJ_PIN {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Loads a tiny classifier that refers to `map` (so the kernel counts it
/// as the map's user) and attaches it to `interface`'s TCX egress with an
/// unpinned link, as another tool would. Returns the link's fd.
fn attach_user_of(map: &OwnedFd, interface: &str) -> OwnedFd {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_TCX_EGRESS: u32 = 47;
    let insn = |code: u8, regs: u8, imm: i32| {
        u64::from(code) | (u64::from(regs) << 8) | (u64::from(imm as u32) << 32)
    };
    // r1 = map (BPF_PSEUDO_MAP_FD), r0 = -1 (TCX_NEXT), exit.
    let program = [insn(0x18, 0x11, map.as_raw_fd()), 0, insn(0xb7, 0, -1), insn(0x95, 0, 0)];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    attr[0] = u64::from(BPF_PROG_TYPE_SCHED_CLS) | ((program.len() as u64) << 32);
    attr[1] = program.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // SAFETY: a zero-padded bpf_attr for BPF_PROG_LOAD.
    let prog = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), 128) };
    assert!(prog >= 0, "BPF_PROG_LOAD: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let mut attr = [0u64; 8];
    attr[0] = prog.as_raw_fd() as u64 | (u64::from(interface_index(interface).unwrap()) << 32);
    attr[1] = u64::from(BPF_TCX_EGRESS);
    // SAFETY: a zero-padded bpf_attr for BPF_LINK_CREATE.
    let link = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_mut_ptr(), 64) };
    assert!(link >= 0, "BPF_LINK_CREATE: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd.
    unsafe { OwnedFd::from_raw_fd(link as i32) }
}

fn uplinks_pin(dir: &TempDir) -> PathBuf {
    dir.pin_dir().join("v1/maps").join(UPLINKS_MAP)
}

fn config(dir: &TempDir, mode: &str) -> PathBuf {
    let text = format!(
        "mode = \"{mode}\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

fn lines_naming<'a>(output: &'a str, what: &str) -> Vec<&'a str> {
    output.lines().filter(|line| line.contains(what)).collect()
}

#[test]
fn a_pinned_map_of_the_wrong_value_size_is_named_in_one_line_and_replaced_by_apply() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "monitor");
    let _map = pin_array(&uplinks_pin(&dir), UPLINK_VALUE - 16, MAX_IFINDEX);

    // status names it too (and does not fail reading a map it cannot read).
    let status = mhr(&host.host, &config, &["status"]);
    assert!(status.result.is_ok(), "{status:?}");
    let named = lines_naming(&status.output, UPLINKS_MAP);
    assert!(
        named.len() == 1 && named[0].ends_with("`mhr apply` or `mhr run` replaces it"),
        "{}",
        status.output
    );

    let apply = mhr(&host.host, &config, &["apply"]);
    assert!(apply.succeeded(), "{apply:?}");
    let expected = format!(
        "pinned map {UPLINKS_MAP} under {} has value size {}, expected {UPLINK_VALUE}: another mhr's",
        dir.pin_dir().join("v1/maps").display(),
        UPLINK_VALUE - 16
    );
    let named = lines_naming(&apply.output, UPLINKS_MAP);
    assert_eq!(named.len(), 1, "one line names the pin:\n{}", apply.output);
    assert!(named[0].contains(&expected), "{}", apply.output);
    for uplink in ["ens3", "ens4"] {
        assert!(apply.output.contains(&format!("guard: {uplink} attached")), "{}", apply.output);
    }
    let info = MapInfo::from_pin(uplinks_pin(&dir)).unwrap();
    assert_eq!((info.value_size(), info.max_entries()), (UPLINK_VALUE, MAX_IFINDEX), "a new map is pinned");
    let again = mhr(&host.host, &config, &["apply"]);
    assert!(lines_naming(&again.output, UPLINKS_MAP).is_empty(), "the new pin is trusted: {}", again.output);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn a_pinned_map_of_the_wrong_capacity_is_named_by_run_which_then_guards_every_uplink() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "monitor");
    let _map = pin_array(&uplinks_pin(&dir), UPLINK_VALUE, 1);

    let log = dir.path().join("run.log");
    let _daemon =
        DaemonProcess::spawn_with(&host.host, &config, &[], &[], Stdio::from(File::create(&log).unwrap()));
    eventually("the guard runs on both uplinks", Duration::from_secs(10), || {
        let metrics =
            http_get(&host.host, METRICS_PORT, "/metrics").map(|(_, body)| body).unwrap_or_default();
        let attached = ["ens3", "ens4"]
            .map(|uplink| sample(&metrics, "mhr_guard_attached", &format!("uplink=\"{uplink}\"")));
        if attached == [Some(1.0), Some(1.0)] { Ok(()) } else { Err(format!("{attached:?}")) }
    });
    let output = std::fs::read_to_string(&log).unwrap();
    let named = lines_naming(&output, UPLINKS_MAP);
    assert_eq!(named.len(), 1, "one line names the pin:\n{output}");
    assert!(named[0].contains(&format!("has capacity (max_entries) 1, expected {MAX_IFINDEX}")), "{output}");
    let info = MapInfo::from_pin(uplinks_pin(&dir)).unwrap();
    assert_eq!(info.max_entries(), MAX_IFINDEX, "a new map is pinned");
}

const NEW_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 77);

/// What an older mhr leaves: its guard, in enforce mode, attached to ens3
/// through a link pinned under `PIN_DIR/v0`, knowing only ens3's first
/// address. Then ens3 gets a new address. Returns a handle on the link, as
/// an older `mhr run` still holds it (unpinning alone leaves it attached).
fn plant_old_guard(host: &QuietHost, dir: &TempDir) -> PinnedLink {
    let held = plant_old_guard_with(host, dir, AttachMode::Tcx);
    held.expect("a TCX link")
}

/// [`plant_old_guard`] attached by `mode`; `None` for clsact (no link).
fn plant_old_guard_with(host: &QuietHost, dir: &TempDir, mode: AttachMode) -> Option<PinnedLink> {
    let old = PathBuf::from(format!("{}-old", dir.pin_dir().display()));
    let pin_dir = dir.pin_dir();
    let address = host.uplinks[0].address;
    let old_dir = old.clone();
    host.host
        .run(move || {
            let uplink = GuardUplink {
                interface: "ens3".into(),
                ifindex: interface_index("ens3").unwrap(),
                addresses: vec![address.into()],
                allow: Vec::new(),
                enforce: true,
                enforce_asymmetric: false,
                l3: false,
            };
            let mut guard = Guard::load(&old_dir).unwrap();
            guard.configure(std::slice::from_ref(&uplink)).unwrap();
            guard.attach(&[uplink], mode).unwrap();
        })
        .unwrap();
    std::fs::create_dir_all(&pin_dir).unwrap();
    std::fs::rename(old.join("v1"), pin_dir.join("v0")).unwrap();
    std::fs::remove_dir(&old).unwrap();
    host.host.ip(["addr", "add", &format!("{NEW_ADDRESS}/24"), "dev", "ens3"]).unwrap();
    let links = std::fs::read_dir(pin_dir.join("v0/links")).unwrap().flatten().map(|e| e.path());
    let links: Vec<PathBuf> = links.collect();
    assert_eq!(links.len(), usize::from(mode != AttachMode::Clsact), "{links:?}");
    links.first().map(|link| PinnedLink::from_pin(link).unwrap())
}

/// How many of 5 frames from ens3's new address the stack dropped.
fn dropped_from_new_address(host: &QuietHost) -> usize {
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    let frame = udp4_frame(own, peer, NEW_ADDRESS, host.uplinks[0].peer_address, 64);
    send_frames(&host.host, "ens3", &frame, 5).unwrap()
}

#[test]
fn apply_detaches_and_removes_another_layout_versions_guard_and_a_new_address_flows() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "enforce");
    let _held = plant_old_guard(&host, &dir);
    assert_eq!(dropped_from_new_address(&host), 5, "the old guard drops the new address's packets");
    let status = mhr(&host.host, &config, &["status"]);
    let v0 = format!("pins of another layout version under {}", dir.pin_dir().join("v0").display());
    assert!(status.output.contains(&v0), "{}", status.output);

    let apply = mhr(&host.host, &config, &["apply"]);
    assert!(apply.succeeded(), "{apply:?}");
    let detached = lines_naming(&apply.output, "another layout version's guard: detached link");
    assert!(detached.len() == 1 && detached[0].ends_with("on ens3"), "{}", apply.output);
    let removed = format!("another layout version's guard: removed {}", dir.pin_dir().join("v0").display());
    assert!(apply.output.contains(&removed), "{}", apply.output);
    assert!(!dir.pin_dir().join("v0").exists());
    assert_eq!(dropped_from_new_address(&host), 0, "only the new guard runs, and it knows the address");
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn down_detaches_and_removes_another_layout_versions_guard() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "enforce");
    let _held = plant_old_guard(&host, &dir);
    assert_eq!(dropped_from_new_address(&host), 5, "the old guard drops the new address's packets");

    let down = mhr(&host.host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    assert!(down.output.contains("guard: another layout version's guard: detached link"), "{}", down.output);
    assert!(!dir.pin_dir().join("v0").exists());
    assert_eq!(dropped_from_new_address(&host), 0, "no guard runs after down");
}

/// Every file under `dir`.
fn pins_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|entry| if entry.path().is_dir() { pins_under(&entry.path()) } else { vec![entry.path()] })
        .collect()
}

#[test]
fn down_purge_pins_leaves_no_pin_of_any_version_and_no_guard() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "enforce");
    let _held = plant_old_guard(&host, &dir);
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    // Left by hand or by a build with another layout scheme.
    let _v9 = pin_array(&dir.pin_dir().join("v9/maps").join(UPLINKS_MAP), 8, 1);
    let _scratch = pin_array(&dir.pin_dir().join("scratch").join(UPLINKS_MAP), 8, 1);
    assert!(pins_under(&dir.pin_dir()).len() > 3);

    let down = mhr(&host.host, &config, &["down", "--purge-pins"]);
    assert!(down.succeeded(), "{down:?}");
    assert!(pins_under(&dir.pin_dir()).is_empty(), "{:?}", pins_under(&dir.pin_dir()));
    assert!(!dir.pin_dir().exists(), "{}", down.output);
    let runs = host.host.run(|| ["ens3", "ens4"].map(Guard::kernel_runs_any_guard)).unwrap();
    assert_eq!(runs, [Some(false), Some(false)]);
    assert_eq!(dropped_from_new_address(&host), 0);
}

#[test]
fn a_guard_that_cannot_load_leaves_routing_running_says_why_and_attaches_once_it_can() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "monitor");
    // pin_dir is no bpffs: the guard cannot load.
    std::fs::create_dir_all(dir.pin_dir()).unwrap();
    let tmpfs = Mount::tmpfs(&dir.pin_dir());
    let options = DaemonOptions { resync: Duration::from_secs(3600), ..DaemonOptions::default() };
    let mut daemon = DaemonThread::start(&host.host, &config, options);
    let metrics = || http_get(&host.host, METRICS_PORT, "/metrics").map(|(_, body)| body).unwrap_or_default();
    eventually(
        "routing is applied and /healthz says why the guard is missing",
        Duration::from_secs(10),
        || {
            let rules = host.host.ip(["rule"]).unwrap_or_default();
            match http_get(&host.host, METRICS_PORT, "/healthz") {
                Some((503, body))
                    if body.contains("the source guard is not running")
                        && body.contains("bpffs")
                        && rules.contains("lookup 7101") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?} {rules}")),
            }
        },
    );
    eventually("failures are counted by reason", Duration::from_secs(5), || {
        match sample(&metrics(), "mhr_guard_failures_total", "reason=\"bpffs\"") {
            Some(count) if count >= 2.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // Past the old 30 s deadline's scaled-down stand-in: no exit.
    assert_eq!(daemon.exited_within(Duration::from_secs(4)), None, "the daemon stays up");
    let failures = sample(&metrics(), "mhr_guard_failures_total", "reason=\"bpffs\"").unwrap();
    assert!(failures <= 5.0, "retried with backoff, not every second: {failures} in ~6 s");

    drop(tmpfs);
    eventually("the guard loads and attaches once it can", Duration::from_secs(70), || {
        let body = metrics();
        let attached = ["ens3", "ens4"]
            .map(|uplink| sample(&body, "mhr_guard_attached", &format!("uplink=\"{uplink}\"")));
        match (attached, http_get(&host.host, METRICS_PORT, "/healthz")) {
            ([Some(1.0), Some(1.0)], Some((200, _))) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    daemon.stop();
}

#[test]
fn a_stale_pin_another_tools_link_still_uses_is_refused_by_name_until_purged() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "monitor");
    let map = pin_array(&uplinks_pin(&dir), UPLINK_VALUE - 16, MAX_IFINDEX);
    let link = host.host.run(|| attach_user_of(&map, "ens3")).unwrap();

    let apply = mhr(&host.host, &config, &["apply"]);
    let error = apply.error();
    let expected = format!(
        "pinned map {UPLINKS_MAP} under {} has value size {}, expected {UPLINK_VALUE}: another mhr's, still used by link ",
        dir.pin_dir().join("v1/maps").display(),
        UPLINK_VALUE - 16
    );
    assert!(
        error.contains(&expected) && error.contains("on ens3; `mhr down --purge-pins` or remove it"),
        "{apply:?}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
    assert_eq!(
        MapInfo::from_pin(uplinks_pin(&dir)).unwrap().value_size(),
        UPLINK_VALUE - 16,
        "left in place"
    );

    let purge = mhr(&host.host, &config, &["down", "--purge-pins"]);
    assert!(purge.succeeded() && purge.output.contains("detached link"), "{purge:?}");
    let apply = mhr(&host.host, &config, &["apply"]);
    assert!(apply.succeeded() && lines_naming(&apply.output, UPLINKS_MAP).is_empty(), "{apply:?}");
    let programs = host
        .host
        .run(|| {
            aya::programs::SchedClassifier::query_tcx("ens3", aya::programs::TcAttachType::Egress)
                .unwrap()
                .1
                .len()
        })
        .unwrap();
    assert_eq!(programs, 1, "only mhr's guard runs on ens3");
    drop(link);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn a_stale_pin_only_mhrs_own_pinned_link_uses_is_replaced_and_that_link_runs_the_new_guard() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "monitor");
    let map = pin_array(&uplinks_pin(&dir), UPLINK_VALUE - 16, MAX_IFINDEX);
    // As a build with another map layout but the same version left it.
    let ifindex = host.host.run(|| interface_index("ens3").unwrap()).unwrap();
    let link_pin = dir.pin_dir().join(format!("v1/links/ens3@{ifindex}"));
    host.host.run(|| pin(&attach_user_of(&map, "ens3"), &link_pin)).unwrap();

    let apply = mhr(&host.host, &config, &["apply"]);
    assert!(apply.succeeded(), "{apply:?}");
    assert_eq!(lines_naming(&apply.output, UPLINKS_MAP).len(), 1, "{}", apply.output);
    assert!(apply.output.contains("guard: ens3 program replaced"), "{}", apply.output);
    let runs = host.host.run(|| Guard::kernel_runs_any_guard("ens3")).unwrap();
    assert_eq!(runs, Some(true));
    let programs = host
        .host
        .run(|| {
            aya::programs::SchedClassifier::query_tcx("ens3", aya::programs::TcAttachType::Egress)
                .unwrap()
                .1
                .len()
        })
        .unwrap();
    assert_eq!(programs, 1, "the old program was replaced in its link, not joined");
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn apply_removes_another_layout_versions_clsact_filter() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("stale-pins").unwrap();
    let config = config(&dir, "enforce");
    assert!(plant_old_guard_with(&host, &dir, AttachMode::Clsact).is_none());
    assert_eq!(dropped_from_new_address(&host), 5, "the old guard's filter drops the new address's packets");

    let apply = mhr(&host.host, &config, &["apply"]);
    assert!(apply.succeeded(), "{apply:?}");
    assert!(
        apply.output.contains("another layout version's guard: removed the clsact filter of program"),
        "{}",
        apply.output
    );
    assert_eq!(dropped_from_new_address(&host), 0);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}
