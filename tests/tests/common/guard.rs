//! A loaded guard for the ens3/ens4 uplinks of a quiet host, run through
//! BPF_PROG_TEST_RUN.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun as _, TestRunOptions};
use mhr_common::guard::{Count, GUARD_PROGRAM, PacketFamily, Verdict};
use mhr_tests::{quiet_host::QuietHost, require_root};
use mhr_userspace::{
    guard::tc::interface_index,
    guard::{
        Enforcement, Guard, GuardMaps, GuardUplink, SteerRoute, VerdictCounts, flags::FlaggedPacket, teardown,
    },
};

pub const ENS3_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 10);
pub const ENS4_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 4, 10);
pub const FOREIGN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
pub const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
pub const ENS3_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10);
pub const ENS4_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, 0, 0x10);
pub const FOREIGN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x66, 0, 0, 0, 0, 1);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 5);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loaded guard for ens3/ens4 of a quiet host, pinned in its own bpffs
/// directory (removed on drop).
pub struct Fixture {
    pub guard: Guard,
    pub pin_dir: PathBuf,
    pub ens3: u32,
}

/// ens3 (with an `allow` prefix) and ens4, each with one IPv4 and one IPv6
/// address.
pub fn uplinks(enforce: bool) -> Vec<GuardUplink> {
    uplinks_in(if enforce { Enforcement::DropSpoofed } else { Enforcement::Monitor }, SteerRoute::default())
}

/// The same, in `enforcement`, ens4 taking steered packets as `ens4_steer` says.
pub fn uplinks_in(enforcement: Enforcement, ens4_steer: SteerRoute) -> Vec<GuardUplink> {
    let uplink = |interface: &str, v4, v6, allow: &[&str], steer_to| GuardUplink {
        interface: interface.into(),
        ifindex: interface_index(interface).unwrap(),
        addresses: vec![IpAddr::V4(v4), IpAddr::V6(v6)],
        allow: allow.iter().map(|prefix| prefix.parse().unwrap()).collect(),
        enforcement,
        l3: false,
        steer_to,
    };
    vec![
        uplink("ens3", ENS3_V4, ENS3_V6, &["198.18.0.0/15"], SteerRoute::default()),
        uplink("ens4", ENS4_V4, ENS4_V6, &[], ens4_steer),
    ]
}

impl Fixture {
    pub fn new(enforce: bool) -> Self {
        Self::with(uplinks(enforce))
    }

    pub fn with(uplinks: Vec<GuardUplink>) -> Self {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/mhr-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut guard = Guard::load(&pin_dir).expect("guard loads");
        let ens3 = uplinks[0].ifindex;
        guard.configure(&uplinks).expect("maps filled");
        Self { guard, pin_dir, ens3 }
    }

    /// Runs the guard on `frame` as egress of ens3; returns its verdict code.
    pub fn run(&mut self, frame: &[u8]) -> i32 {
        let len = frame.len();
        self.try_run(frame).unwrap_or_else(|| panic!("the kernel refused a {len}-byte test frame"))
    }

    /// Like `run`; `None` when the kernel refuses the frame (BPF_PROG_TEST_RUN
    /// wants a whole IP header behind an IPv4/IPv6 EtherType).
    pub fn try_run(&mut self, frame: &[u8]) -> Option<i32> {
        self.try_run_on(self.ens3, frame)
    }

    /// Like `try_run`, as egress of the interface `ifindex`.
    pub fn try_run_on(&mut self, ifindex: u32, frame: &[u8]) -> Option<i32> {
        let mut context = [0u8; 44];
        context[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let options = TestRunOptions { data_in: Some(frame), ctx_in: Some(&context), ..Default::default() };
        let program = self.guard.program(GUARD_PROGRAM).unwrap();
        match program.test_run(options) {
            Ok(result) => Some(result.return_value as i32),
            Err(aya::programs::ProgramError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                None
            }
            Err(err) => panic!("test run: {err}"),
        }
    }

    pub fn counts(&self) -> VerdictCounts {
        self.guard.maps.verdict_counts(self.slot("ens3")).unwrap()
    }

    pub fn slot(&self, name: &str) -> u32 {
        self.guard.maps.slot_of(name).unwrap().expect("slot assigned")
    }

    pub fn flags(&self) -> Vec<FlaggedPacket> {
        let names: BTreeMap<u32, String> = self.guard.maps.slot_names().unwrap();
        let mut ring = GuardMaps::flags_from_pins(&self.pin_dir).unwrap();
        let mut flagged = Vec::new();
        while let Some(item) = ring.next() {
            flagged.push(FlaggedPacket::decode(&item, &names).expect("whole record"));
        }
        flagged
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = teardown(&self.pin_dir, &[]);
    }
}

pub fn in_quiet_host(test: impl FnOnce() + Send) {
    require_root();
    let host = QuietHost::start(&["ens3", "ens4"]).expect("host starts");
    host.host.run(test).unwrap();
}

/// Runs `frame` and asserts the verdict counter it lands in moved by exactly
/// one packet of the frame's length, and nothing else did.
pub fn expect(fixture: &mut Fixture, frame: &[u8], family: PacketFamily, verdict: Verdict, code: i32) {
    let before = fixture.counts();
    assert_eq!(fixture.run(frame), code, "{family:?} {verdict:?}");
    let after = fixture.counts();
    for f in PacketFamily::ALL {
        for v in Verdict::ALL {
            let delta = Count {
                packets: after.get(f, v).packets - before.get(f, v).packets,
                bytes: after.get(f, v).bytes - before.get(f, v).bytes,
            };
            let wanted = if (f, v) == (family, verdict) {
                Count { packets: 1, bytes: frame.len() as u64 }
            } else {
                Count::default()
            };
            assert_eq!(delta, wanted, "counter {f:?}/{v:?} after a {family:?} {verdict:?} frame");
        }
    }
}
