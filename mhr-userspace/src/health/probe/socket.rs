//! Sockets for the TCP, DNS and HTTP probes: bound to the uplink's device
//! and its source address before they send anything, so they leave by the
//! uplink whatever main's default says.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

use super::ProbePlan;

fn bound(plan: &ProbePlan, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let domain = if plan.source.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, kind.cloexec(), Some(protocol))?;
    socket.bind_device(Some(plan.interface.as_bytes()))?;
    socket.bind(&SocketAddr::new(plan.source, 0).into())?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP connection to `to` from the plan's uplink; `Ok(Err(refused))`
/// distinguishes a refused connection (the target's host answered).
pub(super) async fn connect(
    plan: &ProbePlan,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<std::io::Result<tokio::net::TcpStream>> {
    let socket =
        tokio::net::TcpSocket::from_std_stream(TcpStream::from(bound(plan, Type::STREAM, Protocol::TCP)?));
    match tokio::time::timeout(timeout, socket.connect(to)).await {
        Ok(connected) => Ok(connected),
        Err(_) => {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
        }
    }
}

/// A UDP socket from the plan's uplink, connected to `to`.
pub(super) async fn udp(plan: &ProbePlan, to: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = tokio::net::UdpSocket::from_std(UdpSocket::from(bound(plan, Type::DGRAM, Protocol::UDP)?))?;
    socket.connect(to).await?;
    Ok(socket)
}
