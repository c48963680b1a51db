//! Header parsing for the guard. Never reads past the packet: direct
//! access where the linear data holds the bytes, `bpf_skb_load_bytes`
//! otherwise, and "malformed" when the packet is too short.

use aya_ebpf::programs::TcContext;
use mhr_common::guard::{MAX_IPV6_EXTENSIONS, MAX_VLAN_TAGS, PacketFamily};

const ETH_HEADER: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_TAG: usize = 4;
const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

pub enum Source {
    /// Network byte order, as loaded.
    V4(u32),
    /// The address as two words, as loaded.
    V6([u64; 2]),
}

pub enum Parsed {
    NonIp,
    Malformed(PacketFamily),
    /// More in-band VLAN tags than the parser reads: whatever is inside
    /// cannot be vouched for (counted as malformed; dropped in enforce mode).
    TooManyTags,
    Ip {
        /// Offset of the IP header.
        l3: usize,
        /// Outer in-band VLAN id, 0 when untagged.
        vlan: u16,
        source: Source,
    },
}

/// Reads a `T` at `offset`, or `None` past the end of the packet.
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    let size = core::mem::size_of::<T>();
    if start + offset + size <= end {
        // SAFETY: bounds checked against data_end just above.
        Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
    } else {
        // Non-linear data, or really too short (then this fails too).
        ctx.load::<T>(offset).ok()
    }
}

/// The byte at `offset`, read as the first of two: at offset 0 a one-byte
/// bound (`data + 1 <= data_end`) compiles to `data_end > data`, which the
/// verifier does not take as a bound. Every IP header is longer anyway.
#[inline(always)]
fn first_byte(ctx: &TcContext, offset: usize) -> Option<u8> {
    read::<[u8; 2]>(ctx, offset).map(|bytes| bytes[0])
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    // Fast path for the most common frame, untagged IPv4 with a 20-byte
    // header in the linear data: one bounds check.
    let start = ctx.data();
    if start + ETH_HEADER + IPV4_MIN_HEADER <= ctx.data_end() {
        // SAFETY: all offsets read here lie below the bound checked above.
        let (ethertype, first) = unsafe {
            (core::ptr::read_unaligned((start + 12) as *const u16), *((start + ETH_HEADER) as *const u8))
        };
        if ethertype == ETH_P_IP.to_be() && first == 0x45 {
            // SAFETY: as above (source at 26..30).
            let source = unsafe { core::ptr::read_unaligned((start + ETH_HEADER + 12) as *const u32) };
            return Parsed::Ip { l3: ETH_HEADER, vlan: 0, source: Source::V4(source) };
        }
    }
    parse_slow(ctx)
}

/// Every other frame: IPv6, VLAN tags, IPv4 options, short or non-linear data.
#[inline(always)]
fn parse_slow(ctx: &TcContext) -> Parsed {
    let Some(mut ethertype) = read::<u16>(ctx, 12).map(u16::from_be) else {
        return Parsed::Malformed(PacketFamily::Other);
    };
    let mut l3 = ETH_HEADER;
    let mut vlan = 0u16;
    for tag in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tci) = read::<u16>(ctx, l3).map(u16::from_be) else {
            return Parsed::Malformed(PacketFamily::Other);
        };
        let Some(inner) = read::<u16>(ctx, l3 + 2).map(u16::from_be) else {
            return Parsed::Malformed(PacketFamily::Other);
        };
        if tag == 0 {
            vlan = tci & 0x0fff;
        }
        ethertype = inner;
        l3 += VLAN_TAG;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Parsed::TooManyTags;
    }
    parse_ip(ctx, ethertype, l3, vlan)
}

/// A packet of an L3 device (no link-layer header): the IP header at 0,
/// its family from the skb's protocol.
#[inline(always)]
pub fn parse_l3(ctx: &TcContext) -> Parsed {
    // SAFETY: reading a field of the context the kernel handed us. The
    // protocol is a big-endian 16-bit value in a 32-bit field.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    parse_ip(ctx, u16::from_be(protocol as u16), 0, 0)
}

/// The IP header at `l3`, per `ethertype`.
#[inline(always)]
fn parse_ip(ctx: &TcContext, ethertype: u16, l3: usize, vlan: u16) -> Parsed {
    match ethertype {
        ETH_P_IP => {
            let Some(version_ihl) = first_byte(ctx, l3) else { return Parsed::Malformed(PacketFamily::Ipv4) };
            let header = usize::from(version_ihl & 0x0f) * 4;
            if version_ihl >> 4 != 4 || header < IPV4_MIN_HEADER || l3 + header > ctx.len() as usize {
                return Parsed::Malformed(PacketFamily::Ipv4);
            }
            match read::<u32>(ctx, l3 + 12) {
                Some(source) => Parsed::Ip { l3, vlan, source: Source::V4(source) },
                None => Parsed::Malformed(PacketFamily::Ipv4),
            }
        }
        ETH_P_IPV6 => {
            let Some(version) = first_byte(ctx, l3) else { return Parsed::Malformed(PacketFamily::Ipv6) };
            if version >> 4 != 6 || l3 + IPV6_HEADER > ctx.len() as usize {
                return Parsed::Malformed(PacketFamily::Ipv6);
            }
            match read::<[u64; 2]>(ctx, l3 + 8) {
                Some(source) => Parsed::Ip { l3, vlan, source: Source::V6(source) },
                None => Parsed::Malformed(PacketFamily::Ipv6),
            }
        }
        _ => Parsed::NonIp,
    }
}

/// Outer VLAN id: in-band, else the offloaded tag in the skb.
#[inline(always)]
pub fn vlan(ctx: &TcContext, parsed: &Parsed) -> u16 {
    if let Parsed::Ip { vlan, .. } = parsed
        && *vlan != 0
    {
        return *vlan;
    }
    // SAFETY: reading fields of the context the kernel handed us.
    unsafe {
        let skb = ctx.skb.skb;
        if (*skb).vlan_present != 0 { ((*skb).vlan_tci & 0x0fff) as u16 } else { 0 }
    }
}

/// Reads through `bpf_skb_load_bytes`: no packet-pointer arithmetic for the
/// verifier to follow, fine off the fast path.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    ctx.load::<T>(offset).ok()
}

/// Destination, protocol and (TCP/UDP) ports of a flagged packet. Off the
/// fast path: only flagged packets get here.
#[inline(never)]
pub fn details(ctx: &TcContext, parsed: &Parsed) -> ([u8; 16], u8, (u16, u16)) {
    let mut destination = [0u8; 16];
    let Parsed::Ip { l3, source, .. } = parsed else { return (destination, 0, (0, 0)) };
    // Bounded for the verifier: the offset may come back through memory.
    let l3 = (*l3).min(ETH_HEADER + VLAN_TAG * MAX_VLAN_TAGS);
    let (protocol, l4) = match source {
        Source::V4(_) => {
            if let Some(address) = load::<[u8; 4]>(ctx, l3 + 16) {
                destination[..4].copy_from_slice(&address);
            }
            let header = load::<u8>(ctx, l3).map_or(IPV4_MIN_HEADER, |b| usize::from(b & 0x0f) * 4);
            let protocol = load::<u8>(ctx, l3 + 9).unwrap_or(0);
            // Later fragments carry no ports.
            let fragment_offset = load::<u16>(ctx, l3 + 6).map_or(0, |f| u16::from_be(f) & 0x1fff);
            (protocol, if fragment_offset == 0 { Some(l3 + header) } else { None })
        }
        Source::V6(_) => {
            if let Some(address) = load::<[u8; 16]>(ctx, l3 + 24) {
                destination = address;
            }
            ipv6_upper_layer(ctx, l3)
        }
    };
    let ports = match (protocol, l4) {
        (IPPROTO_TCP | IPPROTO_UDP, Some(l4)) => match load::<[u16; 2]>(ctx, l4) {
            Some([source, destination]) => (u16::from_be(source), u16::from_be(destination)),
            None => (0, 0),
        },
        _ => (0, 0),
    };
    (destination, protocol, ports)
}

/// Walks at most [`MAX_IPV6_EXTENSIONS`] extension headers to the upper
/// layer: its protocol and offset (no offset behind a non-first fragment).
#[inline(always)]
fn ipv6_upper_layer(ctx: &TcContext, l3: usize) -> (u8, Option<usize>) {
    let Some(mut next) = load::<u8>(ctx, l3 + 6) else { return (0, None) };
    let mut offset = l3 + IPV6_HEADER;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => {
                let Some([following, length]) = load::<[u8; 2]>(ctx, offset) else { return (next, None) };
                offset += if next == IPV6_AUTH {
                    (usize::from(length) + 2) * 4
                } else {
                    (usize::from(length) + 1) * 8
                };
                next = following;
            }
            IPV6_FRAGMENT => {
                let Some(fragment) = load::<[u8; 4]>(ctx, offset) else { return (next, None) };
                let fragment_offset = u16::from_be_bytes([fragment[2], fragment[3]]) >> 3;
                next = fragment[0];
                offset += 8;
                if fragment_offset != 0 {
                    return (next, None);
                }
            }
            _ => return (next, Some(offset)),
        }
    }
    (next, None)
}
