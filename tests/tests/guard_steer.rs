//! Steer mode: an asymmetric packet leaves by the uplink that owns its
//! source, towards that uplink's router, counted `steered` once; when it
//! cannot be steered it is counted `steer_failed` and handled as the mode
//! says; spoofed packets are dropped. First the program alone
//! (BPF_PROG_TEST_RUN, exact counter deltas), then real traffic.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::OwnedFd,
    time::Duration,
};

use common::{
    frames::{self, UDP},
    guard::*,
    mhr, write_config,
};
use mhr_common::{
    TCX_NEXT,
    guard::{PacketFamily, TC_ACT_REDIRECT, TC_ACT_SHOT, Verdict},
};
use mhr_tests::{
    Netns, TempDir,
    quiet_host::QuietHost,
    raw::{mac_of, send_frames, udp4_frame},
    require_root,
    seed_lab::routing_section,
    tun::Tun,
};
use mhr_userspace::guard::{Enforcement, GuardMaps, SteerRoute, SteerVia, VerdictCounts};

const FOREIGN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);

fn ens4_reachable() -> SteerRoute {
    SteerRoute {
        ipv4: Some(SteerVia::Gateway("10.0.4.1".parse().unwrap())),
        ipv6: Some(SteerVia::Gateway("fe80::1".parse().unwrap())),
    }
}

#[test]
fn steer_mode_redirects_asymmetric_packets_and_drops_spoofed_ones() {
    in_quiet_host(|| {
        let steer = Enforcement::Steer { drop_unsteerable: false };
        let mut f = Fixture::with(uplinks_in(steer, ens4_reachable()));
        let v4 = |source| frames::ipv4(source, PEER_V4, UDP, &[]);
        let v6 = |source| frames::ipv6(source, PEER_V6, UDP, false, &[]);
        expect(&mut f, &v4(ENS3_V4), PacketFamily::Ipv4, Verdict::Ok, TCX_NEXT);
        expect(&mut f, &v4(ENS4_V4), PacketFamily::Ipv4, Verdict::Steered, TC_ACT_REDIRECT);
        expect(&mut f, &v4(FOREIGN_V4), PacketFamily::Ipv4, Verdict::Spoofed, TC_ACT_SHOT);
        expect(&mut f, &v6(ENS3_V6), PacketFamily::Ipv6, Verdict::Ok, TCX_NEXT);
        expect(&mut f, &v6(ENS4_V6), PacketFamily::Ipv6, Verdict::Steered, TC_ACT_REDIRECT);
        expect(&mut f, &v6(FOREIGN_V6), PacketFamily::Ipv6, Verdict::Spoofed, TC_ACT_SHOT);
        // A tagged frame cannot be rewritten by the neighbour code: not steered.
        let tagged = frames::ipv4(ENS4_V4, PEER_V4, UDP, &[(0x8100, 42)]);
        expect(&mut f, &tagged, PacketFamily::Ipv4, Verdict::SteerFailed, TCX_NEXT);
        let flags = f.flags();
        let verdicts: Vec<&str> = flags.iter().map(|flag| flag.verdict).collect();
        assert_eq!(verdicts, ["steered", "spoofed", "steered", "spoofed", "steer_failed"], "{flags:?}");
    });
}

#[test]
fn an_owner_that_cannot_take_them_fails_steering_and_the_mode_decides() {
    in_quiet_host(|| {
        let frame = frames::ipv4(ENS4_V4, PEER_V4, UDP, &[]);
        let v6_frame = frames::ipv6(ENS4_V6, PEER_V6, UDP, false, &[]);
        // ens4 down (or without a gateway): nothing can be steered to it.
        let passing = Enforcement::Steer { drop_unsteerable: false };
        let mut f = Fixture::with(uplinks_in(passing, SteerRoute::default()));
        expect(&mut f, &frame, PacketFamily::Ipv4, Verdict::SteerFailed, TCX_NEXT);
        drop(f);
        let dropping = Enforcement::Steer { drop_unsteerable: true };
        let mut f = Fixture::with(uplinks_in(dropping, SteerRoute::default()));
        expect(&mut f, &frame, PacketFamily::Ipv4, Verdict::SteerFailed, TC_ACT_SHOT);
        drop(f);
        // IPv4 only (no IPv6 gateway known): IPv6 is not steered.
        let only_v4 = SteerRoute { ipv6: None, ..ens4_reachable() };
        let mut f = Fixture::with(uplinks_in(passing, only_v4));
        expect(&mut f, &frame, PacketFamily::Ipv4, Verdict::Steered, TC_ACT_REDIRECT);
        expect(&mut f, &v6_frame, PacketFamily::Ipv6, Verdict::SteerFailed, TCX_NEXT);
        drop(f);
        // The other modes never steer.
        let mut f = Fixture::with(uplinks_in(Enforcement::DropSpoofedAndAsymmetric, ens4_reachable()));
        expect(&mut f, &frame, PacketFamily::Ipv4, Verdict::Asymmetric, TC_ACT_SHOT);
    });
}

/// The quiet host with routing, IPv4 only, both uplinks in `mode`.
fn steer_config(dir: &TempDir, global: &str) -> std::path::PathBuf {
    let text = format!(
        "{global}\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

fn counts(pin_dir: &std::path::Path, uplink: &str) -> VerdictCounts {
    let maps = GuardMaps::from_pins(pin_dir).unwrap().expect("guard installed");
    let slot = maps.slot_of(uplink).unwrap().expect("uplink has a slot");
    maps.verdict_counts(slot).unwrap()
}

/// A UDP socket on port 9 bound to `interface` of `netns`: it only gets
/// datagrams that arrived there, addressed to that interface's MAC (the
/// stack drops other hosts' frames before UDP).
fn listener(netns: &Netns, interface: &str) -> UdpSocket {
    socket_on(netns, interface, "0.0.0.0:9".parse().unwrap())
}

fn socket_on(netns: &Netns, interface: &str, address: SocketAddr) -> UdpSocket {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let interface = std::ffi::OsString::from(interface);
    netns
        .run(move || {
            let fd: OwnedFd =
                socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_NONBLOCK, None).unwrap();
            setsockopt(&fd, sockopt::BindToDevice, &interface).unwrap();
            let SocketAddr::V4(v4) = address else { panic!("IPv4 only") };
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).unwrap();
            UdpSocket::from(fd)
        })
        .unwrap()
}

/// Datagrams waiting on `socket` (after a moment for the last to arrive).
fn received(socket: &UdpSocket) -> usize {
    std::thread::sleep(Duration::from_millis(200));
    let mut buffer = [0u8; 2048];
    std::iter::from_fn(|| socket.recv(&mut buffer).ok()).count()
}

/// A frame out of the quiet host's uplink `index`, to that uplink's router
/// (10.99.index.1, port 9), from `source`.
fn frame_from(host: &QuietHost, index: usize, source: Ipv4Addr) -> Vec<u8> {
    let uplink = &host.uplinks[index];
    let own = mac_of(&host.host, &uplink.interface).unwrap();
    let peer = mac_of(&host.peer, &format!("p{index}")).unwrap();
    udp4_frame(own, peer, source, uplink.peer_address, 32)
}

/// The peer takes packets from any source on any port (steered ones arrive
/// on the other interface than their destination address).
fn loose_peer(host: &QuietHost) {
    for key in ["all", "default", "p0", "p1"] {
        host.peer.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0").unwrap();
    }
}

#[test]
fn an_asymmetric_packet_leaves_by_its_owners_router_and_is_counted_steered_once() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    loose_peer(&host);
    let dir = TempDir::new("steer").unwrap();
    let config = steer_config(&dir, "mode = \"steer\"");
    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    let (router3, router4) = (listener(&host.peer, "p0"), listener(&host.peer, "p1"));

    let (ens3_address, ens4_address) = (host.uplinks[0].address, host.uplinks[1].address);
    assert_eq!(send_frames(&host.host, "ens3", &frame_from(&host, 0, ens3_address), 2).unwrap(), 0);
    assert_eq!(send_frames(&host.host, "ens3", &frame_from(&host, 0, ens4_address), 5).unwrap(), 0);
    assert_eq!(
        send_frames(&host.host, "ens3", &frame_from(&host, 0, FOREIGN), 3).unwrap(),
        3,
        "spoofed dropped"
    );
    // An application bound to ens3 (SO_BINDTODEVICE) that uses ens4's address.
    let bound = socket_on(&host.host, "ens3", SocketAddr::new(IpAddr::V4(ens4_address), 0));
    for _ in 0..4 {
        bound.send_to(b"mhr", (host.uplinks[0].peer_address, 9)).unwrap();
    }

    assert_eq!(received(&router3), 2, "ens3's router sees only ens3's own packets");
    assert_eq!(received(&router4), 5 + 4, "ens4's router gets every asymmetric one, addressed to its MAC");
    let ens3 = counts(&dir.pin_dir(), "ens3");
    let v4 = |verdict| ens3.get(PacketFamily::Ipv4, verdict).packets;
    assert_eq!(
        [Verdict::Ok, Verdict::Steered, Verdict::Spoofed, Verdict::Asymmetric, Verdict::SteerFailed].map(v4),
        [2, 9, 3, 0, 0]
    );
    let ens4 = counts(&dir.pin_dir(), "ens4");
    assert!(
        Verdict::ALL.iter().all(|v| ens4.total(*v).packets == 0),
        "ens4's guard does not count steered packets again: {ens4:?}"
    );
    let status = mhr(&host.host, &config, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.output).expect("status is JSON");
    assert_eq!(status["guard"]["uplinks"][0]["verdicts"]["steered"]["packets"], 9);
    assert_eq!(status["guard"]["top_offenders"][0]["verdict"], "steered");
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn with_its_owner_down_a_packet_is_counted_steer_failed_and_passes_or_drops_as_configured() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    loose_peer(&host);
    let dir = TempDir::new("steer").unwrap();
    let config = steer_config(&dir, "mode = \"steer\"");
    host.host.ip(["link", "set", "ens4", "down"]).unwrap();
    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    let router3 = listener(&host.peer, "p0");
    let asymmetric = frame_from(&host, 0, host.uplinks[1].address);
    assert_eq!(send_frames(&host.host, "ens3", &asymmetric, 4).unwrap(), 0, "not counted spoofed");
    assert_eq!(received(&router3), 4, "not steerable: passed as in monitor mode");

    let config = steer_config(&dir, "mode = \"steer\"\nenforce_asymmetric = true");
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    assert_eq!(send_frames(&host.host, "ens3", &asymmetric, 3).unwrap(), 3, "dropped as enforce would");
    assert_eq!(received(&router3), 0);
    let ens3 = counts(&dir.pin_dir(), "ens3");
    assert_eq!(ens3.get(PacketFamily::Ipv4, Verdict::SteerFailed).packets, 7);
    assert_eq!(ens3.get(PacketFamily::Ipv4, Verdict::Steered).packets, 0);

    // Back up: steered again.
    host.host.ip(["link", "set", "ens4", "up"]).unwrap();
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    let router4 = listener(&host.peer, "p1");
    assert_eq!(send_frames(&host.host, "ens3", &asymmetric, 2).unwrap(), 0);
    assert_eq!(received(&router4), 2);
    assert_eq!(counts(&dir.pin_dir(), "ens3").get(PacketFamily::Ipv4, Verdict::Steered).packets, 2);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn packets_are_steered_into_and_out_of_an_l3_uplink() {
    require_root();
    let host = QuietHost::start(&["ens3"]).unwrap();
    for key in ["all", "default", "p0"] {
        host.peer.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0").unwrap();
    }
    let mut tun = Tun::create(&host.host, "tun0").unwrap();
    host.host.ip(["addr", "add", "10.98.0.10/24", "dev", "tun0"]).unwrap();
    host.host.ip(["link", "set", "tun0", "up"]).unwrap();
    // A far end behind tun0 that ens3's router also answers for.
    host.peer.ip(["addr", "add", "10.98.0.20/32", "dev", "lo"]).unwrap();
    let dir = TempDir::new("steer").unwrap();
    let text = format!(
        "mode = \"steer\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"tun0\"\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    tun.drain(Duration::from_millis(200));
    let router3 = listener(&host.peer, "p0");

    // tun0's address out of ens3: into tun0, MAC header gone.
    let tun_address: Ipv4Addr = "10.98.0.10".parse().unwrap();
    assert_eq!(send_frames(&host.host, "ens3", &frame_from(&host, 0, tun_address), 3).unwrap(), 0);
    let into_tun = tun.drain(Duration::from_millis(300));
    assert_eq!(into_tun.len(), 3, "{into_tun:?}");
    assert!(
        into_tun.iter().all(|p| p[0] == 0x45 && p[12..16] == tun_address.octets()),
        "bare IPv4 from tun0's address"
    );
    assert_eq!(received(&router3), 0);

    // ens3's address out of tun0: a MAC header is pushed, ens3's router gets it.
    let bound = socket_on(&host.host, "tun0", SocketAddr::new(IpAddr::V4(host.uplinks[0].address), 0));
    for _ in 0..2 {
        bound.send_to(b"mhr", ("10.98.0.20", 9)).unwrap();
    }
    assert_eq!(received(&router3), 2, "steered from the L3 uplink to ens3's router");
    assert!(tun.drain(Duration::from_millis(200)).is_empty(), "nothing left by tun0");
    let (ens3, tun0) = (counts(&dir.pin_dir(), "ens3"), counts(&dir.pin_dir(), "tun0"));
    assert_eq!(ens3.get(PacketFamily::Ipv4, Verdict::Steered).packets, 3);
    assert_eq!(tun0.get(PacketFamily::Ipv4, Verdict::Steered).packets, 2);
    assert_eq!(
        [ens3.total(Verdict::Ok).packets, tun0.total(Verdict::Ok).packets],
        [0, 0],
        "the owners do not count steered packets again"
    );
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}
