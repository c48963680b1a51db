//! Hand-picked cases; the property tests against etherparse and the
//! differential check against the kernel live in the `mhr-tests` crate.

use super::*;

const SOURCE_V4: [u8; 4] = [10, 0, 3, 10];
const DESTINATION_V4: [u8; 4] = [203, 0, 113, 5];

fn ethernet(vlans: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (tpid, tci) in vlans {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// IPv4 with `options` bytes of options, then a UDP header.
fn ipv4(vlans: &[(u16, u16)], options: usize, fragment: u16) -> Vec<u8> {
    let mut frame = ethernet(vlans, ETH_P_IP);
    let ihl = (20 + options) / 4;
    frame.extend_from_slice(&[0x40 | ihl as u8, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&fragment.to_be_bytes());
    frame.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
    frame.extend_from_slice(&SOURCE_V4);
    frame.extend_from_slice(&DESTINATION_V4);
    frame.extend(core::iter::repeat_n(1, options));
    frame.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
    frame
}

/// IPv6 behind `extensions` (raw bytes, first next header given), then TCP.
fn ipv6(first: u8, extensions: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(&[], ETH_P_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, first, 64]);
    frame.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    frame.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    frame.extend_from_slice(extensions);
    frame.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
    frame.extend(core::iter::repeat_n(0, 16));
    frame
}

fn source_v4(parsed: &Parsed) -> Option<[u8; 4]> {
    match parsed {
        Parsed::Ip { source: Source::V4(source), .. } => Some(source.to_ne_bytes()),
        _ => None,
    }
}

#[test]
fn untagged_ipv4_takes_the_fast_path_and_finds_its_ports() {
    let bytes = ipv4(&[], 0, 0);
    let frame = Frame::ethernet(&bytes);
    let parsed = parse(&frame);
    assert!(matches!(parsed, Parsed::Ip { l3: ETH_HEADER, vlan: 0, .. }));
    assert_eq!(source_v4(&parsed), Some(SOURCE_V4));
    let details = details(&frame, &parsed);
    assert_eq!(&details.destination[..4], &DESTINATION_V4);
    assert_eq!((details.protocol, details.source_port, details.destination_port), (IPPROTO_UDP, 40000, 53));
}

#[test]
fn ipv4_options_move_the_ports_not_the_source() {
    let bytes = ipv4(&[], 12, 0);
    let frame = Frame::ethernet(&bytes);
    let parsed = parse(&frame);
    assert_eq!(source_v4(&parsed), Some(SOURCE_V4));
    assert_eq!(details(&frame, &parsed).destination_port, 53);
}

#[test]
fn later_ipv4_fragments_have_no_ports_but_first_ones_do() {
    for (fragment, ports) in [(0x2000, (40000, 53)), (0x0001, (0, 0)), (0x2010, (0, 0))] {
        let bytes = ipv4(&[], 0, fragment);
        let frame = Frame::ethernet(&bytes);
        let details = details(&frame, &parse(&frame));
        assert_eq!((details.source_port, details.destination_port), ports, "flags/offset {fragment:#06x}");
    }
}

#[test]
fn vlan_and_qinq_tags_are_skipped_and_the_outer_id_kept() {
    let bytes = ipv4(&[(ETH_P_8021AD, 0x2064), (ETH_P_8021Q, 7)], 0, 0);
    let frame = Frame::ethernet(&bytes);
    let parsed = parse(&frame);
    assert!(matches!(parsed, Parsed::Ip { l3: 22, vlan: 100, .. }));
    assert_eq!(source_v4(&parsed), Some(SOURCE_V4));
    assert_eq!(vlan(&frame, &parsed), 100);
}

#[test]
fn a_third_tag_is_too_many() {
    let bytes = ipv4(&[(ETH_P_8021Q, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)], 0, 0);
    assert!(matches!(parse(&Frame::ethernet(&bytes)), Parsed::TooManyTags));
}

#[test]
fn an_offloaded_tag_counts_only_without_an_in_band_one() {
    let untagged = ipv4(&[], 0, 0);
    let frame = Frame { offloaded_vlan_tci: Some(0xe00a), ..Frame::ethernet(&untagged) };
    assert_eq!(vlan(&frame, &parse(&frame)), 10);
    let tagged = ipv4(&[(ETH_P_8021Q, 20)], 0, 0);
    let frame = Frame { offloaded_vlan_tci: Some(10), ..Frame::ethernet(&tagged) };
    assert_eq!(vlan(&frame, &parse(&frame)), 20);
}

#[test]
fn truncated_headers_are_malformed_of_their_family() {
    let bytes = ipv4(&[], 8, 0);
    // The options end at 14 + 28: one byte short of that is malformed.
    assert!(matches!(parse(&Frame::ethernet(&bytes[..41])), Parsed::Malformed(PacketFamily::Ipv4)));
    assert!(matches!(parse(&Frame::ethernet(&bytes[..42])), Parsed::Ip { .. }));
    assert!(matches!(parse(&Frame::ethernet(&bytes[..13])), Parsed::Malformed(PacketFamily::Other)));
    let bytes = ipv6(IPPROTO_TCP, &[]);
    assert!(matches!(parse(&Frame::ethernet(&bytes[..53])), Parsed::Malformed(PacketFamily::Ipv6)));
    assert!(matches!(parse(&Frame::ethernet(&bytes[..54])), Parsed::Ip { .. }));
}

#[test]
fn a_short_ihl_or_wrong_version_is_malformed() {
    let mut bytes = ipv4(&[], 0, 0);
    bytes[ETH_HEADER] = 0x44;
    assert!(matches!(parse(&Frame::ethernet(&bytes)), Parsed::Malformed(PacketFamily::Ipv4)));
    bytes[ETH_HEADER] = 0x65;
    assert!(matches!(parse(&Frame::ethernet(&bytes)), Parsed::Malformed(PacketFamily::Ipv4)));
}

#[test]
fn ipv6_extension_chains_lead_to_the_ports() {
    // Hop-by-hop (8) → AH (payload length 4: (4 + 2) * 4 = 24) → TCP.
    let mut chain = vec![IPV6_AUTH, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&[IPPROTO_TCP, 4]);
    chain.extend(core::iter::repeat_n(0, 22));
    let bytes = ipv6(IPV6_HOP_BY_HOP, &chain);
    let frame = Frame::ethernet(&bytes);
    let details = details(&frame, &parse(&frame));
    assert_eq!((details.protocol, details.source_port, details.destination_port), (IPPROTO_TCP, 40000, 443));
    assert_eq!(details.destination[15], 5);
}

#[test]
fn non_first_ipv6_fragments_have_no_ports() {
    for (offset, ports) in [(0u16, (40000, 443)), (1, (0, 0))] {
        let mut fragment = vec![IPPROTO_TCP, 0];
        fragment.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
        fragment.extend_from_slice(&[0, 0, 0, 1]);
        let bytes = ipv6(IPV6_FRAGMENT, &fragment);
        let frame = Frame::ethernet(&bytes);
        let details = details(&frame, &parse(&frame));
        assert_eq!(details.protocol, IPPROTO_TCP);
        assert_eq!((details.source_port, details.destination_port), ports, "offset {offset}");
    }
}

#[test]
fn a_chain_longer_than_the_limit_gives_no_ports() {
    let mut chain = Vec::new();
    for _ in 0..MAX_IPV6_EXTENSIONS - 1 {
        chain.extend_from_slice(&[IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&[IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
    let within = ipv6(IPV6_DEST_OPTS, &chain);
    let frame = Frame::ethernet(&within);
    assert_eq!(details(&frame, &parse(&frame)).source_port, 40000);
    chain.splice(0..0, [IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
    let beyond = ipv6(IPV6_DEST_OPTS, &chain);
    let frame = Frame::ethernet(&beyond);
    let details = details(&frame, &parse(&frame));
    assert_eq!((details.protocol, details.source_port), (IPV6_DEST_OPTS, 0));
}

#[test]
fn l3_packets_take_their_family_from_the_protocol() {
    let bytes = ipv4(&[], 0, 0);
    let ip = &bytes[ETH_HEADER..];
    let parsed = parse_l3(&Frame { bytes: ip, protocol: ETH_P_IP, offloaded_vlan_tci: None });
    assert!(matches!(parsed, Parsed::Ip { l3: 0, .. }));
    assert_eq!(source_v4(&parsed), Some(SOURCE_V4));
    let parsed = parse_l3(&Frame { bytes: ip, protocol: ETH_P_IPV6, offloaded_vlan_tci: None });
    assert!(matches!(parsed, Parsed::Malformed(PacketFamily::Ipv6)));
    let parsed = parse_l3(&Frame { bytes: ip, protocol: 0x0806, offloaded_vlan_tci: None });
    assert!(matches!(parsed, Parsed::NonIp));
}

#[test]
fn no_length_panics_or_reads_past_the_end() {
    let bytes =
        ipv6(IPV6_HOP_BY_HOP, &[IPV6_FRAGMENT, 0, 1, 4, 0, 0, 0, 0, IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 1]);
    for end in 0..=bytes.len() {
        let frame = Frame::ethernet(&bytes[..end]);
        let parsed = parse(&frame);
        let _ = details(&frame, &parsed);
        let _ = vlan(&frame, &parsed);
    }
}

#[test]
fn the_old_qinq_tag_hides_no_ip_packet() {
    let bytes = ipv4(&[(ETH_P_QINQ1, 30), (ETH_P_8021Q, 7)], 0, 0);
    let parsed = parse(&Frame::ethernet(&bytes));
    assert!(matches!(parsed, Parsed::Ip { l3: 22, vlan: 30, .. }));
    assert_eq!(source_v4(&parsed), Some(SOURCE_V4));
}
