//! Hand-made frames sent through a packet socket bound to a device: any
//! source address, out of any interface, bypassing routing (the TC egress
//! hook still sees them).

use std::net::Ipv4Addr;

use nix::libc;

use crate::{LabError, Netns, Result};

pub type Mac = [u8; 6];

/// Bytes an Ethernet + IPv4 + UDP frame adds around its payload.
pub const UDP4_OVERHEAD: usize = 14 + 20 + 8;

/// The MAC address of `interface` in `netns`.
pub fn mac_of(netns: &Netns, interface: &str) -> Result<Mac> {
    let output = netns.ip(["-o", "link", "show", "dev", interface])?;
    let parse_error =
        || LabError::Parse { command: format!("ip -o link show dev {interface}"), output: output.clone() };
    let text = output
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(parse_error)?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = parts.next().and_then(|p| u8::from_str_radix(p, 16).ok()).ok_or_else(parse_error)?;
    }
    Ok(mac)
}

/// An Ethernet/IPv4/UDP frame with a valid IPv4 header checksum.
pub fn udp4_frame(
    source_mac: Mac,
    destination_mac: Mac,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    payload_len: usize,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(UDP4_OVERHEAD + payload_len);
    frame.extend_from_slice(&destination_mac);
    frame.extend_from_slice(&source_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload_len) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&source.octets());
    ip[16..20].copy_from_slice(&destination.octets());
    let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&9u16.to_be_bytes());
    frame.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]); // no UDP checksum (allowed for IPv4)
    frame.extend(std::iter::repeat_n(0x5a, payload_len));
    frame
}

/// Sends `frame` `count` times out of `interface` in `netns`; returns how
/// many the stack reported dropped on egress (ENOBUFS: a TC program or
/// qdisc dropped it).
pub fn send_frames(netns: &Netns, interface: &str, frame: &[u8], count: usize) -> Result<usize> {
    let sender = RawSender::open(netns, interface)?;
    let mut dropped = 0;
    for _ in 0..count {
        let sent =
            sender.send(frame).map_err(LabError::io(format!("sending raw frames in {}", netns.name())))?;
        dropped += usize::from(!sent);
    }
    Ok(dropped)
}

/// An AF_PACKET socket bound to an interface of a namespace, for sending
/// many different frames fast (the socket stays in its namespace).
pub struct RawSender {
    socket: std::os::fd::OwnedFd,
    address: libc::sockaddr_ll,
}

impl RawSender {
    pub fn open(netns: &Netns, interface: &str) -> Result<Self> {
        let interface = interface.to_owned();
        netns
            .run(move || -> std::io::Result<Self> {
                use std::os::fd::FromRawFd as _;
                let name = std::ffi::CString::new(interface).map_err(std::io::Error::other)?;
                // SAFETY: plain libc calls; the fd is owned right away.
                unsafe {
                    let index = libc::if_nametoindex(name.as_ptr());
                    if index == 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut address: libc::sockaddr_ll = std::mem::zeroed();
                    address.sll_family = libc::AF_PACKET as u16;
                    address.sll_ifindex = index as i32;
                    address.sll_halen = 6;
                    Ok(Self { socket: std::os::fd::OwnedFd::from_raw_fd(fd), address })
                }
            })?
            .map_err(LabError::io(format!("opening a raw socket in {}", netns.name())))
    }

    /// Sends one frame; false when the stack dropped it on egress (ENOBUFS).
    pub fn send(&self, frame: &[u8]) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: the buffer and address are live and correctly sized.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const self.address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent >= 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOBUFS) { Ok(false) } else { Err(error) }
    }
}

/// Packets received by `interface` in `netns` (its RX counter).
pub fn rx_packets(netns: &Netns, interface: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{interface}/statistics/rx_packets");
    // /sys shows the namespace that mounted it, so read through `ip`.
    let output = netns.ip(["-s", "-o", "link", "show", "dev", interface])?;
    let parse_error = || LabError::Parse { command: path.clone(), output: output.clone() };
    let rx = output.split("RX:").nth(1).ok_or_else(parse_error)?;
    // "RX:  bytes packets errors ... \    <bytes> <packets> ..."
    let numbers: Vec<u64> = rx.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    numbers.get(1).copied().ok_or_else(parse_error)
}
