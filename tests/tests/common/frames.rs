//! Hand-built Ethernet frames for BPF_PROG_TEST_RUN.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::{Ipv4Addr, Ipv6Addr};

pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
const HOP_BY_HOP: u8 = 0;
const DEST_OPTS: u8 = 60;

pub fn ethernet(ethertype: u16, vlans: &[(u16, u16)]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x0a];
    for (tpid, id) in vlans {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes()); // placeholder, replaced below
        let at = frame.len() - 2;
        frame[at..].copy_from_slice(&id.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn udp_or_tcp(protocol: u8, source_port: u16, destination_port: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&source_port.to_be_bytes());
    l4.extend_from_slice(&destination_port.to_be_bytes());
    let rest = if protocol == TCP { 16 } else { 4 };
    l4.extend(std::iter::repeat_n(0, rest));
    l4.extend_from_slice(b"payload!");
    l4
}

/// An IPv4 packet (with ports for TCP/UDP) inside Ethernet (and VLAN tags).
pub fn ipv4(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8, vlans: &[(u16, u16)]) -> Vec<u8> {
    let l4 = udp_or_tcp(protocol, 40000, 53);
    let mut frame = ethernet(0x0800, vlans);
    let total = (20 + l4.len()) as u16;
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&l4);
    frame
}

/// An IPv6 packet, optionally behind hop-by-hop and destination-options
/// extension headers.
pub fn ipv6(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    protocol: u8,
    extensions: bool,
    vlans: &[(u16, u16)],
) -> Vec<u8> {
    let l4 = udp_or_tcp(protocol, 40000, 53);
    let mut ext = Vec::new();
    let first = if extensions {
        // Hop-by-hop (8 bytes) → destination options (16 bytes) → protocol.
        ext.extend_from_slice(&[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[protocol, 1, 1, 12]);
        ext.extend(std::iter::repeat_n(0, 12));
        HOP_BY_HOP
    } else {
        protocol
    };
    let mut frame = ethernet(0x86dd, vlans);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[first, 64]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&ext);
    frame.extend_from_slice(&l4);
    frame
}

pub fn arp() -> Vec<u8> {
    let mut frame = ethernet(0x0806, &[]);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend(std::iter::repeat_n(0, 20));
    frame
}
