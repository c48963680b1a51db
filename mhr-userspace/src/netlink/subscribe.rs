//! A netlink socket subscribed to link, address, route and rule changes
//! (IPv4 and IPv6). The daemon mostly needs to know that something
//! changed (it re-reads the whole state when it reconciles); new addresses
//! are decoded so the guard can learn them before the debounce.

use std::io;

use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        route::{RouteAttribute, RouteMessage},
    },
    sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE},
};

use super::decode::address_from_message;
use crate::{
    model::Address,
    southbound::{Event, Notifications, RouteFilter},
};

/// RTNLGRP_LINK, IPV4_IFADDR, IPV4_ROUTE, IPV4_RULE, IPV6_IFADDR,
/// IPV6_ROUTE, IPV6_RULE.
const GROUPS: [u32; 7] = [1, 5, 7, 8, 9, 11, 19];

/// Whether a route message concerns mhr under `filter`.
fn route_matters(filter: &RouteFilter, message: &RouteMessage) -> bool {
    let mut table = u32::from(message.header.table);
    for attribute in &message.attributes {
        if let RouteAttribute::Table(long) = attribute {
            table = *long;
        }
    }
    filter.matters(table, message.header.destination_prefix_length)
}

pub struct EventSocket {
    socket: TokioSocket,
    filter: Option<RouteFilter>,
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
        Ok(Self { socket, filter: None })
    }

    /// Reports route changes outside what `filter` keeps as [`Event::Ignored`].
    pub fn with_route_filter(mut self, filter: RouteFilter) -> Self {
        self.filter = Some(filter);
        self
    }
}

#[async_trait::async_trait]
impl Notifications for EventSocket {
    fn set_route_filter(&mut self, filter: RouteFilter) {
        self.filter = Some(filter);
    }

    async fn next(&mut self) -> io::Result<Event> {
        match self.socket.recv_from_full().await {
            Ok((bytes, _)) => {
                let decoded = decode(&bytes, self.filter.as_ref());
                Ok(if decoded.relevant {
                    Event::Changed { added: decoded.added, removed_by: decoded.removed_by }
                } else {
                    Event::Ignored
                })
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => Ok(Event::Overrun),
            Err(err) => Err(err),
        }
    }
}

/// What one datagram of notifications says.
#[derive(Debug, Default, PartialEq)]
struct Decoded {
    /// Global addresses RTM_NEWADDR messages announce.
    added: Vec<Address>,
    /// Anything but route changes the filter ignores (or undecodable).
    relevant: bool,
    /// Port ids of the sockets that deleted a rule or a relevant route.
    removed_by: Vec<u32>,
}

fn decode(mut bytes: &[u8], filter: Option<&RouteFilter>) -> Decoded {
    const HEADER: usize = 16;
    let mut decoded = Decoded::default();
    if bytes.len() < HEADER {
        decoded.relevant = true;
    }
    while bytes.len() >= HEADER {
        let length = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if length < HEADER || length > bytes.len() {
            decoded.relevant = true;
            break;
        }
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..length]);
        let sender = message.as_ref().map_or(0, |m| m.header.port_number);
        let mut removed_by = |sender: u32| {
            if sender != 0 && !decoded.removed_by.contains(&sender) {
                decoded.removed_by.push(sender);
            }
        };
        match message.map(|m| m.payload) {
            Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address))) => {
                decoded.relevant = true;
                decoded.added.extend(address_from_message(&address));
            }
            Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(route))) => {
                if filter.is_none_or(|filter| route_matters(filter, &route)) {
                    decoded.relevant = true;
                    removed_by(sender);
                }
            }
            Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route))) => {
                decoded.relevant |= filter.is_none_or(|filter| route_matters(filter, &route));
            }
            Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRule(_))) => {
                decoded.relevant = true;
                removed_by(sender);
            }
            // Links, addresses gone, rules, and whatever could not be read.
            _ => decoded.relevant = true,
        }
        // Messages are 4-byte aligned.
        bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
    }
    decoded
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage};
    use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};

    use super::*;
    use crate::model::MAIN_TABLE;

    fn datagram(messages: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for inner in messages {
            let mut message = NetlinkMessage::new(NetlinkHeader::default(), inner.into());
            message.finalize();
            let mut buffer = vec![0; message.buffer_len()];
            message.serialize(&mut buffer);
            bytes.extend(buffer);
        }
        bytes
    }

    #[test]
    fn deletions_name_the_port_that_asked_for_them_and_the_kernels_own_do_not() {
        use rtnetlink::packet_route::rule::RuleMessage;

        let sent_by = |port: u32, inner: RouteNetlinkMessage| {
            let mut header = NetlinkHeader::default();
            header.port_number = port;
            let mut message = NetlinkMessage::new(header, inner.into());
            message.finalize();
            let mut buffer = vec![0; message.buffer_len()];
            message.serialize(&mut buffer);
            buffer
        };
        let filter = RouteFilter { tables: (7100, 7199), explicit: vec![] };
        let mut bytes = sent_by(4242, RouteNetlinkMessage::DelRule(RuleMessage::default()));
        bytes.extend(sent_by(77, RouteNetlinkMessage::DelRoute(route(500, 24))));
        bytes.extend(sent_by(0, RouteNetlinkMessage::DelRoute(route(7150, 24))));
        bytes.extend(sent_by(4242, RouteNetlinkMessage::DelRoute(route(MAIN_TABLE, 24))));
        bytes.extend(sent_by(99, RouteNetlinkMessage::NewRoute(route(MAIN_TABLE, 24))));
        let decoded = decode(&bytes, Some(&filter));
        assert!(decoded.relevant);
        assert_eq!(
            decoded.removed_by,
            vec![4242],
            "once, not the ignored table's, not the kernel's, not an addition"
        );
    }

    fn route(table: u32, prefix_len: u8) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.table = u8::try_from(table).unwrap_or(252);
        message.header.destination_prefix_length = prefix_len;
        message.attributes.push(RouteAttribute::Table(table));
        message
    }

    fn filter() -> RouteFilter {
        RouteFilter { tables: (7100, 7199), explicit: vec![500] }
    }

    #[test]
    fn route_churn_in_foreign_tables_is_ignored_the_rest_is_not() {
        let bgp = datagram(vec![
            RouteNetlinkMessage::NewRoute(route(100, 24)),
            RouteNetlinkMessage::DelRoute(route(100_000, 16)),
        ]);
        let filter = filter();
        assert!(!decode(&bgp, Some(&filter)).relevant, "prefixes in other tables");
        assert!(decode(&bgp, None).relevant, "without a filter everything counts");
        for relevant in [route(MAIN_TABLE, 24), route(7150, 24), route(500, 24), route(100, 0)] {
            let bytes = datagram(vec![
                RouteNetlinkMessage::NewRoute(route(100, 24)),
                RouteNetlinkMessage::NewRoute(relevant),
            ]);
            assert!(decode(&bytes, Some(&filter)).relevant, "main, mhr's tables and defaults anywhere count");
        }
        assert!(decode(&[1, 2, 3], Some(&filter)).relevant, "what cannot be read counts");
    }

    #[test]
    fn new_global_addresses_are_decoded_for_the_guard() {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
        let mut message = AddressMessage::default();
        message.header.index = 7;
        message.header.prefix_len = 24;
        message.header.scope = AddressScope::Universe;
        message.attributes.push(AddressAttribute::Local("192.0.2.10".parse().unwrap()));
        let bytes = datagram(vec![
            RouteNetlinkMessage::NewRoute(route(100, 24)),
            RouteNetlinkMessage::NewAddress(message),
        ]);
        let decoded = decode(&bytes, Some(&filter()));
        let address = Address { interface: 7, address: "192.0.2.10".parse().unwrap(), prefix_len: 24 };
        assert_eq!(decoded, Decoded { added: vec![address], relevant: true, removed_by: vec![] });
    }

    #[test]
    fn a_header_only_message_counts_and_the_next_is_still_read() {
        let mut noop = vec![0u8; 16];
        noop[..4].copy_from_slice(&16u32.to_ne_bytes());
        noop[4..6].copy_from_slice(&1u16.to_ne_bytes()); // NLMSG_NOOP
        let mut message = rtnetlink::packet_route::address::AddressMessage::default();
        message.header.index = 7;
        message.header.prefix_len = 24;
        message
            .attributes
            .push(rtnetlink::packet_route::address::AddressAttribute::Local("192.0.2.10".parse().unwrap()));
        noop.extend(datagram(vec![RouteNetlinkMessage::NewAddress(message)]));
        let decoded = decode(&noop, Some(&filter()));
        assert!(decoded.relevant);
        assert_eq!(decoded.added.len(), 1, "the address behind the header-only message");
    }

    #[test]
    fn a_zero_length_message_ends_the_datagram() {
        let bytes = [0u8; 32];
        assert!(decode(&bytes, Some(&filter())).relevant);
    }

    #[test]
    fn a_message_longer_than_its_datagram_counts_and_is_not_read_past() {
        let mut bytes = datagram(vec![RouteNetlinkMessage::NewRoute(route(100, 24))]);
        let claimed = (bytes.len() as u32 + 64).to_ne_bytes();
        bytes[..4].copy_from_slice(&claimed);
        assert!(decode(&bytes, Some(&filter())).relevant);
    }
}
