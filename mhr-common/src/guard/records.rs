//! The guard's records: allow-prefix keys, offenders and the flag ring's
//! records, and the flag budget.

use core::mem::size_of;

/// LPM key for the IPv4 allow prefixes: the slot scopes the prefix to one
/// uplink (prefix length = 32 + prefix bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowV4 {
    pub slot: [u8; 4],
    pub address: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowV6 {
    pub slot: [u8; 4],
    pub address: [u8; 16],
}

const _: () = assert!(size_of::<AllowV4>() == 8);
const _: () = assert!(size_of::<AllowV6>() == 20);

/// Offender key: which uplink saw which source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OffenderKey {
    pub slot: u32,
    /// [`PacketFamily`](super::PacketFamily) as u8.
    pub family: u8,
    pub _pad: [u8; 3],
    /// IPv4 in the first four bytes, the rest zero.
    pub source: [u8; 16],
}

const _: () = assert!(size_of::<OffenderKey>() == 24);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offender {
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// [`Verdict`](super::Verdict) as u8.
    pub verdict: u8,
    pub _pad: [u8; 7],
}

const _: () = assert!(size_of::<Offender>() == 40);

/// One flagged packet, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagRecord {
    pub ifindex: u32,
    pub slot: u32,
    pub length: u32,
    pub source_port: u16,
    pub destination_port: u16,
    /// [`Verdict`](super::Verdict) as u8.
    pub verdict: u8,
    /// [`PacketFamily`](super::PacketFamily) as u8.
    pub family: u8,
    /// IP protocol (next header for IPv6); 0 when unknown.
    pub protocol: u8,
    /// 1 when the packet was dropped.
    pub dropped: u8,
    /// Outer VLAN id (in-band or offloaded), 0 when untagged.
    pub vlan: u16,
    pub _pad: u16,
    pub source: [u8; 16],
    pub destination: [u8; 16],
}

const _: () = assert!(size_of::<FlagRecord>() == 56);

/// One uplink's flag budget on one CPU: records emitted in the current
/// one-second window, and all-time emitted / suppressed counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagBudget {
    pub window_start_ns: u64,
    pub window_emitted: u64,
    /// Flag records written to the ring buffer.
    pub emitted: u64,
    /// Flag records not written (rate limit or full ring).
    pub suppressed: u64,
}

const _: () = assert!(size_of::<FlagBudget>() == 32);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: repr(C) plain old data with explicit padding (sizes asserted
    // above).
    unsafe impl aya::Pod for AllowV4 {}
    unsafe impl aya::Pod for AllowV6 {}
    unsafe impl aya::Pod for OffenderKey {}
    unsafe impl aya::Pod for Offender {}
    unsafe impl aya::Pod for FlagRecord {}
    unsafe impl aya::Pod for FlagBudget {}
}
