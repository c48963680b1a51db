//! The kernel against the host model, frame by frame: 100,000 seeded random
//! frames (well-formed, mutated, truncated, over-long chains, random bytes)
//! through the loaded guard with BPF_PROG_TEST_RUN in enforce mode. For
//! each, the verdict counters, the return code and the flag record must be
//! what the shared parser (`mhr_common::packet`, run on the host) and a
//! plain model of the guard's classification say.
//!
//! `MHR_DIFFERENTIAL_SEED` and `MHR_DIFFERENTIAL_FRAMES` replay or widen
//! the run; a failure prints the seed, the frame's index and its bytes.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::RingBuf;
use common::guard::*;
use mhr_common::{
    TCX_NEXT,
    guard::{Count, FlagRecord, PacketFamily, TC_ACT_SHOT, Verdict},
    packet::{self, Frame, Parsed, Source},
};
use mhr_tests::frames::{self as generated, Sources};
use mhr_userspace::guard::GuardMaps;

const DEFAULT_SEED: u64 = 0x6d68_725f_6469_6666;
const DEFAULT_FRAMES: usize = 100_000;
/// Offences between flag budget resets: under the 200 a CPU may flag per
/// second, so that every offence writes its record.
const OFFENCES_PER_BUDGET: usize = 150;

/// What the guard must do with one frame.
#[derive(Debug, PartialEq)]
struct Outcome {
    family: PacketFamily,
    verdict: Verdict,
    code: i32,
    flag: Option<FlagRecord>,
}

/// The host model: the shared parser, then the guard's classification for
/// the fixture's uplinks (ens3 in enforce mode, allow 198.18.0.0/15).
fn model(bytes: &[u8], ens3: u32, slot: u32) -> Outcome {
    let frame = Frame::ethernet(bytes);
    let parsed = packet::parse(&frame);
    let (family, verdict, source) = match &parsed {
        Parsed::NonIp => (PacketFamily::Other, Verdict::NonIp, [0; 16]),
        Parsed::Malformed(family) => (*family, Verdict::Malformed, [0; 16]),
        Parsed::TooManyTags => (PacketFamily::Other, Verdict::Malformed, [0; 16]),
        Parsed::Ip { source: Source::V4(raw), .. } => {
            let octets = raw.to_ne_bytes();
            let mut source = [0; 16];
            source[..4].copy_from_slice(&octets);
            (PacketFamily::Ipv4, classify_v4(Ipv4Addr::from(octets)), source)
        }
        Parsed::Ip { source: Source::V6(words), .. } => {
            let mut source = [0; 16];
            source[..8].copy_from_slice(&words[0].to_ne_bytes());
            source[8..].copy_from_slice(&words[1].to_ne_bytes());
            (PacketFamily::Ipv6, classify_v6(Ipv6Addr::from(source)), source)
        }
    };
    let dropped = verdict == Verdict::Spoofed || matches!(parsed, Parsed::TooManyTags);
    let flag = verdict.is_offence().then(|| {
        let details = packet::details(&frame, &parsed);
        FlagRecord {
            ifindex: ens3,
            slot,
            length: bytes.len() as u32,
            source_port: details.source_port,
            destination_port: details.destination_port,
            verdict: verdict as u8,
            family: family as u8,
            protocol: details.protocol,
            dropped: u8::from(dropped),
            vlan: packet::vlan(&frame, &parsed),
            _pad: 0,
            source,
            destination: details.destination,
        }
    });
    Outcome { family, verdict, code: if dropped { TC_ACT_SHOT } else { TCX_NEXT }, flag }
}

fn classify_v4(source: Ipv4Addr) -> Verdict {
    let allowed = u32::from(source) & 0xfffe_0000 == u32::from(Ipv4Addr::new(198, 18, 0, 0));
    match source {
        Ipv4Addr::UNSPECIFIED => Verdict::Exempt,
        ENS3_V4 => Verdict::Ok,
        _ if allowed => Verdict::Ok,
        ENS4_V4 => Verdict::Asymmetric,
        _ => Verdict::Spoofed,
    }
}

fn classify_v6(source: Ipv6Addr) -> Verdict {
    match source {
        Ipv6Addr::UNSPECIFIED => Verdict::Exempt,
        _ if source.segments()[0] & 0xffc0 == 0xfe80 => Verdict::Exempt,
        ENS3_V6 => Verdict::Ok,
        ENS4_V6 => Verdict::Asymmetric,
        _ => Verdict::Spoofed,
    }
}

/// What the kernel did: the one counter that moved, the code, the record.
fn observe(fixture: &mut Fixture, ring: &mut RingBuf<aya::maps::MapData>, bytes: &[u8]) -> Option<Outcome> {
    let before = fixture.counts();
    let code = fixture.try_run(bytes)?;
    let after = fixture.counts();
    let mut moved = Vec::new();
    for family in PacketFamily::ALL {
        for verdict in Verdict::ALL {
            let (a, b) = (after.get(family, verdict), before.get(family, verdict));
            let delta = Count { packets: a.packets - b.packets, bytes: a.bytes - b.bytes };
            if delta != Count::default() {
                moved.push((family, verdict, delta));
            }
        }
    }
    let [(family, verdict, delta)] = moved[..] else { panic!("not exactly one counter moved: {moved:?}") };
    assert_eq!(
        delta,
        Count { packets: 1, bytes: bytes.len() as u64 },
        "{family:?}/{verdict:?} moved by one frame"
    );
    let mut records = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<FlagRecord>(), "a whole flag record");
        // SAFETY: FlagRecord is plain old data of exactly this size.
        records.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlagRecord>()) });
    }
    assert!(records.len() <= 1, "one frame, one flag record at most: {records:?}");
    Some(Outcome { family, verdict, code, flag: records.pop() })
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[test]
fn kernel_verdicts_and_flag_records_match_the_host_model() {
    let seed = env_or("MHR_DIFFERENTIAL_SEED", DEFAULT_SEED);
    let count = env_or("MHR_DIFFERENTIAL_FRAMES", DEFAULT_FRAMES);
    in_quiet_host(|| {
        let mut fixture = Fixture::new(true);
        let slot = fixture.slot("ens3");
        let mut ring = GuardMaps::flags_from_pins(&fixture.pin_dir).expect("flag ring");
        let sources = Sources {
            v4: vec![ENS3_V4.octets(), ENS4_V4.octets(), ALLOWED_V4.octets(), FOREIGN_V4.octets()],
            v6: vec![ENS3_V6.octets(), ENS4_V6.octets(), FOREIGN_V6.octets()],
        };
        let (mut compared, mut refused, mut offences) = (0usize, 0usize, 0usize);
        let mut seen = std::collections::BTreeSet::new();
        let frames = generated::sample(generated::any_frame(&sources), seed, usize::MAX);
        for (index, bytes) in frames.enumerate() {
            if compared == count {
                break;
            }
            let wanted = model(&bytes, fixture.ens3, slot);
            if wanted.flag.is_some() {
                offences += 1;
                if offences.is_multiple_of(OFFENCES_PER_BUDGET) {
                    fixture.guard.maps.clear_slot(slot).expect("slot cleared");
                }
            }
            let Some(got) = observe(&mut fixture, &mut ring, &bytes) else {
                // The kernel refuses frames shorter than an Ethernet header
                // or an IP header behind an IP EtherType.
                refused += 1;
                continue;
            };
            assert!(
                got == wanted,
                "seed {seed:#x}, frame {index} ({} bytes: {bytes:02x?}):\n kernel {got:?}\n model  {wanted:?}",
                bytes.len()
            );
            seen.insert((wanted.family, wanted.verdict));
            compared += 1;
        }
        println!(
            "{compared} frames compared, {refused} refused by the kernel, {offences} offences; seed {seed:#x}"
        );
        assert_eq!(compared, count);
        assert!(refused < count / 10, "most frames reach the program: {refused} refused");
        // The sample is varied enough to matter: every verdict of both
        // families and the non-IP/malformed ones.
        for family in [PacketFamily::Ipv4, PacketFamily::Ipv6] {
            for verdict in
                [Verdict::Ok, Verdict::Exempt, Verdict::Asymmetric, Verdict::Spoofed, Verdict::Malformed]
            {
                assert!(seen.contains(&(family, verdict)), "no {family:?} {verdict:?} frame in the sample");
            }
        }
        assert!(seen.contains(&(PacketFamily::Other, Verdict::NonIp)));
        assert!(seen.contains(&(PacketFamily::Other, Verdict::Malformed)));
    });
}
