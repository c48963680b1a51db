//! Synchronous netlink dumps: one request, the replies read until
//! NLMSG_DONE. For what rtnetlink's async handle does not cover (sock_diag)
//! or where no runtime runs (tc filters, read by the guard).

use std::{fmt::Debug, io};

use rtnetlink::{
    packet_core::{
        NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
        NetlinkPayload, NetlinkSerializable,
    },
    sys::{Socket, SocketAddr},
};

/// A new socket of `protocol`, connected to the kernel, with `request`
/// (flagged `flags`) sent on it.
fn send<M>(protocol: isize, flags: u16, request: M) -> io::Result<Socket>
where
    M: NetlinkSerializable + Debug,
{
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    Ok(socket)
}

/// Sends `request` as a dump on a new socket of `protocol` and returns what
/// `keep` makes of each reply.
pub fn dump<M, T>(protocol: isize, request: M, mut keep: impl FnMut(M) -> Option<T>) -> io::Result<Vec<T>>
where
    M: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let socket = send(protocol, NLM_F_REQUEST | NLM_F_DUMP, request)?;

    let malformed = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut found = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        let mut rest = &buffer[..size];
        while !rest.is_empty() {
            let message = NetlinkMessage::<M>::deserialize(rest).map_err(|err| malformed(err.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(error) => return Err(error.to_io()),
                NetlinkPayload::InnerMessage(inner) => found.extend(keep(inner)),
                _ => {}
            }
            if length == 0 || length > rest.len() {
                return Err(malformed(format!("a netlink message of {length} bytes in {}", rest.len())));
            }
            rest = &rest[length.next_multiple_of(4).min(rest.len())..];
        }
    }
}

/// Sends `request` (not a dump) on a new socket of `protocol` and waits for
/// the kernel's acknowledgement: its error code as an `io::Error`.
pub fn request<M>(protocol: isize, request: M) -> io::Result<()>
where
    M: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let socket = send(protocol, NLM_F_REQUEST | NLM_F_ACK, request)?;
    let mut buffer = vec![0; 8 * 1024];
    let size = socket.recv(&mut &mut buffer[..], 0)?;
    let message = NetlinkMessage::<M>::deserialize(&buffer[..size])
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
    match message.payload {
        NetlinkPayload::Error(error) if error.code.is_some() => Err(error.to_io()),
        _ => Ok(()),
    }
}
