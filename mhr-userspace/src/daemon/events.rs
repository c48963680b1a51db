//! A netlink socket subscribed to link, address, route and rule changes
//! (IPv4 and IPv6). The daemon mostly needs to know that something
//! changed (it re-reads the whole state when it reconciles); new addresses
//! are decoded so the guard can learn them before the debounce.

use std::io;

use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
    sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE},
};

use crate::observe::{Address, address_from_message};

/// RTNLGRP_LINK, IPV4_IFADDR, IPV4_ROUTE, IPV4_RULE, IPV6_IFADDR,
/// IPV6_ROUTE, IPV6_RULE.
const GROUPS: [u32; 7] = [1, 5, 7, 8, 9, 11, 19];

/// What arrived on the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Some link, address, route or rule changed; `added` are the global
    /// addresses among the changes that appeared.
    Changed { added: Vec<Address> },
    /// The kernel dropped notifications (ENOBUFS): only a full resync is safe.
    Overrun,
}

pub struct EventSocket {
    socket: TokioSocket,
}

impl EventSocket {
    /// Opens the socket in the calling thread's network namespace.
    /// `receive_buffer` sizes the kernel's queue for it (bytes).
    pub fn open(receive_buffer: usize) -> io::Result<Self> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        socket.socket_mut().bind(&SocketAddr::new(0, 0))?;
        for group in GROUPS {
            socket.socket_ref().add_membership(group)?;
        }
        let size = i32::try_from(receive_buffer).unwrap_or(i32::MAX);
        socket.socket_ref().set_rx_buf_sz(size)?;
        Ok(Self { socket })
    }

    /// Waits for the next notification.
    pub async fn next(&mut self) -> io::Result<Event> {
        match self.socket.recv_from_full().await {
            Ok((bytes, _)) => Ok(Event::Changed { added: added_addresses(&bytes) }),
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => Ok(Event::Overrun),
            Err(err) => Err(err),
        }
    }
}

/// The addresses RTM_NEWADDR messages in one datagram announce.
fn added_addresses(mut bytes: &[u8]) -> Vec<Address> {
    const HEADER: usize = 16;
    let mut added = Vec::new();
    while bytes.len() >= HEADER {
        let length = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if length < HEADER || length > bytes.len() {
            break;
        }
        if let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..length])
            && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)) = message.payload
            && let Some(address) = address_from_message(&address)
        {
            added.push(address);
        }
        // Messages are 4-byte aligned.
        bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
    }
    added
}
