//! Pin trees of other layout versions (issue 24, item 4): an older mhr's
//! guard left under `PIN_DIR/v0`, still attached in enforce mode, is
//! detached and removed by `apply` and `down`, whether it runs behind a
//! TCX link (held by a process too) or a clsact filter; and
//! `down --purge-pins` leaves no pin of any version.

mod common;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;
use common::{
    bpf::pin_array,
    mhr,
    pins::{config, lines_naming},
};
use mhr_common::guard::UPLINKS_MAP;
use mhr_tests::{
    TempDir,
    quiet_host::QuietHost,
    raw::{mac_of, send_frames, udp4_frame},
    require_root,
};
use mhr_userspace::{
    guard::tc::{AttachMode, interface_index},
    guard::{Guard, GuardUplink},
};

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
                enforcement: mhr_userspace::guard::Enforcement::DropSpoofed,
                l3: false,
                steer_to: Default::default(),
            };
            let mut guard = Guard::load(&old_dir).unwrap();
            guard.configure(std::slice::from_ref(&uplink)).unwrap();
            guard.attach(&[uplink], mode).unwrap();
        })
        .unwrap();
    std::fs::create_dir_all(&pin_dir).unwrap();
    std::fs::rename(old.join(format!("v{}", mhr_common::guard::MAP_LAYOUT_VERSION)), pin_dir.join("v0"))
        .unwrap();
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
