//! The clsact backend (`[guard] attach = "clsact"`), which kernels
//! without TCX (< 6.6) use, forced and tested on this kernel: it counts and
//! drops like TCX, a new program replaces the old one in place, `status`
//! reports it, and the daemon leaves a working filter alone but puts back
//! one that was removed.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{
    daemon::{DaemonThread, METRICS_PORT, eventually, sample, wait_healthy},
    mhr, write_config,
};
use mhr_common::guard::{PacketFamily, Verdict};
use mhr_tests::{
    TempDir,
    probe::http_get,
    quiet_host::QuietHost,
    raw::{mac_of, send_frames, udp4_frame},
    require_root,
    seed_lab::routing_section,
};
use mhr_userspace::{
    daemon::DaemonOptions,
    guard::tc::interface_index,
    guard::{
        GuardMaps,
        clsact::{self, Filter},
    },
};

const FOREIGN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);

fn clsact_config(dir: &TempDir) -> std::path::PathBuf {
    let text = format!(
        "mode = \"enforce\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path()).replace("[guard]\n", "[guard]\nattach = \"clsact\"\n")
    );
    write_config(dir, &text)
}

fn guard_filters(host: &QuietHost, interface: &str) -> Vec<Filter> {
    let interface = interface.to_owned();
    host.host.run(move || clsact::guard_filters(interface_index(&interface).unwrap()).unwrap()).unwrap()
}

/// The one guard filter on `interface`, at mhr's priority and handle.
fn the_filter(host: &QuietHost, interface: &str) -> Filter {
    let filters = guard_filters(host, interface);
    assert_eq!(filters.len(), 1, "one guard filter on {interface}: {filters:?}");
    let filter = filters[0].clone();
    assert_eq!((filter.priority, filter.handle), (clsact::PRIORITY, clsact::HANDLE));
    filter
}

fn spoofed_frame(host: &QuietHost) -> Vec<u8> {
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    udp4_frame(own, peer, FOREIGN, host.uplinks[0].peer_address, 32)
}

#[test]
fn a_clsact_guard_counts_and_drops_is_replaced_in_place_and_shows_in_status() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("clsact").unwrap();
    let config = clsact_config(&dir);

    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    assert!(applied.output.contains("guard: ens3 attached via clsact"), "{}", applied.output);
    let first = the_filter(&host, "ens3");
    let tcx = host
        .host
        .run(|| aya::programs::SchedClassifier::query_tcx("ens3", aya::programs::TcAttachType::Egress))
        .unwrap();
    assert!(tcx.map(|(_, programs)| programs.is_empty()).unwrap_or(true), "no TCX link besides");

    host.send_udp(0, 3, 32).unwrap();
    assert_eq!(send_frames(&host.host, "ens3", &spoofed_frame(&host), 2).unwrap(), 2, "spoofed dropped");
    let counts = || {
        let maps = GuardMaps::from_pins(&dir.pin_dir()).unwrap().expect("guard installed");
        maps.verdict_counts(maps.slot_of("ens3").unwrap().unwrap()).unwrap()
    };
    assert_eq!(counts().get(PacketFamily::Ipv4, Verdict::Ok).packets, 3);
    assert_eq!(counts().get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 2);

    let status = mhr(&host.host, &config, &["status"]);
    assert!(status.output.contains("guard on ens3 (attached via clsact, enforce mode)"), "{}", status.output);
    let json = mhr(&host.host, &config, &["status", "--json"]);
    assert!(json.output.contains("\"attachment\": \"clsact\""), "{}", json.output);

    // A second apply loads a new program and swaps it into the same filter.
    let again = mhr(&host.host, &config, &["apply"]);
    assert!(again.succeeded(), "{again:?}");
    assert!(again.output.contains("guard: ens3 program replaced, counters kept"), "{}", again.output);
    let second = the_filter(&host, "ens3");
    assert_ne!(second.program_id, first.program_id, "the new program runs");
    host.send_udp(0, 2, 32).unwrap();
    assert_eq!(counts().get(PacketFamily::Ipv4, Verdict::Ok).packets, 5, "counters kept across the swap");

    assert!(mhr(&host.host, &config, &["down"]).succeeded());
    assert!(guard_filters(&host, "ens3").is_empty() && guard_filters(&host, "ens4").is_empty());
}

#[test]
fn the_daemon_leaves_a_working_clsact_filter_alone_and_puts_back_a_removed_one() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("clsact").unwrap();
    let config = clsact_config(&dir);
    let options = DaemonOptions {
        resync: Duration::from_millis(500),
        guard_check: Duration::from_millis(200),
        ..DaemonOptions::default()
    };
    let _daemon = DaemonThread::start(&host.host, &config, options);
    wait_healthy(&host.host, Duration::from_secs(10));
    let attached = the_filter(&host, "ens3");

    // Several periodic resyncs: the filter is checked, not re-attached.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(the_filter(&host, "ens3"), attached, "the same program in the same filter");
    let body = http_get(&host.host, METRICS_PORT, "/metrics").unwrap().1;
    assert!(
        sample(&body, "mhr_netlink_resyncs_total", "reason=\"periodic\"").unwrap_or(0.0) >= 2.0,
        "{body}"
    );
    assert_eq!(sample(&body, "mhr_guard_attached", "uplink=\"ens3\""), Some(1.0), "{body}");
    assert_eq!(
        sample(&body, "mhr_guard_repairs_total", "kind=\"link\""),
        Some(0.0),
        "nothing re-attached: {body}"
    );

    // Someone removes it: back within a few guard checks, and counted.
    host.host.tc(["filter", "del", "dev", "ens3", "egress"]).unwrap();
    eventually("the guard filter is back", Duration::from_secs(5), || {
        let filters = guard_filters(&host, "ens3");
        if filters.len() == 1 { Ok(()) } else { Err(format!("{filters:?}")) }
    });
    assert_eq!(send_frames(&host.host, "ens3", &spoofed_frame(&host), 1).unwrap(), 1, "enforcing again");
    let body = http_get(&host.host, METRICS_PORT, "/metrics").unwrap().1;
    assert!(sample(&body, "mhr_guard_repairs_total", "kind=\"link\"").unwrap_or(0.0) >= 1.0, "{body}");
}
