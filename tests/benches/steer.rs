//! Steer mode's costs (`cargo xtask bench`, root). Figures, not pass/fail;
//! each next to a baseline measured in the same run.
//!
//! 1. Per packet through BPF_PROG_TEST_RUN: the steer path (an asymmetric
//!    packet redirected) next to the same packet in monitor mode (the
//!    mismatch path: owner lookup, offender, flag); and an own-source
//!    packet in steer mode next to monitor mode (the `ok` path must not
//!    change). Goal: steer at most 1.5× the mismatch path.
//! 2. TCP throughput of one connection whose packets the routing sends out
//!    of the wrong uplink and the guard steers, next to the same connection
//!    routed right, both under the guard in steer mode.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Instant,
};

use aya::programs::{TestRun as _, TestRunOptions};
use mhr_common::guard::{GUARD_PROGRAM, Verdict};
use mhr_tests::{Netns, quiet_host::QuietHost, require_root};
use mhr_userspace::guard::{
    Enforcement, Guard, GuardUplink, SteerRoute, SteerVia,
    tc::{AttachMode, interface_index},
    teardown,
};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;
const THROUGHPUT_SECONDS: f64 = 3.0;
/// An address behind both routers (on the peer's loopback).
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn main() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).expect("bench host");
    host.host.run(|| test_run_costs(&host)).expect("entering the namespace");
    throughput(&host);
}

fn pin_dir(label: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/mhr-bench-steer-{label}-{}", std::process::id()))
}

/// ens3 and ens4 of the quiet host in `enforcement`, each steerable via
/// its router.
fn uplinks(host: &QuietHost, enforcement: Enforcement) -> Vec<GuardUplink> {
    host.uplinks
        .iter()
        .map(|uplink| GuardUplink {
            interface: uplink.interface.clone(),
            ifindex: interface_index(&uplink.interface).unwrap(),
            addresses: vec![IpAddr::V4(uplink.address)],
            allow: vec![],
            enforcement,
            l3: false,
            steer_to: SteerRoute {
                ipv4: Some(SteerVia::Gateway(IpAddr::V4(uplink.peer_address))),
                ipv6: None,
            },
        })
        .collect()
}

fn frame(source: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 64];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[14 + 2..14 + 4].copy_from_slice(&50u16.to_be_bytes());
    frame[14 + 8] = 64;
    frame[14 + 9] = 17;
    frame[14 + 12..14 + 16].copy_from_slice(&source.octets());
    frame[14 + 16..14 + 20].copy_from_slice(&FAR.octets());
    frame
}

fn ns_per_run(guard: &mut Guard, frame: &[u8], ifindex: u32) -> f64 {
    let mut context = [0u8; 44];
    context[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let options =
        TestRunOptions { data_in: Some(frame), ctx_in: Some(&context), repeat: REPEAT, ..Default::default() };
    let result = guard.program(GUARD_PROGRAM).unwrap().test_run(options).expect("test run");
    result.duration.as_nanos() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn loaded(host: &QuietHost, pin: &Path, enforcement: Enforcement) -> Guard {
    let mut guard = Guard::load(pin).expect("guard loads");
    guard.configure(&uplinks(host, enforcement)).expect("maps filled");
    guard
}

fn test_run_costs(host: &QuietHost) {
    let ens3 = interface_index("ens3").unwrap();
    let (monitor_pin, steer_pin) = (pin_dir("monitor"), pin_dir("steer"));
    let mut monitor = loaded(host, &monitor_pin, Enforcement::Monitor);
    let mut steer = loaded(host, &steer_pin, Enforcement::Steer { drop_unsteerable: false });
    let own = frame(host.uplinks[0].address);
    let other = frame(host.uplinks[1].address);
    let (mut ok_ratios, mut steer_ratios, mut mismatch_ns, mut steer_ns) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // Back to back, so each pair sees the same machine load; which of
        // a pair goes first alternates.
        let mut pair = |frame: &[u8]| {
            if round % 2 == 0 {
                let first = ns_per_run(&mut monitor, frame, ens3);
                (first, ns_per_run(&mut steer, frame, ens3))
            } else {
                let first = ns_per_run(&mut steer, frame, ens3);
                (ns_per_run(&mut monitor, frame, ens3), first)
            }
        };
        let (ok_monitor, ok_steer) = pair(&own);
        let (mismatch, steered) = pair(&other);
        ok_ratios.push(ok_steer / ok_monitor);
        steer_ratios.push(steered / mismatch);
        mismatch_ns.push(mismatch);
        steer_ns.push(steered);
    }
    println!("== steer mode per packet, BPF_PROG_TEST_RUN, {REPEAT} repeats, median of {ROUNDS} rounds");
    println!(
        "   asymmetric: monitor (mismatch path) {:>6.1} ns, steer (redirected) {:>6.1} ns   ratio {:.2}; goal ≤ 1.5",
        median(mismatch_ns),
        median(steer_ns),
        median(steer_ratios)
    );
    println!("   own source (ok path): steer next to monitor   ratio {:.2}; goal 1.00", median(ok_ratios));
    drop((monitor, steer));
    let _ = teardown(&monitor_pin, &[]);
    let _ = teardown(&steer_pin, &[]);
}

/// Bytes a second one TCP connection from `source` to FAR carries.
fn tcp_rate(host: &Netns, peer: &Netns, source: Ipv4Addr) -> f64 {
    let listener = peer.run(|| std::net::TcpListener::bind((FAR, 0)).unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    let rate = host
        .run(move || {
            use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
            use std::io::Write as _;
            use std::os::fd::AsRawFd as _;
            let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
            bind(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0))).unwrap();
            connect(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(FAR, port))).unwrap();
            let mut socket = std::net::TcpStream::from(fd);
            let buffer = vec![0x5a; 64 * 1024];
            let mut sent = 0u64;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < THROUGHPUT_SECONDS {
                socket.write_all(&buffer).unwrap();
                sent += buffer.len() as u64;
            }
            sent as f64 / start.elapsed().as_secs_f64()
        })
        .unwrap();
    sink.join().unwrap();
    rate
}

/// Main's default leaves by ens3; a rule sends ens3's address out of ens3
/// (routed right). ens4's address has no rule (as before mhr installs it),
/// so its packets leave by ens3 too and the guard steers them to ens4's
/// router; the replies come back by ens4.
fn throughput(host: &QuietHost) {
    host.peer.ip(["addr", "add", &format!("{FAR}/32"), "dev", "lo"]).unwrap();
    for key in ["all", "default", "p0", "p1"] {
        host.peer.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0").unwrap();
    }
    for key in ["all", "default", "ens3", "ens4"] {
        host.host.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0").unwrap();
    }
    host.host.ip(["route", "add", "default", "via", "10.99.0.1", "dev", "ens3"]).unwrap();
    let pin = pin_dir("throughput");
    let guard = host
        .host
        .run(|| {
            let mut guard = loaded(host, &pin, Enforcement::Steer { drop_unsteerable: false });
            guard
                .attach(&uplinks(host, Enforcement::Steer { drop_unsteerable: false }), AttachMode::Tcx)
                .unwrap();
            guard
        })
        .unwrap();
    let (own, other) = (host.uplinks[0].address, host.uplinks[1].address);
    let (mut routed, mut ratios) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so drift on a shared machine cancels.
        let (right, steered) = if round % 2 == 0 {
            let right = tcp_rate(&host.host, &host.peer, own);
            (right, tcp_rate(&host.host, &host.peer, other))
        } else {
            let steered = tcp_rate(&host.host, &host.peer, other);
            (tcp_rate(&host.host, &host.peer, own), steered)
        };
        routed.push(right);
        ratios.push(steered / right);
    }
    let slot = guard.maps.slot_of("ens3").unwrap().expect("ens3 has a slot");
    let steered_packets = guard.maps.verdict_counts(slot).unwrap().total(Verdict::Steered).packets;
    drop(guard);
    let _ = teardown(&pin, &[]);
    println!(
        "\n== TCP throughput, one connection over veth, {THROUGHPUT_SECONDS} s, median of {ROUNDS} rounds"
    );
    println!("   routed right (ok path)     {:>8.2} Gbit/s", median(routed) * 8.0 / 1e9);
    println!(
        "   steered to its owner       ratio {:.3} of routed right ({steered_packets} packets steered)",
        median(ratios)
    );
}
