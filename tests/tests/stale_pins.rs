//! Pins are checked before they are trusted (issue 24, item 4): a map
//! another mhr pinned with another shape is named in one line and
//! replaced, or refused while another tool's link still uses it; and a
//! guard that cannot load leaves `mhr run` routing and retrying.

mod common;

use std::{fs::File, process::Stdio, time::Duration};

use aya::maps::MapInfo;
use common::{
    bpf::{attach_user_of, pin, pin_array},
    daemon::{DaemonProcess, DaemonThread, METRICS_PORT, eventually, sample},
    mhr,
    pins::{UPLINK_VALUE, config, lines_naming, uplinks_pin},
};
use mhr_common::{MAX_IFINDEX, guard::UPLINKS_MAP};
use mhr_tests::{TempDir, mount::Mount, probe::http_get, quiet_host::QuietHost, require_root};
use mhr_userspace::{daemon::DaemonOptions, guard::Guard, guard::tc::interface_index};

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
        dir.pin_dir().join(format!("v{}/maps", mhr_common::guard::MAP_LAYOUT_VERSION)).display(),
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
        dir.pin_dir().join(format!("v{}/maps", mhr_common::guard::MAP_LAYOUT_VERSION)).display(),
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
    let link_pin =
        dir.pin_dir().join(format!("v{}/links/ens3@{}", mhr_common::guard::MAP_LAYOUT_VERSION, ifindex));
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
    let status = mhr(&host.host, &config, &["status", "--brief"]);
    assert!(
        status.output.contains("guard: NOT running in the daemon (retried with backoff): ")
            && status.output.contains("bpffs"),
        "status says why: {}",
        status.output
    );
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
