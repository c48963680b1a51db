//! mhr's TC egress classifier: counts packets and bytes per interface.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use mhr_common::{InterfaceCounters, MAX_IFINDEX, TCX_NEXT, counter_slot};

#[map(name = "MHR_IF_COUNTERS")]
static IF_COUNTERS: PerCpuArray<InterfaceCounters> = PerCpuArray::with_max_entries(MAX_IFINDEX, 0);

/// Never ends the chain: other TCX programs after this one still run.
#[classifier]
pub fn mhr_egress(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel handed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(counters) = IF_COUNTERS.get_ptr_mut(counter_slot(ifindex)) {
        // SAFETY: per-CPU slot of a pre-allocated array; only this CPU writes it.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += u64::from(ctx.len());
        }
    }
    TCX_NEXT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic.
    unsafe { core::hint::unreachable_unchecked() }
}
