//! Established TCP connections from the kernel's sock_diag.

use std::{io, net::SocketAddr};

use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use rtnetlink::sys::protocols::NETLINK_SOCK_DIAG;

use crate::model::Connection;

/// Every established TCP connection (IPv4 and IPv6) except loopback ones.
pub fn established() -> io::Result<Vec<Connection>> {
    let mut connections = Vec::new();
    for family in [AF_INET, AF_INET6] {
        connections.extend(dump(family)?);
    }
    connections.retain(|c| !c.local.ip().is_loopback() && !c.remote.ip().is_loopback());
    connections.sort();
    connections.dedup();
    Ok(connections)
}

fn dump(family: u8) -> io::Result<Vec<Connection>> {
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::ESTABLISHED,
        socket_id,
    };
    crate::raw_netlink::dump(NETLINK_SOCK_DIAG, SockDiagMessage::InetRequest(request), |message| {
        match message {
            SockDiagMessage::InetResponse(response) => {
                let id = &response.header.socket_id;
                // IPv4 on dual-stack sockets comes as ::ffff:a.b.c.d.
                Some(Connection {
                    local: SocketAddr::new(id.source_address.to_canonical(), id.source_port),
                    remote: SocketAddr::new(id.destination_address.to_canonical(), id.destination_port),
                })
            }
            _ => None,
        }
    })
}
