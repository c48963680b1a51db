//! The guard program through BPF_PROG_TEST_RUN: every verdict and parser
//! case, exact counter deltas, offenders and flag records.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use common::{
    frames::{self, TCP, UDP},
    guard::*,
};
use mhr_common::{
    MAX_IFINDEX, TCX_NEXT,
    guard::{GUARD_PROGRAM, PacketFamily, TC_ACT_SHOT, Verdict, ipv6_words},
};
use mhr_tests::{quiet_host::QuietHost, require_root};
use mhr_userspace::{guard::GuardUplink, guard::tc::interface_index};

#[test]
fn ipv4_verdicts() {
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        expect(&mut f, &frames::ipv4(ENS3_V4, PEER_V4, UDP, &[]), PacketFamily::Ipv4, Verdict::Ok, TCX_NEXT);
        expect(
            &mut f,
            &frames::ipv4(ALLOWED_V4, PEER_V4, UDP, &[]),
            PacketFamily::Ipv4,
            Verdict::Ok,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv4(Ipv4Addr::UNSPECIFIED, PEER_V4, UDP, &[]),
            PacketFamily::Ipv4,
            Verdict::Exempt,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv4(ENS4_V4, PEER_V4, TCP, &[]),
            PacketFamily::Ipv4,
            Verdict::Asymmetric,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]),
            PacketFamily::Ipv4,
            Verdict::Spoofed,
            TCX_NEXT,
        );
    });
}

#[test]
fn ipv6_verdicts_with_and_without_extension_headers() {
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        let link_local: Ipv6Addr = "fe80::1".parse().unwrap();
        for extensions in [false, true] {
            let frame = |source| frames::ipv6(source, PEER_V6, UDP, extensions, &[]);
            expect(&mut f, &frame(ENS3_V6), PacketFamily::Ipv6, Verdict::Ok, TCX_NEXT);
            expect(&mut f, &frame(Ipv6Addr::UNSPECIFIED), PacketFamily::Ipv6, Verdict::Exempt, TCX_NEXT);
            expect(&mut f, &frame(link_local), PacketFamily::Ipv6, Verdict::Exempt, TCX_NEXT);
            expect(&mut f, &frame(ENS4_V6), PacketFamily::Ipv6, Verdict::Asymmetric, TCX_NEXT);
            expect(&mut f, &frame(FOREIGN_V6), PacketFamily::Ipv6, Verdict::Spoofed, TCX_NEXT);
        }
        // The flag records found the UDP ports behind the extension headers.
        let flags = f.flags();
        assert_eq!(flags.len(), 4);
        assert!(
            flags.iter().all(|p| p.protocol == UDP && p.source_port == 40000 && p.destination_port == 53),
            "{flags:?}"
        );
    });
}

#[test]
fn vlan_tags_in_band_are_parsed_up_to_two() {
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        let single = [(0x8100, 42)];
        let double = [(0x88a8, 100), (0x8100, 42)];
        expect(
            &mut f,
            &frames::ipv4(ENS3_V4, PEER_V4, UDP, &single),
            PacketFamily::Ipv4,
            Verdict::Ok,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv4(ENS3_V4, PEER_V4, UDP, &double),
            PacketFamily::Ipv4,
            Verdict::Ok,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv6(ENS3_V6, PEER_V6, UDP, false, &double),
            PacketFamily::Ipv6,
            Verdict::Ok,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &single),
            PacketFamily::Ipv4,
            Verdict::Spoofed,
            TCX_NEXT,
        );
        let triple = [(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
        expect(
            &mut f,
            &frames::ipv4(ENS3_V4, PEER_V4, UDP, &triple),
            PacketFamily::Other,
            Verdict::Malformed,
            TCX_NEXT,
        );
        let flags = f.flags();
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].vlan, 42);
    });
}

#[test]
fn enforce_mode_drops_frames_with_more_vlan_tags_than_it_reads() {
    in_quiet_host(|| {
        let mut f = Fixture::new(true);
        let triple = [(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
        for source in [ENS3_V4, FOREIGN_V4] {
            let frame = frames::ipv4(source, PEER_V4, UDP, &triple);
            expect(&mut f, &frame, PacketFamily::Other, Verdict::Malformed, TC_ACT_SHOT);
        }
        expect(
            &mut f,
            &frames::ipv4(ENS3_V4, PEER_V4, UDP, &[(0x8100, 42)]),
            PacketFamily::Ipv4,
            Verdict::Ok,
            TCX_NEXT,
        );
        assert_eq!(f.guard.maps.event_counts(f.slot("ens3")).unwrap().dropped, 2);
    });
}

#[test]
fn non_ip_and_truncated_frames_are_counted_and_passed() {
    in_quiet_host(|| {
        let mut f = Fixture::new(true);
        expect(&mut f, &frames::arp(), PacketFamily::Other, Verdict::NonIp, TCX_NEXT);
        // Frames cut at every header boundary: each one the kernel accepts
        // is malformed and passed; which ones it refuses is recorded too.
        let v4 = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]);
        let v6 = frames::ipv6(FOREIGN_V6, PEER_V6, UDP, false, &[]);
        let tagged = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[(0x8100, 42)]);
        let tagged6 = frames::ipv6(FOREIGN_V6, PEER_V6, UDP, false, &[(0x8100, 42)]);
        let cases: [(&[u8], &[usize], PacketFamily); 4] = [
            (&v4, &[15, 20, 26, 29, 33], PacketFamily::Ipv4),
            (&v6, &[15, 21, 37, 53], PacketFamily::Ipv6),
            (&tagged, &[15, 16, 17, 18, 19, 24, 30, 33, 37], PacketFamily::Other),
            (&tagged6, &[19, 25, 41, 57], PacketFamily::Ipv6),
        ];
        let mut refused = Vec::new();
        for (frame, cuts, family) in cases {
            for &cut in cuts {
                let before = f.counts();
                match f.try_run(&frame[..cut]) {
                    None => refused.push(cut),
                    Some(code) => {
                        assert_eq!(code, TCX_NEXT);
                        // Inside a tag, the inner family is known once its EtherType is.
                        let family = if frame.len() == tagged.len() && cut >= 18 {
                            PacketFamily::Ipv4
                        } else {
                            family
                        };
                        let after = f.counts().get(family, Verdict::Malformed).packets;
                        assert_eq!(
                            after,
                            before.get(family, Verdict::Malformed).packets + 1,
                            "{family:?} cut at {cut}"
                        );
                    }
                }
            }
        }
        // Untagged IPv4/IPv6 frames shorter than their IP header never reach
        // the program under test-run; tagged ones do, at every cut.
        assert_eq!(refused, vec![15, 20, 26, 29, 33, 15, 21, 37, 53], "the kernel refused exactly these");
        let mut options_cut = v4.clone();
        options_cut[14] = 0x4f; // IHL 15: 60 header bytes claimed, fewer present
        expect(&mut f, &options_cut, PacketFamily::Ipv4, Verdict::Malformed, TCX_NEXT);
        let mut bad_version = v4.clone();
        bad_version[14] = 0x55;
        expect(&mut f, &bad_version, PacketFamily::Ipv4, Verdict::Malformed, TCX_NEXT);
        // The kernel itself refuses zero-length and header-only test frames.
        let program = f.guard.program(GUARD_PROGRAM).unwrap();
        for frame in [&[][..], &v4[..14]] {
            let options = TestRunOptions { data_in: Some(frame), ..Default::default() };
            assert!(program.test_run(options).is_err(), "a {}-byte frame is refused", frame.len());
        }
        assert_eq!(
            f.guard.maps.event_counts(f.slot("ens3")).unwrap().dropped,
            0,
            "nothing malformed is dropped"
        );
    });
}

#[test]
fn enforce_mode_drops_spoofed_but_not_asymmetric_by_default() {
    in_quiet_host(|| {
        let mut f = Fixture::new(true);
        expect(&mut f, &frames::ipv4(ENS3_V4, PEER_V4, UDP, &[]), PacketFamily::Ipv4, Verdict::Ok, TCX_NEXT);
        expect(
            &mut f,
            &frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]),
            PacketFamily::Ipv4,
            Verdict::Spoofed,
            TC_ACT_SHOT,
        );
        expect(
            &mut f,
            &frames::ipv4(ENS4_V4, PEER_V4, UDP, &[]),
            PacketFamily::Ipv4,
            Verdict::Asymmetric,
            TCX_NEXT,
        );
        expect(
            &mut f,
            &frames::ipv6(FOREIGN_V6, PEER_V6, TCP, false, &[]),
            PacketFamily::Ipv6,
            Verdict::Spoofed,
            TC_ACT_SHOT,
        );
        let events = f.guard.maps.event_counts(f.slot("ens3")).unwrap();
        assert_eq!(events.dropped, 2);
        let flags = f.flags();
        assert_eq!(
            flags.iter().map(|p| (p.verdict, p.dropped)).collect::<Vec<_>>(),
            vec![("spoofed", true), ("asymmetric", false), ("spoofed", true)]
        );
    });
}

/// The config's mode reaches the kernel as one value: `enforce` with
/// `enforce_asymmetric` drops asymmetric packets too, reads back from the
/// maps as it was written, and the rollback's write of monitor stops it.
#[test]
fn the_configs_mode_is_what_the_program_enforces_and_reads_back_the_same() {
    use mhr_userspace::{config::Config, guard::Enforcement};
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        let text = "mode = \"enforce\"\nenforce_asymmetric = true\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\nmode = \"monitor\"\n";
        let config = Config::parse(text, std::path::Path::new("mhr.toml")).unwrap();
        let mut uplinks = uplinks(false);
        for (uplink, configured) in uplinks.iter_mut().zip(&config.uplinks) {
            uplink.enforcement = config.enforcement(configured);
        }
        f.guard.configure(&uplinks).unwrap();
        let asymmetric = frames::ipv4(ENS4_V4, PEER_V4, UDP, &[]);
        expect(&mut f, &asymmetric, PacketFamily::Ipv4, Verdict::Asymmetric, TC_ACT_SHOT);
        let spoofed = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]);
        expect(&mut f, &spoofed, PacketFamily::Ipv4, Verdict::Spoofed, TC_ACT_SHOT);
        let modes = f.guard.maps.enforcement().unwrap();
        let by_name = |name: &str| modes[&interface_index(name).unwrap()];
        assert_eq!(by_name("ens3"), Enforcement::DropSpoofedAndAsymmetric);
        assert_eq!(by_name("ens4"), Enforcement::Monitor);
        // What a rollback writes.
        let monitor = modes.keys().map(|index| (*index, Enforcement::Monitor)).collect();
        f.guard.maps.set_enforcement(&monitor).unwrap();
        expect(&mut f, &asymmetric, PacketFamily::Ipv4, Verdict::Asymmetric, TCX_NEXT);
        expect(&mut f, &spoofed, PacketFamily::Ipv4, Verdict::Spoofed, TCX_NEXT);
        assert_eq!(f.guard.maps.enforcement().unwrap(), monitor);
    });
}

#[test]
fn a_corrupt_uplink_entry_fails_open_and_is_counted_even_in_enforce_mode() {
    in_quiet_host(|| {
        let mut f = Fixture::new(true);
        let spoofed = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]);
        assert_eq!(f.run(&spoofed), TC_ACT_SHOT, "enforced while the entry is sound");
        let mut entry = f.guard.maps.uplinks.get(&f.ens3, 0).unwrap();
        entry.slot = mhr_common::guard::MAX_UPLINKS + 7;
        f.guard.maps.uplinks.set(f.ens3, entry, 0).unwrap();
        let before = f.guard.maps.event_counts(0).unwrap().errors;
        assert_eq!(f.run(&spoofed), TCX_NEXT, "an out-of-range slot passes");
        assert_eq!(f.guard.maps.event_counts(0).unwrap().errors, before + 1, "and is counted");
    });
}

#[test]
fn the_program_carries_an_explicit_gpl_compatible_license() {
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        let info = f.guard.program(GUARD_PROGRAM).unwrap().info().unwrap();
        assert_eq!(info.gpl_compatible(), Some(true));
    });
    assert_eq!(mhr_userspace::guard::object_license().as_deref(), Some("Dual MIT/GPL"));
}

#[test]
fn offenders_are_tracked_per_uplink_and_source() {
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        let spoofed = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]);
        for _ in 0..3 {
            f.run(&spoofed);
        }
        f.run(&frames::ipv6(ENS4_V6, PEER_V6, UDP, false, &[]));
        f.run(&frames::ipv4(ENS3_V4, PEER_V4, UDP, &[]));
        let names = f.guard.maps.slot_names().unwrap();
        let offenders = f.guard.maps.offenders(&names).unwrap();
        let summary: Vec<(String, IpAddr, &str, u64, u64)> =
            offenders.iter().map(|o| (o.uplink.clone(), o.source, o.verdict, o.packets, o.bytes)).collect();
        let v6_len = frames::ipv6(ENS4_V6, PEER_V6, UDP, false, &[]).len() as u64;
        assert_eq!(
            summary,
            vec![
                ("ens3".into(), IpAddr::V4(FOREIGN_V4), "spoofed", 3, 3 * spoofed.len() as u64),
                ("ens3".into(), IpAddr::V6(ENS4_V6), "asymmetric", 1, v6_len),
            ]
        );
        assert!(offenders[0].first_seen_ns <= offenders[0].last_seen_ns);
    });
}

#[test]
fn flag_records_are_rate_limited_and_the_rest_counted_as_suppressed() {
    in_quiet_host(|| {
        let mut f = Fixture::new(false);
        let spoofed = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]);
        let mut context = [0u8; 44];
        context[40..44].copy_from_slice(&f.ens3.to_ne_bytes());
        let options = TestRunOptions {
            data_in: Some(&spoofed),
            ctx_in: Some(&context),
            repeat: 1000,
            ..Default::default()
        };
        f.guard.program(GUARD_PROGRAM).unwrap().test_run(options).unwrap();
        let events = f.guard.maps.event_counts(f.slot("ens3")).unwrap();
        assert_eq!(events.flags_emitted + events.flags_suppressed, 1000);
        assert!(events.flags_emitted <= 200 * 2, "at most the per-CPU budget: {events:?}");
        assert!(events.flags_suppressed >= 600, "{events:?}");
        assert_eq!(f.flags().len() as u64, events.flags_emitted);
        assert_eq!(f.counts().get(PacketFamily::Ipv4, Verdict::Spoofed).packets, 1000);

        // The next second's window has its budget again.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let options = TestRunOptions {
            data_in: Some(&spoofed),
            ctx_in: Some(&context),
            repeat: 10,
            ..Default::default()
        };
        f.guard.program(GUARD_PROGRAM).unwrap().test_run(options).unwrap();
        let refilled = f.guard.maps.event_counts(f.slot("ens3")).unwrap();
        assert_eq!(refilled.flags_emitted, events.flags_emitted + 10, "{refilled:?}");
        assert_eq!(refilled.flags_suppressed, events.flags_suppressed);
    });
}

/// Interfaces with an ifindex beyond the array (long-running hosts with
/// many veths get there) are guarded through the hash map, and forgotten
/// there when they stop being uplinks.
#[test]
fn an_uplink_with_an_ifindex_beyond_the_array_is_guarded_through_the_hash_map() {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).expect("host starts");
    host.host
        .ip(["link", "add", "hi0", "index", "4096", "type", "veth", "peer", "name", "hi1"])
        .expect("a veth at ifindex 4096, the first past the array");
    host.host
        .run(|| {
            const HIGH_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 50, 10);
            let mut f = Fixture::new(true);
            let high = interface_index("hi0").unwrap();
            assert_eq!(high, MAX_IFINDEX, "the first ifindex past the array");
            let mut uplinks = common::guard::uplinks(true);
            uplinks.push(GuardUplink {
                interface: "hi0".into(),
                ifindex: high,
                addresses: vec![IpAddr::V4(HIGH_V4)],
                allow: vec![],
                enforcement: mhr_userspace::guard::Enforcement::DropSpoofed,
                l3: false,
                steer_to: Default::default(),
            });
            f.guard.configure(&uplinks).expect("maps filled");
            let slot = f.slot("hi0");
            let counts = |f: &Fixture| f.guard.maps.verdict_counts(slot).unwrap();
            let frame = |source| frames::ipv4(source, PEER_V4, UDP, &[]);
            assert_eq!(f.try_run_on(high, &frame(HIGH_V4)), Some(TCX_NEXT));
            assert_eq!(f.try_run_on(high, &frame(ENS3_V4)), Some(TCX_NEXT));
            assert_eq!(f.try_run_on(high, &frame(FOREIGN_V4)), Some(TC_ACT_SHOT), "spoofed dropped on hi0");
            let seen = counts(&f);
            for verdict in [Verdict::Ok, Verdict::Asymmetric, Verdict::Spoofed] {
                assert_eq!(seen.get(PacketFamily::Ipv4, verdict).packets, 1, "{verdict:?} on hi0");
            }

            uplinks.pop();
            f.guard.configure(&uplinks).expect("hi0 removed");
            assert_eq!(f.try_run_on(high, &frame(FOREIGN_V4)), Some(TCX_NEXT), "no longer guarded");
            assert_eq!(counts(&f), seen, "nothing counted for a removed uplink");
        })
        .unwrap();
}

/// An uplink dropped from the set stops being guarded at once: its array
/// entry is disabled, not left enforcing for an interface mhr no longer
/// manages.
#[test]
fn an_uplink_removed_from_the_set_is_no_longer_guarded() {
    in_quiet_host(|| {
        let mut f = Fixture::new(true);
        let ens4 = interface_index("ens4").unwrap();
        let spoofed = frames::ipv4(FOREIGN_V4, PEER_V4, UDP, &[]);
        assert_eq!(f.try_run_on(ens4, &spoofed), Some(TC_ACT_SHOT), "guarded while an uplink");
        let slot = f.slot("ens4");
        let mut uplinks = common::guard::uplinks(true);
        uplinks.retain(|uplink| uplink.interface != "ens4");
        f.guard.configure(&uplinks).expect("ens4 removed");
        let before = f.guard.maps.verdict_counts(slot).unwrap();
        assert_eq!(f.try_run_on(ens4, &spoofed), Some(TCX_NEXT), "passed once removed");
        assert_eq!(f.guard.maps.verdict_counts(slot).unwrap(), before, "and not counted");
        assert_eq!(f.run(&spoofed), TC_ACT_SHOT, "ens3 still guarded");
    });
}

/// The first 8 IPv4 and 4 IPv6 own addresses sit inline in the uplink's
/// entry (the fast path); the rest are found through the owner maps.
#[test]
fn own_addresses_beyond_the_inline_ones_are_found_through_the_owner_maps() {
    in_quiet_host(|| {
        let mut f = Fixture::new(true);
        let v4: Vec<Ipv4Addr> = (1..=10).map(|i| Ipv4Addr::new(10, 0, 3, 100 + i)).collect();
        let v6: Vec<Ipv6Addr> = (1..=6).map(|i| Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 1, i)).collect();
        let mut uplinks = common::guard::uplinks(true);
        uplinks[0].addresses =
            v4.iter().copied().map(IpAddr::V4).chain(v6.iter().copied().map(IpAddr::V6)).collect();
        f.guard.configure(&uplinks).expect("maps filled");
        let entry = f.guard.maps.uplinks.get(&f.ens3, 0).expect("ens3's entry");
        assert_eq!((entry.v4_count, entry.v6_count), (8, 4), "inline counts");
        let inline_v4: Vec<Ipv4Addr> =
            entry.v4.iter().map(|word| Ipv4Addr::from(word.to_ne_bytes())).collect();
        assert_eq!(inline_v4, v4[..8]);
        let wanted_v6: Vec<[u64; 2]> = v6[..4].iter().map(|address| ipv6_words(address.octets())).collect();
        assert_eq!(entry.v6.to_vec(), wanted_v6);
        for source in [v4[0], v4[7], v4[8], v4[9]] {
            expect(
                &mut f,
                &frames::ipv4(source, PEER_V4, UDP, &[]),
                PacketFamily::Ipv4,
                Verdict::Ok,
                TCX_NEXT,
            );
        }
        for source in [v6[0], v6[3], v6[4], v6[5]] {
            let frame = frames::ipv6(source, PEER_V6, UDP, false, &[]);
            expect(&mut f, &frame, PacketFamily::Ipv6, Verdict::Ok, TCX_NEXT);
        }
    });
}
