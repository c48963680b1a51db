//! The source guard's shared types: per-uplink configuration, verdicts,
//! counter layout and steer targets; the records in `records`.

use core::mem::size_of;

mod records;
pub mod tcp;

pub use records::*;

/// The guard program in the eBPF object.
pub const GUARD_PROGRAM: &str = "mhr_guard";
/// An egress classifier that does nothing: the benchmarks' baseline.
pub const EMPTY_PROGRAM: &str = "mhr_empty";

/// Map names (the pins under the bpffs directory carry the same names).
pub const UPLINKS_MAP: &str = "MHR_UPLINKS";
pub const UPLINKS_HIGH_MAP: &str = "MHR_UPLINKS_HIGH";
pub const SLOT_NAMES_MAP: &str = "MHR_SLOT_NAMES";
pub const OWNERS_V4_MAP: &str = "MHR_OWNERS_V4";
pub const OWNERS_V6_MAP: &str = "MHR_OWNERS_V6";
pub const ALLOW_V4_MAP: &str = "MHR_ALLOW_V4";
pub const ALLOW_V6_MAP: &str = "MHR_ALLOW_V6";
pub const VERDICT_COUNTERS_MAP: &str = "MHR_VERDICTS";
pub const EVENT_COUNTERS_MAP: &str = "MHR_EVENTS";
pub const OFFENDERS_MAP: &str = "MHR_OFFENDERS";
pub const FLAGS_MAP: &str = "MHR_FLAGS";
pub const FLAG_BUDGET_MAP: &str = "MHR_FLAG_BUDGET";
pub const STEER_MAP: &str = "MHR_STEER";

/// Bumped whenever a map's layout changes: it is part of the pin path, so
/// a new layout never reuses a pinned map of the old one.
pub const MAP_LAYOUT_VERSION: u32 = 2;

/// Uplinks the guard can tell apart (counter slots).
pub const MAX_UPLINKS: u32 = 64;
/// Own addresses compared inline, without a map lookup; more go to the
/// owner maps, which the mismatch path consults.
pub const INLINE_V4: usize = 8;
pub const INLINE_V6: usize = 4;
/// Bounds of the lookup maps.
pub const MAX_OWNERS: u32 = 4096;
pub const MAX_ALLOW: u32 = 1024;
pub const MAX_OFFENDERS: u32 = 1024;
pub const MAX_HIGH_IFINDEXES: u32 = 256;
pub const FLAGS_RING_BYTES: u32 = 256 * 1024;
/// Flag records each CPU may emit per second and uplink; the rest are
/// counted as suppressed.
pub const FLAGS_PER_CPU_PER_SECOND: u64 = 200;
/// At most this many VLAN tags are parsed in-band (802.1Q / 802.1ad).
pub const MAX_VLAN_TAGS: usize = 2;
/// At most this many IPv6 extension headers are walked to find the ports.
pub const MAX_IPV6_EXTENSIONS: usize = 6;

/// TC verdict that drops the packet (TCX_DROP has the same value).
pub const TC_ACT_SHOT: i32 = 2;
/// TC verdict of a redirect (TCX_REDIRECT has the same value).
pub const TC_ACT_REDIRECT: i32 = 7;
/// `skb->tc_index` of a packet the guard steered to the interface
/// `ifindex`: the owner's guard sees it again on its egress and passes it
/// uncounted (it was counted once, as steered). Tied to the target, so a
/// packet seen again where it was caught (BPF_PROG_TEST_RUN's repeats) is
/// still judged. tc_index only fed the tcindex classifier and dsmark
/// qdisc, which Linux 6.3 removed.
#[inline(always)]
pub fn steered_mark(ifindex: u32) -> u32 {
    0x8000 | (ifindex & 0x7fff)
}

/// What the guard concluded about one egress packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// The source belongs to this uplink (or its `allow` prefixes).
    Ok = 0,
    /// Unspecified or IPv6 link-local source (DHCP, ND, MLD).
    Exempt = 1,
    /// The source belongs to another managed uplink: a routing bug.
    Asymmetric = 2,
    /// The source belongs to no managed uplink.
    Spoofed = 3,
    NonIp = 4,
    /// Truncated or malformed headers; passed.
    Malformed = 5,
    /// Asymmetric, and redirected (steer mode) to the uplink that owns the
    /// source; counted on the uplink the routing sent it to, not again on
    /// its owner.
    Steered = 6,
    /// Asymmetric in steer mode but not steerable (the owner is down or
    /// has no gateway, or the frame is VLAN-tagged): passed, or dropped
    /// with `enforce_asymmetric`.
    SteerFailed = 7,
}

pub const VERDICTS: usize = 8;

impl Verdict {
    pub const ALL: [Self; VERDICTS] = [
        Self::Ok,
        Self::Exempt,
        Self::Asymmetric,
        Self::Spoofed,
        Self::NonIp,
        Self::Malformed,
        Self::Steered,
        Self::SteerFailed,
    ];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Exempt => "exempt",
            Self::Asymmetric => "asymmetric",
            Self::Spoofed => "spoofed",
            Self::NonIp => "non_ip",
            Self::Malformed => "malformed",
            Self::Steered => "steered",
            Self::SteerFailed => "steer_failed",
        }
    }

    /// Verdicts that are flagged and tracked as offenders.
    pub fn is_offence(self) -> bool {
        matches!(self, Self::Asymmetric | Self::Spoofed | Self::Steered | Self::SteerFailed)
    }
}

/// Address family dimension of the counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PacketFamily {
    Ipv4 = 0,
    Ipv6 = 1,
    /// Not IP, or too short to tell.
    Other = 2,
}

pub const FAMILIES: usize = 3;

impl PacketFamily {
    pub const ALL: [Self; FAMILIES] = [Self::Ipv4, Self::Ipv6, Self::Other];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Other => "other",
        }
    }
}

/// Index into the per-CPU verdict counters.
#[inline(always)]
pub fn verdict_slot(uplink: u32, family: PacketFamily, verdict: Verdict) -> u32 {
    uplink * (FAMILIES * VERDICTS) as u32 + family as u32 * VERDICTS as u32 + verdict as u32
}

pub const VERDICT_SLOTS: u32 = MAX_UPLINKS * (FAMILIES * VERDICTS) as u32;

/// Per-uplink events other than verdicts (flag counts live with the flag
/// budget, which the flag path reads anyway).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Packets dropped in enforce mode.
    Dropped = 0,
    /// Internal errors (a map the program needs failed); the packet passed.
    Errors = 1,
}

pub const EVENTS: usize = 2;
pub const EVENT_SLOTS: u32 = MAX_UPLINKS * EVENTS as u32;

impl Event {
    pub const ALL: [Self; EVENTS] = [Self::Dropped, Self::Errors];
}

#[inline(always)]
pub fn event_slot(uplink: u32, event: Event) -> u32 {
    uplink * EVENTS as u32 + event as u32
}

/// Guard settings of one uplink, indexed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkGuard {
    /// 1 when this interface is a guarded uplink.
    pub enabled: u8,
    /// 1 in enforce mode (drop spoofed).
    pub enforce: u8,
    /// 1 to drop asymmetric too (enforce mode only).
    pub enforce_asymmetric: u8,
    pub v4_count: u8,
    pub v6_count: u8,
    /// 1 when the uplink has IPv4 / IPv6 `allow` prefixes (else the trie
    /// lookup is skipped).
    pub allow_v4: u8,
    pub allow_v6: u8,
    /// 1 when packets start at the IP header (tun, WireGuard, PPP, raw-IP
    /// modems, IP tunnels): the skb's protocol says which family.
    pub l3: u8,
    /// Counter slot (0..MAX_UPLINKS).
    pub slot: u32,
    /// 1 in steer mode: asymmetric packets go to their owner ([`SteerTarget`]).
    pub steer: u8,
    pub _pad2: [u8; 3],
    /// Own IPv4 addresses, network byte order as in the packet.
    pub v4: [u32; INLINE_V4],
    /// Own IPv6 addresses as two native-endian words of the packet bytes
    /// (`u64::from_ne_bytes` of bytes 0..8 and 8..16), compared as loaded.
    pub v6: [[u64; 2]; INLINE_V6],
}

const _: () = assert!(size_of::<UplinkGuard>() == 16 + 4 * INLINE_V4 + 16 * INLINE_V6);

/// An IPv6 address as the two words the guard compares.
pub fn ipv6_words(octets: [u8; 16]) -> [u64; 2] {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&octets[..8]);
    low.copy_from_slice(&octets[8..]);
    [u64::from_ne_bytes(high), u64::from_ne_bytes(low)]
}

impl UplinkGuard {
    pub const DISABLED: Self = Self {
        enabled: 0,
        enforce: 0,
        enforce_asymmetric: 0,
        v4_count: 0,
        v6_count: 0,
        allow_v4: 0,
        allow_v6: 0,
        l3: 0,
        slot: 0,
        steer: 0,
        _pad2: [0; 3],
        v4: [0; INLINE_V4],
        v6: [[0; 2]; INLINE_V6],
    };
}

/// Where steer mode sends an asymmetric packet whose source an uplink
/// owns, indexed by the owner's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerTarget {
    pub ifindex: u32,
    /// 1 when IPv4 / IPv6 packets may be steered here (the uplink is up,
    /// healthy for the family and has a gateway or needs none).
    pub v4: u8,
    pub v6: u8,
    /// 1 for an L3 uplink (bpf_redirect, no neighbour).
    pub l3: u8,
    pub _pad: u8,
    /// Gateways, network byte order (unused on L3 uplinks).
    pub gateway_v4: [u8; 4],
    pub gateway_v6: [u8; 16],
}

const _: () = assert!(size_of::<SteerTarget>() == 28);

impl SteerTarget {
    pub const NONE: Self =
        Self { ifindex: 0, v4: 0, v6: 0, l3: 0, _pad: 0, gateway_v4: [0; 4], gateway_v6: [0; 16] };
}

/// Packets and bytes (one CPU's share).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(size_of::<Count>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all of these are repr(C) plain old data with explicit padding
    // (sizes asserted above).
    unsafe impl aya::Pod for UplinkGuard {}
    unsafe impl aya::Pod for Count {}
    unsafe impl aya::Pod for SteerTarget {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_slots_are_dense_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for uplink in 0..MAX_UPLINKS {
            for family in PacketFamily::ALL {
                for verdict in Verdict::ALL {
                    let slot = verdict_slot(uplink, family, verdict);
                    assert!(slot < VERDICT_SLOTS);
                    assert!(seen.insert(slot));
                }
            }
        }
        assert_eq!(seen.len() as u32, VERDICT_SLOTS);
    }

    #[test]
    fn enums_round_trip_through_u8() {
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::from_u8(verdict as u8), Some(verdict));
        }
        for family in PacketFamily::ALL {
            assert_eq!(PacketFamily::from_u8(family as u8), Some(family));
        }
        assert_eq!(Verdict::from_u8(8), None);
    }
}
