//! The guard's parser over arbitrary bytes, as an Ethernet frame and as an
//! L3 device's packet: no panic, no read past the end, and the invariants
//! the program relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mhr_common::{
    guard::MAX_VLAN_TAGS,
    packet::{self, ETH_HEADER, Frame, IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HEADER, Parsed, VLAN_TAG},
};

fuzz_target!(|data: &[u8]| {
    // The first three bytes are the skb's metadata: protocol and, when the
    // third is odd, an offloaded tag.
    let (meta, bytes) = data.split_at(data.len().min(3));
    let protocol = match meta {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => 0,
    };
    let offloaded_vlan_tci = meta.get(2).filter(|b| *b & 1 == 1).map(|b| u16::from(*b) << 4);
    let frame = Frame { bytes, protocol, offloaded_vlan_tci };
    for parsed in [packet::parse(&frame), packet::parse_l3(&frame)] {
        if let Parsed::Ip { l3, .. } = parsed {
            assert!(l3 <= ETH_HEADER + VLAN_TAG * MAX_VLAN_TAGS, "IP header at {l3}");
            assert!(l3 + IPV4_MIN_HEADER <= bytes.len(), "an IP header that does not fit");
        }
        let details = packet::details(&frame, &parsed);
        if (details.source_port, details.destination_port) != (0, 0) {
            assert!(
                matches!(details.protocol, IPPROTO_TCP | IPPROTO_UDP),
                "ports of protocol {}",
                details.protocol
            );
        }
        assert!(packet::vlan(&frame, &parsed) < 4096);
    }
});
