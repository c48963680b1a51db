//! Types shared by mhr's eBPF programs and its userspace.
//!
//! Everything here is `#[repr(C)]`, fixed width and free of implicit padding:
//! the kernel and userspace read the same bytes.
#![cfg_attr(target_arch = "bpf", no_std)]

use core::mem::size_of;

pub mod guard;
pub mod packet;

/// Name of the egress classifier program in the eBPF object.
pub const EGRESS_PROGRAM: &str = "mhr_egress";

/// Name of the per-CPU array of per-interface counters, indexed by ifindex.
pub const INTERFACE_COUNTERS_MAP: &str = "MHR_IF_COUNTERS";

/// Slots in [`INTERFACE_COUNTERS_MAP`]. Interfaces with an ifindex at or above
/// this bound are counted in [`OVERFLOW_SLOT`] rather than lost.
pub const MAX_IFINDEX: u32 = 4096;

/// Slot 0 is never a real interface (ifindexes start at 1), so it collects
/// packets from interfaces whose ifindex does not fit the array.
pub const OVERFLOW_SLOT: u32 = 0;

/// TCX verdict "continue with the next program in the chain". `TC_ACT_OK`
/// and `TC_ACT_PIPE` would end a TCX chain; under clsact direct-action this
/// value is `TC_ACT_UNSPEC`, which also passes the packet on.
pub const TCX_NEXT: i32 = -1;

/// Packets and bytes seen on one interface (one CPU's share in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub packets: u64,
    /// Bytes as the kernel sees them at TC egress: from the Ethernet header on.
    pub bytes: u64,
}

const _: () = assert!(size_of::<InterfaceCounters>() == 16);

impl InterfaceCounters {
    /// Adds another CPU's share.
    pub fn merge(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// The array slot a packet on `ifindex` is counted in.
#[inline(always)]
pub fn counter_slot(ifindex: u32) -> u32 {
    if ifindex < MAX_IFINDEX { ifindex } else { OVERFLOW_SLOT }
}

#[cfg(feature = "user")]
// SAFETY: plain old data, repr(C), no padding (size asserted above).
unsafe impl aya::Pod for InterfaceCounters {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_small_ifindexes_and_fold_large_ones_into_overflow() {
        assert_eq!(counter_slot(1), 1);
        assert_eq!(counter_slot(MAX_IFINDEX - 1), MAX_IFINDEX - 1);
        assert_eq!(counter_slot(MAX_IFINDEX), OVERFLOW_SLOT);
        assert_eq!(counter_slot(u32::MAX), OVERFLOW_SLOT);
    }

    #[test]
    fn merging_sums_each_field() {
        let a = InterfaceCounters { packets: 2, bytes: 100 };
        let b = InterfaceCounters { packets: 3, bytes: 60 };
        assert_eq!(a.merge(b), InterfaceCounters { packets: 5, bytes: 160 });
    }
}
