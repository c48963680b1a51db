//! Nexthop objects over rtnetlink (RTM_*NEXTHOP, `linux/nexthop.h`).
//! netlink-packet-route has no nexthop messages, so they are written and
//! read here, on a socket of their own, one request at a time.

use std::net::IpAddr;

use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::{
    model::{Family, GroupMember, Nexthop, NexthopKind},
    southbound::KernelError,
};

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_GROUP_TYPE: u16 = 3;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_RES_GROUP: u16 = 12;
const NHA_RES_GROUP_BUCKETS: u16 = 1;
const NHA_RES_GROUP_IDLE_TIMER: u16 = 2;
const NHA_RES_GROUP_UNBALANCED_TIMER: u16 = 3;
const NEXTHOP_GRP_TYPE_RES: u16 = 1;
const RTNH_F_ONLINK: u32 = 4;
/// The kernel counts group timers in clock_t (USER_HZ, 100 on Linux).
const USER_HZ: u32 = 100;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const HEADER: usize = 16;
const NHMSG: usize = 8;

/// What to do with a nexthop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Replace,
    Delete,
}

/// Every nexthop object in the namespace.
pub fn dump() -> Result<Vec<Nexthop>, KernelError> {
    let socket = open()?;
    let request = message(RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, header(AF_UNSPEC, 0, 0), &[]);
    socket.send(&request, 0).map_err(transport)?;
    let mut found = Vec::new();
    loop {
        for (kind, payload) in receive(&socket)? {
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => error_code(&payload)?,
                RTM_NEWNEXTHOP => found.extend(decode(&payload)),
                _ => {}
            }
        }
    }
}

/// Adds, replaces or deletes `nexthop`, waiting for the kernel's answer.
pub fn change(verb: Verb, nexthop: &Nexthop) -> Result<(), KernelError> {
    let socket = open()?;
    socket.send(&request(verb, nexthop), 0).map_err(transport)?;
    loop {
        for (kind, payload) in receive(&socket)? {
            if kind == NLMSG_ERROR {
                return error_code(&payload);
            }
        }
    }
}

/// The request for `verb` on `nexthop`.
pub fn request(verb: Verb, nexthop: &Nexthop) -> Vec<u8> {
    let id = attribute(NHA_ID, &nexthop.id.to_ne_bytes());
    let (kind, flags) = match verb {
        Verb::Add => (RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_EXCL),
        Verb::Replace => (RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_REPLACE),
        Verb::Delete => (RTM_DELNEXTHOP, 0),
    };
    let flags = flags | NLM_F_REQUEST | NLM_F_ACK;
    if verb == Verb::Delete {
        return message(kind, flags, header(AF_UNSPEC, 0, 0), &id);
    }
    let mut attributes = id;
    let (family, nexthop_flags) = match &nexthop.kind {
        NexthopKind::Via { family, gateway, interface, onlink } => {
            attributes.extend(attribute(NHA_OIF, &interface.to_ne_bytes()));
            if let Some(gateway) = gateway {
                attributes.extend(attribute(NHA_GATEWAY, &address_bytes(*gateway)));
            }
            (family_byte(*family), if *onlink { RTNH_F_ONLINK } else { 0 })
        }
        NexthopKind::Resilient { members, buckets, idle_timer, unbalanced_timer } => {
            let mut group = Vec::new();
            for member in members {
                group.extend(member.id.to_ne_bytes());
                // The kernel holds weight − 1 (1–256 in a byte).
                group.push(u8::try_from(member.weight.saturating_sub(1)).unwrap_or(u8::MAX));
                group.extend([0; 3]);
            }
            attributes.extend(attribute(NHA_GROUP, &group));
            attributes.extend(attribute(NHA_GROUP_TYPE, &NEXTHOP_GRP_TYPE_RES.to_ne_bytes()));
            let mut nested = attribute(NHA_RES_GROUP_BUCKETS, &buckets.to_ne_bytes());
            nested.extend(attribute(
                NHA_RES_GROUP_IDLE_TIMER,
                &idle_timer.saturating_mul(USER_HZ).to_ne_bytes(),
            ));
            nested.extend(attribute(
                NHA_RES_GROUP_UNBALANCED_TIMER,
                &unbalanced_timer.saturating_mul(USER_HZ).to_ne_bytes(),
            ));
            attributes.extend(attribute(NHA_RES_GROUP | NLA_F_NESTED, &nested));
            (AF_UNSPEC, 0)
        }
        NexthopKind::Other => (AF_UNSPEC, 0),
    };
    message(kind, flags, header(family, nexthop.protocol, nexthop_flags), &attributes)
}

/// A nexthop from an RTM_NEWNEXTHOP payload (nhmsg and attributes).
pub fn decode(payload: &[u8]) -> Option<Nexthop> {
    let family = *payload.first()?;
    let protocol = *payload.get(2)?;
    let flags = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let found = attributes(payload.get(NHMSG..)?);
    let id = found.iter().find(|(kind, _)| *kind == NHA_ID).and_then(|(_, v)| u32_of(v))?;
    let find = |wanted: u16| found.iter().find(|(kind, _)| *kind & !NLA_F_NESTED == wanted).map(|(_, v)| *v);
    let kind = if let Some(group) = find(NHA_GROUP) {
        let group_type =
            find(NHA_GROUP_TYPE).and_then(|v| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)));
        match (group_type, find(NHA_RES_GROUP)) {
            (Some(NEXTHOP_GRP_TYPE_RES), Some(resilient)) => {
                let members = group
                    .chunks_exact(8)
                    .filter_map(|entry| {
                        let id = u32_of(&entry[..4])?;
                        Some(GroupMember { id, weight: u32::from(entry[4]) + 1 })
                    })
                    .collect();
                let nested = attributes(resilient);
                let value = |wanted: u16| nested.iter().find(|(kind, _)| *kind == wanted).map(|(_, v)| *v);
                let buckets = value(NHA_RES_GROUP_BUCKETS)
                    .and_then(|v| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)))?;
                let timer = |wanted| value(wanted).and_then(u32_of).map(|t| t / USER_HZ);
                NexthopKind::Resilient {
                    members,
                    buckets,
                    idle_timer: timer(NHA_RES_GROUP_IDLE_TIMER)?,
                    unbalanced_timer: timer(NHA_RES_GROUP_UNBALANCED_TIMER)?,
                }
            }
            _ => NexthopKind::Other,
        }
    } else if let Some(interface) = find(NHA_OIF).and_then(u32_of) {
        let family = match family {
            AF_INET => Family::V4,
            AF_INET6 => Family::V6,
            _ => return Some(Nexthop { id, protocol, kind: NexthopKind::Other }),
        };
        let gateway = find(NHA_GATEWAY).and_then(address_of);
        NexthopKind::Via { family, gateway, interface, onlink: flags & RTNH_F_ONLINK != 0 }
    } else {
        NexthopKind::Other
    };
    Some(Nexthop { id, protocol, kind })
}

fn open() -> Result<Socket, KernelError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(transport)?;
    socket.bind_auto().map_err(transport)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(transport)?;
    Ok(socket)
}

fn transport(err: std::io::Error) -> KernelError {
    KernelError::NoAnswer { errno: err.raw_os_error() }
}

/// The messages of one datagram: (type, payload after the header).
fn receive(socket: &Socket) -> Result<Vec<(u16, Vec<u8>)>, KernelError> {
    let mut buffer = vec![0u8; 1 << 16];
    let length = socket.recv(&mut &mut buffer[..], 0).map_err(transport)?;
    let mut bytes = buffer.get(..length).unwrap_or_default();
    let mut messages = Vec::new();
    while bytes.len() >= HEADER {
        let total = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if total < HEADER || total > bytes.len() {
            break;
        }
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        messages.push((kind, bytes[HEADER..total].to_vec()));
        bytes = bytes.get(align(total)..).unwrap_or_default();
    }
    Ok(messages)
}

/// An NLMSG_ERROR payload: 0 is the acknowledgement.
fn error_code(payload: &[u8]) -> Result<(), KernelError> {
    let code = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or(KernelError::Unreadable("a netlink error message shorter than its code"))?;
    match code {
        0 => Ok(()),
        code => Err(KernelError::Refused(-code)),
    }
}

fn header(family: u8, protocol: u8, flags: u32) -> [u8; NHMSG] {
    let mut header = [0u8; NHMSG];
    header[0] = family;
    header[2] = protocol;
    header[4..8].copy_from_slice(&flags.to_ne_bytes());
    header
}

fn message(kind: u16, flags: u16, nhmsg: [u8; NHMSG], attributes: &[u8]) -> Vec<u8> {
    let length = HEADER + NHMSG + attributes.len();
    let mut out = Vec::with_capacity(length);
    out.extend(u32::try_from(length).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(1u32.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend(nhmsg);
    out.extend(attributes);
    out
}

fn align(length: usize) -> usize {
    length.div_ceil(4) * 4
}

fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let length = 4 + value.len();
    let mut out = Vec::with_capacity(align(length));
    out.extend(u16::try_from(length).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize(align(length), 0);
    out
}

/// (type, value) of each attribute.
fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while bytes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        if length < 4 || length > bytes.len() {
            break;
        }
        found.push((u16::from_ne_bytes([bytes[2], bytes[3]]), &bytes[4..length]));
        bytes = bytes.get(align(length)..).unwrap_or_default();
    }
    found
}

fn u32_of(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

fn family_byte(family: Family) -> u8 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn address_of(value: &[u8]) -> Option<IpAddr> {
    match value.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(request: &[u8]) -> &[u8] {
        &request[HEADER..]
    }

    #[test]
    fn every_kind_mhr_writes_reads_back_the_same() {
        let via = Nexthop {
            id: 7,
            protocol: 210,
            kind: NexthopKind::Via {
                family: Family::V6,
                gateway: Some("fe80::1".parse().unwrap()),
                interface: 4,
                onlink: true,
            },
        };
        let group = Nexthop {
            id: 9,
            protocol: 210,
            kind: NexthopKind::Resilient {
                members: vec![GroupMember { id: 7, weight: 1 }, GroupMember { id: 8, weight: 256 }],
                buckets: 512,
                idle_timer: 120,
                unbalanced_timer: 600,
            },
        };
        for nexthop in [via, group] {
            let request = request(Verb::Replace, &nexthop);
            assert_eq!(request.len(), u32_of(&request).unwrap() as usize);
            assert_eq!(decode(payload(&request)), Some(nexthop));
        }
    }

    #[test]
    fn a_deletion_names_only_the_id_and_adding_refuses_to_overwrite() {
        let nexthop = Nexthop { id: 7, protocol: 210, kind: NexthopKind::Other };
        let delete = request(Verb::Delete, &nexthop);
        assert_eq!(u16::from_ne_bytes([delete[4], delete[5]]), RTM_DELNEXTHOP);
        assert_eq!(delete.len(), HEADER + NHMSG + 8);
        let add = request(Verb::Add, &nexthop);
        let flags = u16::from_ne_bytes([add[6], add[7]]);
        assert_eq!(flags & NLM_F_EXCL, NLM_F_EXCL);
        assert_eq!(flags & NLM_F_REPLACE, 0);
    }

    #[test]
    fn a_truncated_message_is_not_a_nexthop() {
        assert_eq!(decode(&[2, 0, 210]), None);
        let mut short = header(AF_INET, 210, 0).to_vec();
        short.extend([8, 0, 1, 0, 7, 0]);
        assert_eq!(decode(&short), None);
    }
}
