//! TCP sockets through the kernel's sock_diag: established connections,
//! listening ports, and closing one connection (SOCK_DESTROY: the kernel
//! resets it, as `ss -K` does).

use std::{io, net::SocketAddr};

use netlink_packet_sock_diag::{
    SockDiagDestroy, SockDiagMessage,
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

/// The ports TCP sockets listen on (any address, both families): a
/// connection on one of them arrived from outside.
pub fn listening_ports() -> io::Result<std::collections::BTreeSet<u16>> {
    let mut ports = std::collections::BTreeSet::new();
    for family in [AF_INET, AF_INET6] {
        let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        };
        let found =
            crate::raw_netlink::dump(NETLINK_SOCK_DIAG, SockDiagMessage::InetRequest(request), |message| {
                match message {
                    SockDiagMessage::InetResponse(response) => Some(response.header.socket_id.source_port),
                    _ => None,
                }
            })?;
        ports.extend(found);
    }
    Ok(ports)
}

/// Closes one established connection: the kernel sends its peer a reset
/// and the application sees ECONNABORTED (needs CAP_NET_ADMIN and
/// CONFIG_INET_DIAG_DESTROY).
pub fn destroy(connection: &Connection) -> io::Result<()> {
    let v4 = connection.local.is_ipv4();
    let mut socket_id = if v4 { SocketId::new_v4() } else { SocketId::new_v6() };
    socket_id.source_address = connection.local.ip();
    socket_id.source_port = connection.local.port();
    socket_id.destination_address = connection.remote.ip();
    socket_id.destination_port = connection.remote.port();
    // INET_DIAG_NOCOOKIE: any socket with this 4-tuple.
    socket_id.cookie = [0xff; 8];
    let request = InetRequest {
        family: if v4 { AF_INET } else { AF_INET6 },
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id,
    };
    crate::raw_netlink::request(
        NETLINK_SOCK_DIAG,
        SockDiagDestroy::new(SockDiagMessage::InetRequest(request)),
    )
}
