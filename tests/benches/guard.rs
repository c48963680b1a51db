//! Guard benchmarks (`cargo xtask bench` runs this as root). Figures, not
//! pass/fail; every figure next to a baseline measured in the same run.
//!
//! 1. Per-packet cost through BPF_PROG_TEST_RUN: the guard's allowed IPv4,
//!    allowed IPv6 and mismatch paths (several source addresses each), each
//!    next to an empty classifier.
//! 2. CPU per packet under a bounded 64-byte UDP load over veth: no program,
//!    an empty TCX program, the guard, and an nftables egress rule set
//!    doing the same check.
//! 3. TCP throughput over veth (GSO on) with the guard in enforce mode,
//!    next to no program.
//! 4. Attach cost per uplink: mhr's guard attach (TCX link, pinned) on 32
//!    interfaces next to raw TCX link creation of the empty program on
//!    the same interfaces.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
};

use aya::programs::{TestRun as _, TestRunOptions};
use mhr_common::guard::{EMPTY_PROGRAM, GUARD_PROGRAM};
use mhr_tests::{quiet_host::QuietHost, require_root};
use mhr_userspace::{
    guard::tc::{AttachMode, interface_index},
    guard::{Guard, GuardUplink, teardown},
};

const REPEAT: u32 = 2_000_000;
const ROUNDS: usize = 7;
const LOAD_PACKETS: u64 = 300_000;
/// UDP payload that makes a 64-byte Ethernet frame (14 + 20 + 8 + 22).
const PAYLOAD_64_BYTE_FRAME: usize = 22;

fn main() {
    require_root();
    let host = QuietHost::start(&["ens3"]).expect("bench host");
    host.host.run(|| test_run_costs(&host)).expect("entering the namespace");
    load_costs(&host);
    throughput(&host);
    attach_costs();
}

const THROUGHPUT_SECONDS: f64 = 3.0;

/// Bytes a second one TCP connection out of ens3 to its peer carries for
/// THROUGHPUT_SECONDS.
fn tcp_rate(host: &QuietHost) -> f64 {
    let to = host.uplinks[0].peer_address;
    let listener = host.peer.run(move || std::net::TcpListener::bind((to, 0)).unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    let rate = host
        .host
        .run(move || {
            use std::io::Write as _;
            let mut socket = std::net::TcpStream::connect((to, port)).unwrap();
            let buffer = vec![0x5a; 64 * 1024];
            let mut sent = 0u64;
            let start = std::time::Instant::now();
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

fn throughput(host: &QuietHost) {
    host.peer.ip(["link", "set", "p0", "up"]).unwrap();
    let ifindex = host.host.run(|| interface_index("ens3").unwrap()).unwrap();
    let pin = pin_dir("throughput");
    let mut ratios = Vec::new();
    let mut bare = Vec::new();
    for round in 0..ROUNDS {
        // Alternate which goes first, so drift on a shared machine cancels.
        let first = (round % 2 == 0).then(|| tcp_rate(host));
        let guard = host
            .host
            .run(|| {
                let mut guard = guard_for(ifindex, &pin);
                let uplink = GuardUplink {
                    interface: "ens3".into(),
                    ifindex,
                    addresses: own_v4().into_iter().map(IpAddr::V4).collect(),
                    allow: vec![],
                    enforcement: mhr_userspace::guard::Enforcement::DropSpoofedAndAsymmetric,
                    l3: false,
                    steer_to: Default::default(),
                };
                guard.configure(std::slice::from_ref(&uplink)).expect("maps filled");
                guard.attach(&[uplink], AttachMode::Tcx).expect("guard attached");
                guard
            })
            .unwrap();
        let guarded = tcp_rate(host);
        drop(guard);
        let _ = teardown(&pin, &[]);
        let baseline = first.unwrap_or_else(|| tcp_rate(host));
        bare.push(baseline);
        ratios.push(guarded / baseline);
    }
    println!(
        "\n== TCP throughput over veth (GSO on), one connection, {THROUGHPUT_SECONDS} s, median of {ROUNDS} rounds"
    );
    println!("   no program            {:>8.2} Gbit/s", median(bare) * 8.0 / 1e9);
    println!("   guard, enforce mode   ratio {:.3}; target ≥ 0.98", median(ratios));
}

const ATTACH_UPLINKS: usize = 32;

/// Per-interface attach time: mhr's guard (Guard::attach, TCX, pinned)
/// next to raw TCX link creation of the empty program, same interfaces.
fn attach_costs() {
    use aya::programs::{LinkOrder, TcAttachType, tc::TcAttachOptions};
    use mhr_common::guard::EMPTY_PROGRAM;
    use mhr_userspace::guard::tc::AttachMode;

    let many = mhr_tests::many_uplinks::ManyUplinks::start(ATTACH_UPLINKS, 1, 0).expect("bench host");
    let mut raw = Vec::new();
    let mut guarded = Vec::new();
    for round in 0..ROUNDS {
        let pin = pin_dir(&format!("attach{round}"));
        let (raw_time, guard_time) = many
            .host
            .run(|| {
                let mut guard = Guard::load(&pin).expect("guard loads");
                guard.load_empty().expect("empty program loads");
                let uplinks: Vec<GuardUplink> = (0..ATTACH_UPLINKS)
                    .map(|i| {
                        let interface = mhr_tests::many_uplinks::ManyUplinks::interface(i);
                        GuardUplink {
                            ifindex: interface_index(&interface).unwrap(),
                            interface,
                            addresses: vec![],
                            allow: vec![],
                            enforcement: mhr_userspace::guard::Enforcement::Monitor,
                            l3: false,
                            steer_to: Default::default(),
                        }
                    })
                    .collect();
                guard.configure(&uplinks).expect("maps filled");
                let raw = |guard: &mut Guard| {
                    let empty = guard.program(EMPTY_PROGRAM).unwrap();
                    let start = std::time::Instant::now();
                    let mut links = Vec::new();
                    for uplink in &uplinks {
                        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
                        let id = empty
                            .attach_with_options(&uplink.interface, TcAttachType::Egress, options)
                            .unwrap();
                        links.push(empty.take_link(id).unwrap());
                    }
                    (start.elapsed(), links)
                };
                let ours = |guard: &mut Guard| {
                    let start = std::time::Instant::now();
                    guard.attach(&uplinks, AttachMode::Tcx).expect("guard attached");
                    start.elapsed()
                };
                // Alternate which goes first: the kernel's grace periods
                // make a run's first attaches the slow ones.
                if round % 2 == 0 {
                    let (raw_time, links) = raw(&mut guard);
                    drop(links);
                    (raw_time, ours(&mut guard))
                } else {
                    let guard_time = ours(&mut guard);
                    let (raw_time, links) = raw(&mut guard);
                    drop(links);
                    (raw_time, guard_time)
                }
            })
            .unwrap();
        let _ = teardown(&pin, &[]);
        raw.push(raw_time.as_secs_f64() * 1e3 / ATTACH_UPLINKS as f64);
        guarded.push(guard_time.as_secs_f64() * 1e3 / ATTACH_UPLINKS as f64);
    }
    let ratios: Vec<f64> = guarded.iter().zip(&raw).map(|(g, r)| g / r).collect();
    println!("\n== attach per uplink, {ATTACH_UPLINKS} veth uplinks, median of {ROUNDS} rounds");
    println!("   raw TCX link create (empty program)  {:>6.2} ms", median(raw));
    println!(
        "   mhr guard attach (TCX, pinned)       {:>6.2} ms   ratio {:.2}; target ≤ 1.3",
        median(guarded),
        median(ratios)
    );
}

fn own_v4() -> Vec<Ipv4Addr> {
    (10..14).map(|last| Ipv4Addr::new(10, 99, 0, last)).collect()
}

fn own_v6() -> Vec<Ipv6Addr> {
    (0x10..0x14).map(|last| Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, last)).collect()
}

fn pin_dir(label: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/mhr-bench-{label}-{}", std::process::id()))
}

fn guard_for(host_ifindex: u32, pin: &Path) -> Guard {
    let mut guard = Guard::load(pin).expect("guard loads");
    guard.load_empty().expect("the empty baseline loads");
    let mut addresses: Vec<IpAddr> = own_v4().into_iter().map(IpAddr::V4).collect();
    addresses.extend(own_v6().into_iter().map(IpAddr::V6));
    let uplinks = [
        GuardUplink {
            interface: "ens3".into(),
            ifindex: host_ifindex,
            addresses,
            allow: vec!["198.18.0.0/15".parse().unwrap()],
            enforcement: mhr_userspace::guard::Enforcement::Monitor,
            l3: false,
            steer_to: Default::default(),
        },
        // Another managed uplink, so the mismatch path sees a populated owner map.
        GuardUplink {
            interface: "ens4".into(),
            ifindex: host_ifindex + 1000,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 1, 10))],
            allow: vec![],
            enforcement: mhr_userspace::guard::Enforcement::Monitor,
            l3: false,
            steer_to: Default::default(),
        },
    ];
    guard.configure(&uplinks).expect("maps filled");
    guard
}

fn frame_v4(source: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20 + 8 + PAYLOAD_64_BYTE_FRAME];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[14 + 9] = 17;
    frame[14 + 12..14 + 16].copy_from_slice(&source.octets());
    frame[14 + 16..14 + 20].copy_from_slice(&[203, 0, 113, 5]);
    frame
}

fn frame_v6(source: Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 40 + 8 + 8];
    frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    frame[14] = 0x60;
    frame[14 + 6] = 17;
    frame[14 + 8..14 + 24].copy_from_slice(&source.octets());
    frame
}

/// Mean ns per run of `program` on `frame` as egress of `ifindex`.
fn ns_per_run(guard: &mut Guard, program: &'static str, frame: &[u8], ifindex: u32) -> f64 {
    let mut context = [0u8; 44];
    context[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let options =
        TestRunOptions { data_in: Some(frame), ctx_in: Some(&context), repeat: REPEAT, ..Default::default() };
    let result = guard.program(program).unwrap().test_run(options).expect("test run");
    result.duration.as_nanos() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn test_run_costs(_host: &QuietHost) {
    let ifindex = interface_index("ens3").unwrap();
    let pin = pin_dir("testrun");
    let mut guard = guard_for(ifindex, &pin);
    let paths: Vec<(&str, Vec<Vec<u8>>, f64)> = vec![
        ("allowed IPv4", own_v4().into_iter().map(frame_v4).collect(), 8.0),
        ("allowed IPv6", own_v6().into_iter().map(frame_v6).collect(), 12.0),
        ("mismatch (spoofed)", (1..5).map(|i| frame_v4(Ipv4Addr::new(192, 0, 2, i))).collect(), 80.0),
    ];
    println!("== guard per-packet cost, BPF_PROG_TEST_RUN, {REPEAT} repeats, median of {ROUNDS} rounds");
    println!("   {:<20} {:>9} {:>9} {:>9} {:>8}", "path", "empty ns", "guard ns", "over ns", "target");
    for (name, frames, target) in paths {
        let mut empty = Vec::new();
        let mut guarded = Vec::new();
        let mut over = Vec::new();
        for _ in 0..ROUNDS {
            for frame in &frames {
                // Back to back, so each pair sees the same machine load; the
                // per-pair difference is what is reported.
                let base = ns_per_run(&mut guard, EMPTY_PROGRAM, frame, ifindex);
                let cost = ns_per_run(&mut guard, GUARD_PROGRAM, frame, ifindex);
                empty.push(base);
                guarded.push(cost);
                over.push(cost - base);
            }
        }
        let lowest = over.iter().copied().fold(f64::INFINITY, f64::min);
        let (empty, guarded, over) = (median(empty), median(guarded), median(over));
        let verdict = if over <= target { "met" } else { "MISSED" };
        println!(
            "   {name:<20} {empty:>9.1} {guarded:>9.1} {over:>9.1} {:>8} {verdict} (lowest pair {lowest:.0} ns, {} sources, ratio {:.2})",
            format!("≤{target}"),
            frames.len(),
            guarded / empty
        );
    }
    drop(guard);
    let _ = teardown(&pin, &[]);
}

/// CPU ns per packet for sending LOAD_PACKETS 64-byte UDP frames out of ens3.
fn cpu_per_packet(host: &QuietHost) -> f64 {
    let uplink = &host.uplinks[0];
    let (from, to) = (uplink.address, uplink.peer_address);
    host.host
        .run(move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(from, 0)).unwrap();
            let payload = [0x5a; PAYLOAD_64_BYTE_FRAME];
            let target = SocketAddrV4::new(to, 9);
            let start = mhr_tests::measure::thread_cpu();
            for _ in 0..LOAD_PACKETS {
                let _ = socket.send_to(&payload, target);
            }
            (mhr_tests::measure::thread_cpu() - start).as_nanos() as f64 / LOAD_PACKETS as f64
        })
        .unwrap()
}

fn load_costs(host: &QuietHost) {
    // The peer's end is down: veth drops right after transmit, so the
    // figures are the sender's path (socket, IP, TC egress) and nothing else.
    host.peer.ip(["link", "set", "p0", "down"]).unwrap();
    let own = own_v4().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let ruleset = format!(
        "table netdev mhr_bench {{\n  set own {{ type ipv4_addr; elements = {{ {own} }} }}\n  set owners {{ type ipv4_addr; elements = {{ 10.99.1.10 }} }}\n  chain egress {{\n    type filter hook egress device \"ens3\" priority 0; policy accept;\n    ip saddr @own counter accept\n    ip saddr 198.18.0.0/15 counter accept\n    ip saddr @owners counter accept\n    ip version 4 counter accept\n    counter accept\n  }}\n}}\n"
    );
    let pin = pin_dir("load");
    let mut none = Vec::new();
    let mut empty = Vec::new();
    let mut guarded = Vec::new();
    let mut nft = Vec::new();
    for _ in 0..ROUNDS {
        let baseline = cpu_per_packet(host);
        none.push(baseline);

        let ifindex = host.host.run(|| interface_index("ens3").unwrap()).unwrap();
        let empty_pin = pin_dir("load-empty");
        let link = host
            .host
            .run(|| {
                use aya::programs::{LinkOrder, TcAttachType, tc::TcAttachOptions};
                let mut guard = guard_for(ifindex, &empty_pin);
                let program = guard.program(mhr_common::guard::EMPTY_PROGRAM).unwrap();
                let options = TcAttachOptions::TcxOrder(LinkOrder::default());
                let id = program.attach_with_options("ens3", TcAttachType::Egress, options).unwrap();
                let link = program.take_link(id).unwrap();
                (guard, link)
            })
            .unwrap();
        empty.push(cpu_per_packet(host) / baseline);
        drop(link);
        let _ = teardown(&empty_pin, &[]);

        let ifindex = host.host.run(|| interface_index("ens3").unwrap()).unwrap();
        let guard = host
            .host
            .run(|| {
                let mut guard = guard_for(ifindex, &pin);
                let uplink = GuardUplink {
                    interface: "ens3".into(),
                    ifindex,
                    addresses: own_v4().into_iter().map(IpAddr::V4).collect(),
                    allow: vec![],
                    enforcement: mhr_userspace::guard::Enforcement::Monitor,
                    l3: false,
                    steer_to: Default::default(),
                };
                guard.attach(&[uplink], AttachMode::Tcx).expect("guard attached");
                guard
            })
            .unwrap();
        guarded.push(cpu_per_packet(host) / baseline);
        drop(guard);
        let _ = teardown(&pin, &[]);

        let mut command = host.host.command("nft");
        command.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        let mut child = command.spawn().expect("nft runs");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), ruleset.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft ruleset loads");
        nft.push(cpu_per_packet(host) / baseline);
        let status =
            host.host.command("nft").args(["delete", "table", "netdev", "mhr_bench"]).status().unwrap();
        assert!(status.success());
    }
    // Each round's figures are ratios to that round's own baseline.
    let (none, empty, guarded, nft) = (median(none), median(empty), median(guarded), median(nft));
    println!("\n== CPU per packet, {LOAD_PACKETS} × 64-byte UDP frames over veth, median of {ROUNDS} rounds");
    println!("   no program        {none:>8.0} ns   ratio 1.000");
    println!("   empty TCX program {:>8.0} ns   ratio {empty:.3}", empty * none);
    println!("   guard (TCX)       {:>8.0} ns   ratio {guarded:.3}", guarded * none);
    println!("   nftables egress   {:>8.0} ns   ratio {nft:.3}", nft * none);
}
