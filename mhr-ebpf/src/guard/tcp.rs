//! Passive TCP quality: the kernel's `tcp_probe` (every segment an
//! established connection receives, with its smoothed round trip) and
//! `tcp_retransmit_skb` tracepoints, attributed to the uplink that owns
//! the connection's local address. Connections on no uplink's address cost
//! one hash lookup and are not counted.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray},
    programs::TracePointContext,
};
use mhr_common::{
    guard::{
        MAX_UPLINKS, PacketFamily, ipv6_words,
        tcp::{TcpRtt, TcpTraceLayout, rtt_bucket},
    },
    packet::{Packet as _, Parsed},
};

use crate::{OWNERS_V4, OWNERS_V6, skb::Skb};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[map(name = "MHR_TCP_LAYOUT")]
static TCP_LAYOUT: Array<TcpTraceLayout> = Array::pinned(1, 0);
/// Per uplink (slot) and CPU.
#[map(name = "MHR_TCP_RTT")]
static TCP_RTT: PerCpuArray<TcpRtt> = PerCpuArray::pinned(MAX_UPLINKS, 0);
#[map(name = "MHR_TCP_RETRANS")]
static TCP_RETRANSMITS: PerCpuArray<u64> = PerCpuArray::pinned(MAX_UPLINKS, 0);
/// TCP segments the host's own connections sent from each uplink's
/// addresses (the guard's `ok` packets that carry TCP and a socket, a GSO
/// packet as its segments), per CPU: the retransmission ratio's
/// denominator. Counted only while the tracepoints are attached.
#[map(name = "MHR_TCP_SENT")]
static TCP_SENT: PerCpuArray<u64> = PerCpuArray::pinned(MAX_UPLINKS, 0);

const IPPROTO_TCP: u8 = 6;

/// Counts a packet the guard passed as the uplink's own when it is TCP
/// (the IP header's protocol: an IPv6 segment behind extension headers is
/// not counted, as the kernel's TCP stack never sends one).
#[inline(always)]
pub fn count_sent(skb: &Skb, parsed: &Parsed, family: PacketFamily, slot: u32) {
    let Some(layout) = TCP_LAYOUT.get(0) else { return };
    if layout.count_sent == 0 {
        return;
    }
    let Parsed::Ip { l3, .. } = parsed else { return };
    let at = match family {
        PacketFamily::Ipv4 => *l3 + 9,
        PacketFamily::Ipv6 => *l3 + 6,
        _ => return,
    };
    if skb.load::<u8>(at) != Some(IPPROTO_TCP) {
        return;
    }
    // Only this host's own connections, as the retransmissions are:
    // forwarded (NATed) TCP has no socket.
    // SAFETY: reading a field of the context the kernel handed us.
    if unsafe { (*skb.0.skb.skb).__bindgen_anon_2.sk }.is_null() {
        return;
    }
    // A GSO packet carries several segments: count what goes on the wire.
    // SAFETY: reading a field of the context the kernel handed us.
    let segments = unsafe { (*skb.0.skb.skb).gso_segs }.max(1);
    if let Some(count) = TCP_SENT.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a pre-allocated per-CPU array.
        unsafe { *count += u64::from(segments) };
    }
}

#[tracepoint]
pub fn mhr_tcp_probe(ctx: TracePointContext) -> u32 {
    let Some(layout) = TCP_LAYOUT.get(0) else { return 0 };
    if layout.probe_saddr == 0 {
        return 0;
    }
    let saddr = usize::from(layout.probe_saddr);
    // sockaddr_in: the address after family and port; sockaddr_in6: after
    // family, port and flow info.
    let slot = match read::<u16>(&ctx, usize::from(layout.probe_family)) {
        Some(AF_INET) => read::<[u8; 4]>(&ctx, saddr + 4).and_then(owner_v4),
        Some(AF_INET6) => read::<[u8; 16]>(&ctx, saddr + 8).and_then(owner_v6),
        _ => None,
    };
    let Some(slot) = slot else { return 0 };
    let Some(srtt) = read::<u32>(&ctx, usize::from(layout.probe_srtt)) else { return 0 };
    if srtt == 0 {
        return 0;
    }
    if let Some(rtt) = TCP_RTT.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot of a pre-allocated array; only this CPU
        // writes it, and rtt_bucket is below RTT_BUCKETS.
        unsafe {
            if let Some(bucket) = (*rtt).buckets.get_mut(rtt_bucket(srtt)) {
                *bucket += 1;
            }
            (*rtt).sum_us += u64::from(srtt);
        }
    }
    0
}

#[tracepoint]
pub fn mhr_tcp_retransmit(ctx: TracePointContext) -> u32 {
    let Some(layout) = TCP_LAYOUT.get(0) else { return 0 };
    if layout.retransmit_saddr == 0 {
        return 0;
    }
    let slot = match read::<u16>(&ctx, usize::from(layout.retransmit_family)) {
        Some(AF_INET) => read::<[u8; 4]>(&ctx, usize::from(layout.retransmit_saddr)).and_then(owner_v4),
        Some(AF_INET6) => read::<[u8; 16]>(&ctx, usize::from(layout.retransmit_saddr_v6)).and_then(owner_v6),
        _ => None,
    };
    let Some(slot) = slot else { return 0 };
    if let Some(count) = TCP_RETRANSMITS.get_ptr_mut(slot) {
        // SAFETY: as above.
        unsafe { *count += 1 };
    }
    0
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    // SAFETY: a probe read of the tracepoint's record; a bad offset is an
    // error, never a fault.
    unsafe { ctx.read_at::<T>(offset) }.ok()
}

#[inline(always)]
fn owner_v4(address: [u8; 4]) -> Option<u32> {
    // SAFETY: the value is copied out right away.
    unsafe { OWNERS_V4.get(u32::from_ne_bytes(address)) }.copied().filter(|slot| *slot < MAX_UPLINKS)
}

#[inline(always)]
fn owner_v6(address: [u8; 16]) -> Option<u32> {
    // An IPv4 connection on an IPv6 socket: ::ffff:a.b.c.d.
    if address[..10] == [0; 10] && address[10] == 0xff && address[11] == 0xff {
        return owner_v4([address[12], address[13], address[14], address[15]]);
    }
    // SAFETY: as above.
    unsafe { OWNERS_V6.get(ipv6_words(address)) }.copied().filter(|slot| *slot < MAX_UPLINKS)
}
