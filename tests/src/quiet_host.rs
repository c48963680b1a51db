//! A host namespace whose uplinks emit nothing on their own: IPv6 off (no
//! ND, MLD or router solicitations) and permanent neighbour entries on both
//! sides (no ARP). Whatever leaves an uplink is what the test sent, so
//! counters can be checked exactly.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use crate::{LabError, Netns, Result};

/// Bytes a UDP/IPv4 datagram adds around its payload on Ethernet:
/// Ethernet 14 + IPv4 20 + UDP 8.
pub const UDP4_FRAME_OVERHEAD: u64 = 14 + 20 + 8;

/// Port on the peer nobody listens on (packets are counted on egress only).
const DISCARD_PORT: u16 = 9;

pub struct QuietUplink {
    pub interface: String,
    pub address: Ipv4Addr,
    pub peer_address: Ipv4Addr,
}

pub struct QuietHost {
    pub host: Netns,
    pub peer: Netns,
    pub uplinks: Vec<QuietUplink>,
}

impl QuietHost {
    /// One uplink per name, uplink `i` on 10.99.i.0/24 (host .10, peer .1).
    pub fn start(interfaces: &[&str]) -> Result<Self> {
        let host = Netns::create("quiet-host")?;
        let peer = Netns::create("quiet-peer")?;
        for netns in [&host, &peer] {
            netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        let mut uplinks = Vec::with_capacity(interfaces.len());
        for (index, interface) in interfaces.iter().enumerate() {
            let subnet = u8::try_from(index).map_err(|_| LabError::Parse {
                command: "QuietHost::start".into(),
                output: format!("{} uplinks is too many", interfaces.len()),
            })?;
            let address = Ipv4Addr::new(10, 99, subnet, 10);
            let peer_address = Ipv4Addr::new(10, 99, subnet, 1);
            let host_mac = format!("02:00:00:00:{subnet:02x}:0a");
            let peer_mac = format!("02:00:00:00:{subnet:02x}:01");
            let peer_port = format!("p{index}");
            host.ip([
                "link",
                "add",
                interface,
                "address",
                &host_mac,
                "type",
                "veth",
                "peer",
                "name",
                &peer_port,
                "address",
                &peer_mac,
                "netns",
                peer.name(),
            ])?;
            host.ip(["addr", "add", &format!("{address}/24"), "dev", interface])?;
            peer.ip(["addr", "add", &format!("{peer_address}/24"), "dev", &peer_port])?;
            host.ip([
                "neigh",
                "replace",
                &peer_address.to_string(),
                "lladdr",
                &peer_mac,
                "dev",
                interface,
                "nud",
                "permanent",
            ])?;
            peer.ip([
                "neigh",
                "replace",
                &address.to_string(),
                "lladdr",
                &host_mac,
                "dev",
                &peer_port,
                "nud",
                "permanent",
            ])?;
            host.ip(["link", "set", interface, "up"])?;
            peer.ip(["link", "set", &peer_port, "up"])?;
            uplinks.push(QuietUplink { interface: (*interface).to_owned(), address, peer_address });
        }
        Ok(Self { host, peer, uplinks })
    }

    /// Sends `count` UDP datagrams of `payload_len` bytes out of uplink
    /// `index`, from its address to its peer. Each is
    /// `payload_len + UDP4_FRAME_OVERHEAD` bytes on the wire.
    pub fn send_udp(&self, index: usize, count: usize, payload_len: usize) -> Result<()> {
        let uplink = &self.uplinks[index];
        let (from, to) = (uplink.address, uplink.peer_address);
        self.host
            .run(move || -> std::io::Result<()> {
                let socket = UdpSocket::bind(SocketAddrV4::new(from, 0))?;
                let payload = vec![0x5a; payload_len];
                for _ in 0..count {
                    socket.send_to(&payload, SocketAddrV4::new(to, DISCARD_PORT))?;
                }
                Ok(())
            })?
            .map_err(LabError::io(format!("sending UDP from {from} to {to}")))
    }
}
