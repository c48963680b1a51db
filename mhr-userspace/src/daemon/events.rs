//! A netlink socket subscribed to link, address, route and rule changes
//! (IPv4 and IPv6). The daemon only needs to know that something changed;
//! it re-reads the whole state when it reconciles.

use std::io;

use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

/// RTNLGRP_LINK, IPV4_IFADDR, IPV4_ROUTE, IPV4_RULE, IPV6_IFADDR,
/// IPV6_ROUTE, IPV6_RULE.
const GROUPS: [u32; 7] = [1, 5, 7, 8, 9, 11, 19];

/// What arrived on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Some link, address, route or rule changed.
    Changed,
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
            Ok(_) => Ok(Event::Changed),
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => Ok(Event::Overrun),
            Err(err) => Err(err),
        }
    }
}
