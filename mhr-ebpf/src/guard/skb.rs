//! The skb as a [`Packet`] for the shared parser in `mhr_common::packet`:
//! direct access where the linear data holds the bytes,
//! `bpf_skb_load_bytes` otherwise.

use aya_ebpf::programs::TcContext;
use mhr_common::packet::{Packet, Plain, Window};

pub struct Skb<'a>(pub &'a TcContext);

/// The start of the linear data, checked to hold the window's length.
pub struct Linear(usize);

impl Window for Linear {
    #[inline(always)]
    unsafe fn get<T: Plain>(&self, offset: usize) -> T {
        // SAFETY: the caller keeps within the length `window` checked
        // against data_end.
        unsafe { core::ptr::read_unaligned((self.0 + offset) as *const T) }
    }
}

impl Packet for Skb<'_> {
    type Window = Linear;

    #[inline(always)]
    fn length(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn window(&self, len: usize) -> Option<Linear> {
        let start = self.0.data();
        if start + len <= self.0.data_end() { Some(Linear(start)) } else { None }
    }

    #[inline(always)]
    fn read<T: Plain>(&self, offset: usize) -> Option<T> {
        let start = self.0.data();
        let size = core::mem::size_of::<T>();
        if start + offset + size <= self.0.data_end() {
            // SAFETY: bounds checked against data_end just above.
            Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
        } else {
            // Non-linear data, or really too short (then this fails too).
            self.0.load::<T>(offset).ok()
        }
    }

    #[inline(always)]
    fn load<T: Plain>(&self, offset: usize) -> Option<T> {
        self.0.load::<T>(offset).ok()
    }

    #[inline(always)]
    fn protocol(&self) -> u16 {
        // SAFETY: reading a field of the context the kernel handed us. The
        // protocol is a big-endian 16-bit value in a 32-bit field.
        u16::from_be(unsafe { (*self.0.skb.skb).protocol } as u16)
    }

    #[inline(always)]
    fn offloaded_vlan_tci(&self) -> Option<u16> {
        // SAFETY: reading fields of the context the kernel handed us.
        unsafe {
            let skb = self.0.skb.skb;
            if (*skb).vlan_present != 0 { Some((*skb).vlan_tci as u16) } else { None }
        }
    }
}
