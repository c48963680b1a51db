//! The guard on real traffic in namespaces: what leaves an uplink is
//! counted by verdict exactly, enforce mode drops exactly the spoofed
//! packets, and counters survive re-applies with no packet uncounted.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use common::{mhr, write_config};
use mhr_common::guard::{PacketFamily, Verdict};
use mhr_tests::{
    TempDir,
    quiet_host::{QuietHost, UDP4_FRAME_OVERHEAD},
    raw::{UDP4_OVERHEAD, mac_of, rx_packets, send_frames, udp4_frame},
    require_root,
    seed_lab::routing_section,
    tun::Tun,
};
use mhr_userspace::guard::{GuardMaps, VerdictCounts};

const PAYLOAD: usize = 64;
const FOREIGN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);

/// A quiet host with two uplinks under mhr (routing + guard).
fn quiet_config(dir: &TempDir, mode: &str) -> std::path::PathBuf {
    let text = format!(
        "mode = \"{mode}\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

fn counts(pin_dir: &Path, uplink: &str) -> VerdictCounts {
    let maps = GuardMaps::from_pins(pin_dir).unwrap().expect("guard installed");
    let slot = maps.slot_of(uplink).unwrap().expect("uplink has a slot");
    maps.verdict_counts(slot).unwrap()
}

/// A frame out of `interface` of the quiet host, to its peer, from `source`.
fn frame_from(host: &QuietHost, index: usize, source: Ipv4Addr) -> Vec<u8> {
    let uplink = &host.uplinks[index];
    let own = mac_of(&host.host, &uplink.interface).unwrap();
    let peer = mac_of(&host.peer, &format!("p{index}")).unwrap();
    udp4_frame(own, peer, source, uplink.peer_address, PAYLOAD)
}

#[test]
fn egress_traffic_is_counted_by_verdict_exactly() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("guard").unwrap();
    let config = quiet_config(&dir, "monitor");
    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");

    host.send_udp(0, 7, PAYLOAD).unwrap(); // ens3's own address: ok
    let asymmetric = frame_from(&host, 0, host.uplinks[1].address);
    send_frames(&host.host, "ens3", &asymmetric, 5).unwrap(); // ens4's address out of ens3
    let spoofed = frame_from(&host, 0, FOREIGN);
    send_frames(&host.host, "ens3", &spoofed, 3).unwrap();

    let frame = (PAYLOAD + UDP4_OVERHEAD) as u64;
    assert_eq!(UDP4_FRAME_OVERHEAD, UDP4_OVERHEAD as u64);
    let ens3 = counts(&dir.pin_dir(), "ens3");
    let v4 = |verdict| ens3.get(PacketFamily::Ipv4, verdict);
    assert_eq!((v4(Verdict::Ok).packets, v4(Verdict::Ok).bytes), (7, 7 * frame));
    assert_eq!((v4(Verdict::Asymmetric).packets, v4(Verdict::Asymmetric).bytes), (5, 5 * frame));
    assert_eq!((v4(Verdict::Spoofed).packets, v4(Verdict::Spoofed).bytes), (3, 3 * frame));
    for verdict in [Verdict::Exempt, Verdict::NonIp, Verdict::Malformed] {
        assert_eq!(ens3.total(verdict).packets, 0, "{verdict:?}");
    }
    let ens4 = counts(&dir.pin_dir(), "ens4");
    assert!(Verdict::ALL.iter().all(|v| ens4.total(*v).packets == 0), "nothing left ens4");

    let status = mhr(&host.host, &config, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.output).expect("status is JSON");
    let guard = &status["guard"]["uplinks"][0];
    assert_eq!(guard["interface"], "ens3");
    assert_eq!(guard["attached"], true);
    assert_eq!(guard["verdicts"]["spoofed"]["packets"], 3);
    assert_eq!(guard["verdicts"]["asymmetric"]["packets"], 5);
    assert_eq!(guard["by_family"]["ipv4"]["ok"]["packets"], 7);
    let top = &status["guard"]["top_offenders"];
    assert_eq!(top[0]["source"], "10.99.1.10");
    assert_eq!(top[0]["packets"], 5);
    assert_eq!(top[1]["source"], "192.0.2.66");
    assert_eq!(top[1]["verdict"], "spoofed");
    let watch = mhr(&host.host, &config, &["watch", "--count", "8", "--duration", "5s"]);
    assert!(watch.succeeded(), "{watch:?}");
    assert_eq!(watch.output.matches("verdict=asymmetric src=10.99.1.10").count(), 5, "{}", watch.output);
    assert_eq!(watch.output.matches("verdict=spoofed src=192.0.2.66").count(), 3, "{}", watch.output);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn enforce_mode_lets_the_router_side_see_none_of_the_spoofed_and_all_the_good() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("guard").unwrap();
    let config = quiet_config(&dir, "enforce");
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    let received_before = rx_packets(&host.peer, "p0").unwrap();

    let good = frame_from(&host, 0, host.uplinks[0].address);
    let spoofed = frame_from(&host, 0, FOREIGN);
    let asymmetric = frame_from(&host, 0, host.uplinks[1].address);
    let mut dropped = 0;
    for _ in 0..4 {
        dropped += send_frames(&host.host, "ens3", &good, 5).unwrap();
        dropped += send_frames(&host.host, "ens3", &spoofed, 5).unwrap();
    }
    dropped += send_frames(&host.host, "ens3", &asymmetric, 2).unwrap();
    assert_eq!(dropped, 20, "the sender saw exactly the spoofed frames dropped");

    let received = rx_packets(&host.peer, "p0").unwrap() - received_before;
    assert_eq!(
        received,
        20 + 2,
        "all good packets and the (not enforced) asymmetric ones arrive, no spoofed"
    );
    let ens3 = counts(&dir.pin_dir(), "ens3");
    assert_eq!(ens3.get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 20);
    let maps = GuardMaps::from_pins(&dir.pin_dir()).unwrap().unwrap();
    let slot = maps.slot_of("ens3").unwrap().expect("ens3 has a slot");
    assert_eq!(maps.event_counts(slot).unwrap().dropped, 20);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn counters_survive_reapply_and_restart_and_no_packet_goes_uncounted() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("guard").unwrap();
    let config = quiet_config(&dir, "monitor");
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    host.send_udp(0, 10, PAYLOAD).unwrap();
    assert_eq!(counts(&dir.pin_dir(), "ens3").get(PacketFamily::Ipv4, Verdict::Ok).packets, 10);

    // Keep traffic flowing while mhr is re-applied three times (each run a
    // fresh load of the program, as after a restart, replacing it in place).
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                host.send_udp(0, 1, PAYLOAD).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
        for _ in 0..3 {
            let again = mhr(&host.host, &config, &["apply"]);
            assert!(again.output.contains("guard: ens3 program replaced, counters kept"), "{}", again.output);
        }
        done.store(true, Ordering::Relaxed);
    });
    let during = sent.load(Ordering::Relaxed);
    assert!(during > 0);
    let ok = counts(&dir.pin_dir(), "ens3").get(PacketFamily::Ipv4, Verdict::Ok).packets;
    assert_eq!(ok, 10 + during, "every packet counted across the replacements");
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
    assert!(GuardMaps::from_pins(&dir.pin_dir()).unwrap().is_none(), "down unpins the maps");
}

#[test]
fn an_address_change_updates_the_maps_without_reloading_the_program() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("guard").unwrap();
    let config = quiet_config(&dir, "monitor");
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());

    // A new address on ens3 is not the guard's yet: spoofed.
    let added = Ipv4Addr::new(10, 99, 0, 20);
    host.host.ip(["addr", "add", &format!("{added}/24"), "dev", "ens3"]).unwrap();
    let frame = frame_from(&host, 0, added);
    send_frames(&host.host, "ens3", &frame, 2).unwrap();
    assert_eq!(counts(&dir.pin_dir(), "ens3").get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 2);

    // Rewrite the pinned maps only: no program is loaded or attached.
    let index = |name: &'static str| {
        host.host.run(move || mhr_userspace::guard::tc::interface_index(name).unwrap()).unwrap()
    };
    let mut maps = GuardMaps::from_pins(&dir.pin_dir()).unwrap().unwrap();
    let uplinks = [
        mhr_userspace::guard::GuardUplink {
            interface: "ens3".into(),
            ifindex: index("ens3"),
            addresses: vec![host.uplinks[0].address.into(), added.into()],
            allow: vec![],
            enforcement: mhr_userspace::guard::Enforcement::Monitor,
            l3: false,
            steer_to: Default::default(),
        },
        mhr_userspace::guard::GuardUplink {
            interface: "ens4".into(),
            ifindex: index("ens4"),
            addresses: vec![host.uplinks[1].address.into()],
            allow: vec![],
            enforcement: mhr_userspace::guard::Enforcement::Monitor,
            l3: false,
            steer_to: Default::default(),
        },
    ];
    maps.configure(&uplinks).unwrap();
    send_frames(&host.host, "ens3", &frame, 3).unwrap();
    let ens3 = counts(&dir.pin_dir(), "ens3");
    assert_eq!(ens3.get(PacketFamily::Ipv4, Verdict::Ok).packets, 3);
    assert_eq!(ens3.get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 2, "earlier counts kept");
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}

#[test]
fn a_slot_given_to_another_uplink_starts_with_nothing_of_the_old_one() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).unwrap();
    let dir = TempDir::new("guard").unwrap();
    let config = quiet_config(&dir, "monitor");
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    send_frames(&host.host, "ens3", &frame_from(&host, 0, FOREIGN), 4).unwrap();
    let mut maps = GuardMaps::from_pins(&dir.pin_dir()).unwrap().unwrap();
    let old_slot = maps.slot_of("ens3").unwrap().unwrap();
    assert_eq!(maps.verdict_counts(old_slot).unwrap().get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 4);
    assert_eq!(maps.event_counts(old_slot).unwrap().flags_emitted, 4);
    let names = maps.slot_names().unwrap();
    assert!(maps.offenders(&names).unwrap().iter().any(|o| o.uplink == "ens3"));

    // ens3 leaves; ens4 and as many new uplinks as there are slots: one of
    // them takes ens3's slot.
    let ens4 = host.host.run(|| mhr_userspace::guard::tc::interface_index("ens4").unwrap()).unwrap();
    let mut uplinks = vec![mhr_userspace::guard::GuardUplink {
        interface: "ens4".into(),
        ifindex: ens4,
        addresses: vec![host.uplinks[1].address.into()],
        allow: vec![],
        enforcement: mhr_userspace::guard::Enforcement::Monitor,
        l3: false,
        steer_to: Default::default(),
    }];
    for i in 1..mhr_common::guard::MAX_UPLINKS {
        uplinks.push(mhr_userspace::guard::GuardUplink {
            interface: format!("new{i}"),
            ifindex: 3000 + i,
            addresses: vec![],
            allow: vec![],
            enforcement: mhr_userspace::guard::Enforcement::Monitor,
            l3: false,
            steer_to: Default::default(),
        });
    }
    maps.configure(&uplinks).unwrap();
    let names = maps.slot_names().unwrap();
    let heir = names.get(&old_slot).expect("the slot is taken again");
    assert!(heir.starts_with("new"), "{heir}");
    let counts = maps.verdict_counts(old_slot).unwrap();
    assert!(Verdict::ALL.iter().all(|v| counts.total(*v).packets == 0), "counters cleared");
    let events = maps.event_counts(old_slot).unwrap();
    assert_eq!((events.flags_emitted, events.flags_suppressed, events.dropped), (0, 0, 0));
    let offenders = maps.offenders(&names).unwrap();
    assert!(offenders.iter().all(|o| &o.uplink != heir), "no offender carried over: {offenders:?}");
}

/// Sources of the IP packets read back from a tun device.
fn sources(packets: &[Vec<u8>]) -> Vec<IpAddr> {
    packets
        .iter()
        .filter_map(|packet| match packet.first()? >> 4 {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(packet.get(12..16)?).ok()?)),
            6 => Some(IpAddr::from(<[u8; 16]>::try_from(packet.get(8..24)?).ok()?)),
            _ => None,
        })
        .collect()
}

/// A UDP datagram from `source` to `destination` (port 9) in `netns`.
fn send_udp_from(netns: &mhr_tests::Netns, source: IpAddr, destination: IpAddr) {
    netns
        .run(move || {
            let socket = std::net::UdpSocket::bind((source, 0)).unwrap();
            socket.send_to(b"mhr", (destination, 9)).unwrap();
        })
        .unwrap();
}

#[test]
fn an_l3_uplink_is_guarded_from_its_ip_header() {
    require_root();
    let host = QuietHost::start(&["ens3"]).unwrap();
    // tun0 as a WireGuard or PPP uplink would be: packets start at the IP
    // header; the test reads what leaves it.
    let mut tun = Tun::create(&host.host, "tun0").unwrap();
    for device in ["tun0", "lo"] {
        host.host.sysctl(&format!("net.ipv6.conf.{device}.disable_ipv6"), "0").unwrap();
    }
    host.host.ip(["addr", "add", "10.98.0.10/24", "dev", "tun0"]).unwrap();
    host.host.ip(["addr", "add", "2001:db8:98::10/64", "dev", "tun0", "nodad"]).unwrap();
    host.host.ip(["link", "set", "tun0", "up"]).unwrap();
    // Addresses of no uplink: sending from them out of tun0 is spoofing.
    host.host.ip(["addr", "add", "192.0.2.66/32", "dev", "lo"]).unwrap();
    host.host.ip(["addr", "add", "2001:db8:66::66/128", "dev", "lo", "nodad"]).unwrap();
    let dir = TempDir::new("guard").unwrap();
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"tun0\"\nmode = \"enforce\"\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    assert!(applied.output.contains("guard: tun0 attached via tcx"), "{}", applied.output);
    assert!(
        host.host.ip(["route", "show", "table", "7101"]).unwrap().contains("default dev tun0"),
        "the point-to-point uplink is routed on-link"
    );
    tun.drain(std::time::Duration::from_millis(200));

    let own: [IpAddr; 2] = ["10.98.0.10".parse().unwrap(), "2001:db8:98::10".parse().unwrap()];
    let foreign: [IpAddr; 2] = ["192.0.2.66".parse().unwrap(), "2001:db8:66::66".parse().unwrap()];
    let peers: [IpAddr; 2] = ["10.98.0.20".parse().unwrap(), "2001:db8:98::20".parse().unwrap()];
    for ((own, foreign), peer) in own.into_iter().zip(foreign).zip(peers) {
        for _ in 0..3 {
            send_udp_from(&host.host, own, peer);
            send_udp_from(&host.host, foreign, peer);
        }
    }
    let left = sources(&tun.drain(std::time::Duration::from_millis(300)));
    for (own, foreign) in own.into_iter().zip(foreign) {
        assert_eq!(left.iter().filter(|s| **s == own).count(), 3, "own {own} passes: {left:?}");
        assert!(!left.contains(&foreign), "spoofed {foreign} dropped: {left:?}");
    }
    let tun0 = counts(&dir.pin_dir(), "tun0");
    assert_eq!(tun0.get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 3);
    assert_eq!(tun0.get(PacketFamily::Ipv6, Verdict::Spoofed).packets, 3);
    assert!(tun0.get(PacketFamily::Ipv4, Verdict::Ok).packets >= 3);
    assert!(tun0.get(PacketFamily::Ipv6, Verdict::Ok).packets >= 3);
    assert_eq!(
        tun0.total(Verdict::NonIp).packets + tun0.total(Verdict::Malformed).packets,
        0,
        "no misread packet"
    );
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}
