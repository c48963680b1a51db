//! The guard's packet parser, one source for both targets: the eBPF
//! program runs it over the skb, the host over a byte slice ([`Frame`]) in
//! unit, property and fuzz tests and as the model the kernel's verdicts are
//! compared with.
//!
//! It never reads past the packet: every read is checked against its
//! length, and "malformed" is the answer when a header does not fit.

use crate::guard::{MAX_IPV6_EXTENSIONS, MAX_VLAN_TAGS, PacketFamily};

pub const ETH_HEADER: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// The pre-802.1ad QinQ TPID some switches still use; Linux never sends
/// it, but a packet socket can, and an IP packet behind it must not pass
/// as "not IP".
pub const ETH_P_QINQ1: u16 = 0x9100;
pub const VLAN_TAG: usize = 4;
pub const IPV4_MIN_HEADER: usize = 20;
pub const IPV6_HEADER: usize = 40;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;

mod sealed {
    pub trait Sealed {}
}

/// Values the parser reads: plain bytes, for which every bit pattern is a
/// valid value (so an unaligned copy out of a packet is sound).
pub trait Plain: Copy + sealed::Sealed {}

macro_rules! plain {
    ($($t:ty),*) => { $( impl sealed::Sealed for $t {} impl Plain for $t {} )* };
}
plain!(u8, u16, u32, [u8; 2], [u8; 4], [u8; 16], [u16; 2], [u64; 2]);

/// What the parser needs of a packet.
pub trait Packet {
    /// The packet's first bytes, once checked to be directly readable.
    type Window: Window;

    /// Bytes in the packet, linear or not.
    fn length(&self) -> usize;

    /// The first `len` bytes, when they are directly readable (one bounds
    /// check for the fast path).
    fn window(&self, len: usize) -> Option<Self::Window>;

    /// The value at `offset`, `None` past the end.
    fn read<T: Plain>(&self, offset: usize) -> Option<T>;

    /// Like [`Packet::read`], for code off the fast path: the kernel copies
    /// through a helper, leaving no packet pointer for the verifier to follow.
    fn load<T: Plain>(&self, offset: usize) -> Option<T> {
        self.read(offset)
    }

    /// The packet's protocol (an EtherType, host order) as the stack set it:
    /// an L3 device's only clue to the family.
    fn protocol(&self) -> u16;

    /// The TCI of a VLAN tag the driver holds out of band, if any.
    fn offloaded_vlan_tci(&self) -> Option<u16>;
}

/// Directly readable first bytes of a packet.
pub trait Window {
    /// # Safety
    ///
    /// `offset + size_of::<T>()` must not exceed the length the window was
    /// checked for.
    unsafe fn get<T: Plain>(&self, offset: usize) -> T;
}

pub enum Source {
    /// Network byte order, as loaded.
    V4(u32),
    /// The address as two words, as loaded (see `guard::ipv6_words`).
    V6([u64; 2]),
}

pub enum Parsed {
    NonIp,
    Malformed(PacketFamily),
    /// More in-band VLAN tags than the parser reads: whatever is inside
    /// cannot be vouched for.
    TooManyTags,
    Ip {
        /// Offset of the IP header.
        l3: usize,
        /// Outer in-band VLAN id, 0 when untagged.
        vlan: u16,
        source: Source,
    },
}

/// Destination, protocol and ports of a flagged packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// IPv4 in the first four bytes, the rest zero; all zero when unknown.
    pub destination: [u8; 16],
    /// IP protocol (the upper layer's next header for IPv6); 0 when unknown.
    pub protocol: u8,
    /// TCP/UDP ports, 0 when not TCP/UDP, a later fragment or not readable.
    pub source_port: u16,
    pub destination_port: u16,
}

/// The byte at `offset`, read as the first of two: at offset 0 a one-byte
/// bound (`data + 1 <= data_end`) compiles to `data_end > data`, which the
/// verifier does not take as a bound. Every IP header is longer anyway.
#[inline(always)]
fn first_byte<P: Packet>(packet: &P, offset: usize) -> Option<u8> {
    packet.read::<[u8; 2]>(offset).map(|bytes| bytes[0])
}

/// Parses an Ethernet frame.
#[inline(always)]
pub fn parse<P: Packet>(packet: &P) -> Parsed {
    // Fast path for the most common frame, untagged IPv4 with a 20-byte
    // header in the linear data: one bounds check.
    if let Some(head) = packet.window(ETH_HEADER + IPV4_MIN_HEADER) {
        // SAFETY: every offset read here lies within the window's 34 bytes.
        let (ethertype, first) = unsafe { (head.get::<u16>(12), head.get::<u8>(ETH_HEADER)) };
        if ethertype == ETH_P_IP.to_be() && first == 0x45 {
            // SAFETY: as above (the source is at 26..30).
            let source = unsafe { head.get::<u32>(ETH_HEADER + 12) };
            return Parsed::Ip { l3: ETH_HEADER, vlan: 0, source: Source::V4(source) };
        }
    }
    parse_slow(packet)
}

#[inline(always)]
fn is_vlan_tag(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ1
}

/// Every other frame: IPv6, VLAN tags, IPv4 options, short or non-linear data.
#[inline(always)]
fn parse_slow<P: Packet>(packet: &P) -> Parsed {
    let Some(mut ethertype) = packet.read::<u16>(12).map(u16::from_be) else {
        return Parsed::Malformed(PacketFamily::Other);
    };
    let mut l3 = ETH_HEADER;
    let mut vlan = 0u16;
    for tag in 0..MAX_VLAN_TAGS {
        if !is_vlan_tag(ethertype) {
            break;
        }
        let Some([tci, inner]) = packet.read::<[u16; 2]>(l3).map(|words| words.map(u16::from_be)) else {
            return Parsed::Malformed(PacketFamily::Other);
        };
        if tag == 0 {
            vlan = tci & 0x0fff;
        }
        ethertype = inner;
        l3 += VLAN_TAG;
    }
    if is_vlan_tag(ethertype) {
        return Parsed::TooManyTags;
    }
    parse_ip(packet, ethertype, l3, vlan)
}

/// Parses a packet of an L3 device (no link-layer header): the IP header
/// at 0, its family from the packet's protocol.
#[inline(always)]
pub fn parse_l3<P: Packet>(packet: &P) -> Parsed {
    parse_ip(packet, packet.protocol(), 0, 0)
}

/// The IP header at `l3`, per `ethertype`.
#[inline(always)]
fn parse_ip<P: Packet>(packet: &P, ethertype: u16, l3: usize, vlan: u16) -> Parsed {
    match ethertype {
        ETH_P_IP => {
            let Some(version_ihl) = first_byte(packet, l3) else {
                return Parsed::Malformed(PacketFamily::Ipv4);
            };
            let header = usize::from(version_ihl & 0x0f) * 4;
            if version_ihl >> 4 != 4 || header < IPV4_MIN_HEADER || l3 + header > packet.length() {
                return Parsed::Malformed(PacketFamily::Ipv4);
            }
            match packet.read::<u32>(l3 + 12) {
                Some(source) => Parsed::Ip { l3, vlan, source: Source::V4(source) },
                None => Parsed::Malformed(PacketFamily::Ipv4),
            }
        }
        ETH_P_IPV6 => {
            let Some(version) = first_byte(packet, l3) else { return Parsed::Malformed(PacketFamily::Ipv6) };
            if version >> 4 != 6 || l3 + IPV6_HEADER > packet.length() {
                return Parsed::Malformed(PacketFamily::Ipv6);
            }
            match packet.read::<[u64; 2]>(l3 + 8) {
                Some(source) => Parsed::Ip { l3, vlan, source: Source::V6(source) },
                None => Parsed::Malformed(PacketFamily::Ipv6),
            }
        }
        _ => Parsed::NonIp,
    }
}

/// Outer VLAN id: in-band, else the offloaded tag.
#[inline(always)]
pub fn vlan<P: Packet>(packet: &P, parsed: &Parsed) -> u16 {
    if let Parsed::Ip { vlan, .. } = parsed
        && *vlan != 0
    {
        return *vlan;
    }
    packet.offloaded_vlan_tci().map_or(0, |tci| tci & 0x0fff)
}

/// Destination, protocol and (TCP/UDP) ports. Off the fast path: only
/// flagged packets need them.
#[inline(always)]
pub fn details<P: Packet>(packet: &P, parsed: &Parsed) -> Details {
    let mut details = Details::default();
    let Parsed::Ip { l3, source, .. } = parsed else { return details };
    // Bounded for the verifier: the offset may come back through memory.
    let l3 = (*l3).min(ETH_HEADER + VLAN_TAG * MAX_VLAN_TAGS);
    let l4 = match source {
        Source::V4(_) => {
            if let Some(address) = packet.load::<[u8; 4]>(l3 + 16) {
                details.destination[..4].copy_from_slice(&address);
            }
            let header = packet.load::<u8>(l3).map_or(IPV4_MIN_HEADER, |b| usize::from(b & 0x0f) * 4);
            details.protocol = packet.load::<u8>(l3 + 9).unwrap_or(0);
            // Later fragments carry no ports.
            let fragment_offset = packet.load::<u16>(l3 + 6).map_or(0, |f| u16::from_be(f) & 0x1fff);
            if fragment_offset == 0 { Some(l3 + header) } else { None }
        }
        Source::V6(_) => {
            if let Some(address) = packet.load::<[u8; 16]>(l3 + 24) {
                details.destination = address;
            }
            let (protocol, l4) = ipv6_upper_layer(packet, l3);
            details.protocol = protocol;
            l4
        }
    };
    if let (IPPROTO_TCP | IPPROTO_UDP, Some(l4)) = (details.protocol, l4)
        && let Some([source, destination]) = packet.load::<[u16; 2]>(l4)
    {
        details.source_port = u16::from_be(source);
        details.destination_port = u16::from_be(destination);
    }
    details
}

/// Walks at most [`MAX_IPV6_EXTENSIONS`] extension headers to the upper
/// layer: its protocol and offset (no offset behind a non-first fragment,
/// a truncated chain or a longer one). A full chain in RFC 8200's order
/// (hop-by-hop, destination options, routing, destination options,
/// fragment, AH) is six.
#[inline(always)]
fn ipv6_upper_layer<P: Packet>(packet: &P, l3: usize) -> (u8, Option<usize>) {
    let Some(mut next) = packet.load::<u8>(l3 + 6) else { return (0, None) };
    let mut offset = l3 + IPV6_HEADER;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => {
                let Some([following, length]) = packet.load::<[u8; 2]>(offset) else { return (next, None) };
                offset += if next == IPV6_AUTH {
                    (usize::from(length) + 2) * 4
                } else {
                    (usize::from(length) + 1) * 8
                };
                next = following;
            }
            IPV6_FRAGMENT => {
                let Some(fragment) = packet.load::<[u8; 4]>(offset) else { return (next, None) };
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
    // The limit's last header may have led to the upper layer.
    match next {
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => (next, None),
        _ => (next, Some(offset)),
    }
}

/// A packet held in memory: the host's view, for tests and fuzzing.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub bytes: &'a [u8],
    /// The skb protocol an L3 device would carry (host order).
    pub protocol: u16,
    /// An offloaded VLAN tag's TCI.
    pub offloaded_vlan_tci: Option<u16>,
}

impl<'a> Frame<'a> {
    /// An Ethernet frame with no offloaded tag.
    pub fn ethernet(bytes: &'a [u8]) -> Self {
        let protocol = match bytes {
            [_, _, _, _, _, _, _, _, _, _, _, _, high, low, ..] => u16::from_be_bytes([*high, *low]),
            _ => 0,
        };
        Self { bytes, protocol, offloaded_vlan_tci: None }
    }
}

/// The first bytes of a [`Frame`].
pub struct FrameWindow<'a>(&'a [u8]);

impl Window for FrameWindow<'_> {
    unsafe fn get<T: Plain>(&self, offset: usize) -> T {
        let bytes = &self.0[offset..offset + core::mem::size_of::<T>()];
        // SAFETY: `bytes` holds exactly size_of::<T>() bytes and any bit
        // pattern is a valid `T` (Plain).
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    }
}

impl<'a> Packet for Frame<'a> {
    type Window = FrameWindow<'a>;

    fn length(&self) -> usize {
        self.bytes.len()
    }

    fn window(&self, len: usize) -> Option<FrameWindow<'a>> {
        self.bytes.get(..len).map(FrameWindow)
    }

    fn read<T: Plain>(&self, offset: usize) -> Option<T> {
        let bytes = self.bytes.get(offset..offset.checked_add(core::mem::size_of::<T>())?)?;
        // SAFETY: as in `FrameWindow::get`.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    fn protocol(&self) -> u16 {
        self.protocol
    }

    fn offloaded_vlan_tci(&self) -> Option<u16> {
        self.offloaded_vlan_tci
    }
}

#[cfg(test)]
mod tests;
