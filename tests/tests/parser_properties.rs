//! The guard's parser (`mhr_common::packet`, the code the eBPF program
//! runs) against etherparse as the reference, over generated, mutated and
//! truncated frames. Host only: no root needed.

use etherparse::{
    IpAuthHeaderSlice, Ipv6FragmentHeaderSlice, Ipv6RawExtHeaderSlice, LaxNetSlice, LaxSlicedPacket,
};
use mhr_common::{
    guard::PacketFamily,
    packet::{self, Details, Frame, Parsed, Source},
};
use mhr_tests::frames::{self, FrameSpec, Network, Sources, TCP, UDP};
use proptest::prelude::*;

/// What the guard reads of a frame, in comparable form.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    l3: usize,
    vlan: u16,
    source: Vec<u8>,
    details: Details,
}

fn ours(bytes: &[u8]) -> (Parsed, Option<Reading>) {
    let frame = Frame::ethernet(bytes);
    let parsed = packet::parse(&frame);
    let reading = match &parsed {
        Parsed::Ip { l3, source, .. } => Some(Reading {
            l3: *l3,
            vlan: packet::vlan(&frame, &parsed),
            source: match source {
                Source::V4(address) => address.to_ne_bytes().to_vec(),
                Source::V6(words) => words.iter().flat_map(|w| w.to_ne_bytes()).collect(),
            },
            details: packet::details(&frame, &parsed),
        }),
        _ => None,
    };
    (parsed, reading)
}

/// The same reading through etherparse (lax: lengths beyond the frame and
/// upper-layer errors do not hide the IP header). `None` when etherparse
/// finds no IP header, or more tags than the guard reads.
fn reference(bytes: &[u8]) -> Option<Reading> {
    let sliced = LaxSlicedPacket::from_ethernet(bytes).ok()?;
    let mut vlans = Vec::new();
    for ext in &sliced.link_exts {
        match ext {
            etherparse::LaxLinkExtSlice::Vlan(vlan) => vlans.push(vlan.vlan_identifier().value()),
            _ => return None,
        }
    }
    if vlans.len() > 2 {
        return None;
    }
    let l3 = 14 + 4 * vlans.len();
    let vlan = vlans.first().copied().unwrap_or(0);
    let mut details = Details::default();
    // etherparse (lax) picks the IP version from the header; the guard, like
    // the kernel, from the EtherType, and calls a mismatch malformed.
    let ethertype = u16::from_be_bytes([bytes[l3 - 2], bytes[l3 - 1]]);
    let (source, upper, later_fragment) = match sliced.net? {
        LaxNetSlice::Ipv4(_) if ethertype != frames::ETH_P_IP => return None,
        LaxNetSlice::Ipv6(_) if ethertype != frames::ETH_P_IPV6 => return None,
        LaxNetSlice::Ipv4(ip) => {
            let header = ip.header();
            details.destination[..4].copy_from_slice(&header.destination());
            details.protocol = header.protocol().0;
            let payload = &bytes[l3 + header.slice().len()..];
            (header.source().to_vec(), payload, header.fragments_offset().value() != 0)
        }
        LaxNetSlice::Ipv6(ip) => {
            let header = ip.header();
            details.destination = header.destination();
            details.protocol = ip.payload().ip_number.0;
            // Behind a later fragment come the fragment's data, not more
            // headers: the protocol is that fragment header's next header.
            let later_fragment = later_fragment(header.next_header().0, ip.extensions().slice());
            if let Some(next) = later_fragment {
                details.protocol = next;
            }
            let upper = l3 + 40 + ip.extensions().slice().len();
            (header.source().to_vec(), bytes.get(upper..).unwrap_or_default(), later_fragment.is_some())
        }
        LaxNetSlice::Arp(_) => return None,
    };
    if matches!(details.protocol, TCP | UDP)
        && !later_fragment
        && let [a, b, c, d, ..] = upper
    {
        details.source_port = u16::from_be_bytes([*a, *b]);
        details.destination_port = u16::from_be_bytes([*c, *d]);
    }
    Some(Reading { l3, vlan, source, details })
}

/// The next header of the first non-first fragment header in a chain
/// etherparse parsed, walked with etherparse's checked header slices.
/// (Its own iterator reads past the chain when a lax parse stopped inside
/// it: etherparse 0.21's `Ipv6ExtensionSliceIter` trips a debug assertion.)
fn later_fragment(first: u8, mut chain: &[u8]) -> Option<u8> {
    let mut next = first;
    while !chain.is_empty() {
        let (length, following) = match next {
            frames::FRAGMENT => {
                let fragment = Ipv6FragmentHeaderSlice::from_slice(chain).ok()?;
                if fragment.fragment_offset().value() != 0 {
                    return Some(fragment.next_header().0);
                }
                (fragment.slice().len(), fragment.next_header().0)
            }
            frames::AUTH => {
                let auth = IpAuthHeaderSlice::from_slice(chain).ok()?;
                (auth.slice().len(), auth.next_header().0)
            }
            _ => {
                let header = Ipv6RawExtHeaderSlice::from_slice(chain).ok()?;
                (header.slice().len(), header.next_header().0)
            }
        };
        chain = &chain[length..];
        next = following;
    }
    None
}

/// Where the fixed IP header (with IPv4 options) ends in `spec`'s frame.
fn ip_end(spec: &FrameSpec) -> Option<usize> {
    let l3 = 14 + 4 * spec.vlans.len();
    match &spec.network {
        Network::V4 { option_words, .. } => Some(l3 + 20 + 4 * usize::from(*option_words)),
        Network::V6 { .. } => Some(l3 + 40),
        Network::Other { .. } => None,
    }
}

fn family(spec: &FrameSpec) -> PacketFamily {
    match spec.network {
        Network::V4 { .. } => PacketFamily::Ipv4,
        Network::V6 { .. } => PacketFamily::Ipv6,
        Network::Other { .. } => PacketFamily::Other,
    }
}

fn sources() -> Sources {
    Sources {
        v4: vec![[10, 0, 3, 10]],
        v6: vec![[0x20, 1, 0xd, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Well-formed frames: the same header offsets, VLAN id, source,
    /// destination, protocol and ports as etherparse.
    #[test]
    fn well_formed_frames_read_as_etherparse_reads_them(spec in frames::well_formed(&sources())) {
        let bytes = spec.bytes();
        let (parsed, reading) = ours(&bytes);
        let wanted = reference(&bytes);
        if let Network::Other { .. } = spec.network {
            prop_assert!(matches!(parsed, Parsed::NonIp));
            prop_assert!(wanted.is_none());
        } else {
            prop_assert!(wanted.is_some(), "etherparse reads the generated frame");
            prop_assert_eq!(reading, wanted);
        }
    }

    /// Cut anywhere, a frame is malformed exactly when its IP header no
    /// longer fits; otherwise the source is unchanged and the ports are
    /// there exactly when they fit.
    #[test]
    fn truncation_at_every_byte_is_malformed_or_reads_the_same(spec in frames::well_formed(&sources())) {
        let bytes = spec.bytes();
        let full = ours(&bytes).1;
        let l3 = 14 + 4 * spec.vlans.len();
        for end in 0..bytes.len() {
            let (parsed, reading) = ours(&bytes[..end]);
            match ip_end(&spec) {
                _ if end < l3 => prop_assert!(
                    matches!(parsed, Parsed::Malformed(PacketFamily::Other)), "cut at {} of the link header", end
                ),
                Some(ip_end) if end < ip_end => {
                    prop_assert!(matches!(parsed, Parsed::Malformed(f) if f == family(&spec)), "cut at {}", end)
                }
                None => prop_assert!(matches!(parsed, Parsed::NonIp)),
                Some(_) => {
                    let (reading, full) = (reading.expect("still IP"), full.as_ref().expect("IP"));
                    prop_assert_eq!(&reading.source, &full.source);
                    prop_assert_eq!(reading.details.destination, full.details.destination);
                    let ports = (reading.details.source_port, reading.details.destination_port);
                    let full_ports = (full.details.source_port, full.details.destination_port);
                    let wanted = if end >= spec.transport_offset() + 4 { full_ports } else { (0, 0) };
                    prop_assert_eq!(ports, wanted, "cut at {}", end);
                }
            }
        }
    }

    /// A tag the driver holds out of band counts only when the frame has
    /// no in-band one; the source and offsets do not change.
    #[test]
    fn an_offloaded_tag_yields_to_an_in_band_one(spec in frames::well_formed(&sources()), tci in any::<u16>()) {
        let bytes = spec.bytes();
        let plain = Frame::ethernet(&bytes);
        let offloaded = Frame { offloaded_vlan_tci: Some(tci), ..plain };
        let (parsed, with_tag) = (packet::parse(&plain), packet::parse(&offloaded));
        let in_band = spec.vlans.first().map_or(0, |(_, tci)| tci & 0x0fff);
        let wanted = if in_band != 0 { in_band } else { tci & 0x0fff };
        if let (Parsed::Ip { l3: a, .. }, Parsed::Ip { l3: b, .. }) = (&parsed, &with_tag) {
            prop_assert_eq!(a, b);
            prop_assert_eq!(packet::vlan(&offloaded, &with_tag), wanted);
        } else {
            prop_assert_eq!(std::mem::discriminant(&parsed), std::mem::discriminant(&with_tag));
            prop_assert_eq!(packet::vlan(&offloaded, &with_tag), tci & 0x0fff);
        }
    }

    /// Mutated, truncated and random frames: never a panic, and wherever
    /// etherparse finds an IP header (behind at most two tags) the guard
    /// finds the same header, source and VLAN id; where the guard calls a
    /// frame IP, etherparse does too.
    #[test]
    fn mutated_frames_agree_with_etherparse_on_the_source(bytes in frames::any_frame(&sources())) {
        let (parsed, reading) = ours(&bytes);
        let wanted = reference(&bytes);
        match (&reading, &wanted) {
            (Some(reading), Some(wanted)) => {
                prop_assert_eq!(reading.l3, wanted.l3);
                prop_assert_eq!(reading.vlan, wanted.vlan);
                prop_assert_eq!(&reading.source, &wanted.source);
                prop_assert_eq!(reading.details.destination, wanted.details.destination);
            }
            (None, None) => {}
            (Some(reading), None) => {
                // etherparse is stricter about the fields the guard does
                // not need (an IPv4 total length shorter than the header).
                let stricter = LaxSlicedPacket::from_ethernet(&bytes).ok().and_then(|s| s.stop_err).is_some();
                prop_assert!(stricter, "the guard reads {:?}, etherparse finds no IP header and no error", reading);
            }
            (None, Some(wanted)) => {
                prop_assert!(false, "etherparse reads {:?}, the guard {:?}", wanted, std::mem::discriminant(&parsed));
            }
        }
    }
}

#[test]
fn the_sample_is_reproducible() {
    let first: Vec<Vec<u8>> = frames::sample(frames::any_frame(&sources()), 7, 50).collect();
    let again: Vec<Vec<u8>> = frames::sample(frames::any_frame(&sources()), 7, 50).collect();
    let other: Vec<Vec<u8>> = frames::sample(frames::any_frame(&sources()), 8, 50).collect();
    assert_eq!(first, again);
    assert_ne!(first, other);
}
