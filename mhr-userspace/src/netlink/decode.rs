//! Netlink messages into mhr's model: links, addresses, routes, rules and
//! neighbours as plain data.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};

use crate::model::{Address, Family, Framing, Link, NextHop, Route, Rule};

/// A neighbour whose resolution failed (`FAILED`, or `INCOMPLETE`: asked
/// and not yet answered): (ifindex, address).
pub fn failed_neighbour(message: &NeighbourMessage) -> Option<(u32, IpAddr)> {
    if !matches!(message.header.state, NeighbourState::Failed | NeighbourState::Incomplete) {
        return None;
    }
    message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
            Some((message.header.ifindex, IpAddr::V4(*v4)))
        }
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
            Some((message.header.ifindex, IpAddr::V6(*v6)))
        }
        _ => None,
    })
}

pub fn link_from_message(message: &LinkMessage) -> Option<Link> {
    let name = message.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })?;
    let flags = message.header.flags;
    Some(Link {
        index: message.header.index,
        name,
        up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        point_to_point: flags.contains(LinkFlags::Pointopoint),
        framing: framing(message.header.link_layer_type),
    })
}

pub fn address_from_message(message: &AddressMessage) -> Option<Address> {
    if message.header.scope != AddressScope::Universe {
        return None;
    }
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on
    // point-to-point links (and equal to IFA_LOCAL elsewhere).
    let local = message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(address) => Some(*address),
        _ => None,
    });
    let address = local.or_else(|| {
        message.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(address) => Some(*address),
            _ => None,
        })
    })?;
    Some(Address { interface: message.header.index, address, prefix_len: message.header.prefix_len })
}

/// A deprecated address, or an IPv6 temporary (privacy) one (IPv6's
/// IFA_F_TEMPORARY is IPv4's IFA_F_SECONDARY bit).
pub fn address_is_unpreferred(message: &AddressMessage) -> bool {
    const TEMPORARY: u32 = 0x01;
    const DEPRECATED: u32 = 0x20;
    let flags = message
        .attributes
        .iter()
        .find_map(|attr| match attr {
            AddressAttribute::Flags(flags) => Some(flags.bits()),
            _ => None,
        })
        .unwrap_or_else(|| u32::from(message.header.flags.bits()));
    let v6 = message.header.family == rtnetlink::packet_route::AddressFamily::Inet6;
    flags & DEPRECATED != 0 || (v6 && flags & TEMPORARY != 0)
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Unicast routes only; cached clones and other kinds are not mhr's business.
pub fn route_from_message(message: &RouteMessage) -> Option<Route> {
    let header = &message.header;
    if header.kind != RouteType::Unicast || header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    route_fields(message)
}

/// The route fields of any route message, also a lookup's answer.
pub fn route_fields(message: &RouteMessage) -> Option<Route> {
    let header = &message.header;
    let family = match header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut route = Route {
        table: u32::from(header.table),
        destination: family.default_route(),
        gateway: None,
        interface: None,
        source: None,
        protocol: header.protocol.into(),
        scope: header.scope.into(),
        metric: None,
        onlink: header.flags.contains(RouteFlags::Onlink),
        multipath: Vec::new(),
        nexthop_group: None,
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(table) => route.table = *table,
            RouteAttribute::Destination(address) => {
                let address = ip_of(address)?;
                route.destination = IpNet::new(address, header.destination_prefix_length).ok()?;
            }
            RouteAttribute::Gateway(address) => route.gateway = ip_of(address),
            RouteAttribute::Oif(index) => route.interface = Some(*index),
            RouteAttribute::PrefSource(address) => route.source = ip_of(address),
            RouteAttribute::Priority(metric) => route.metric = Some(*metric),
            RouteAttribute::MultiPath(hops) => route.multipath = hops.iter().filter_map(next_hop).collect(),
            RouteAttribute::NhId(id) => route.nexthop_group = Some(*id),
            _ => {}
        }
    }
    // A one-hop multipath message is a plain route.
    if let [only] = route.multipath.as_slice() {
        route.gateway = only.gateway;
        route.interface = Some(only.interface);
        route.multipath.clear();
    }
    Some(route)
}

fn next_hop(hop: &RouteNextHop) -> Option<NextHop> {
    let gateway = hop.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Gateway(address) => ip_of(address),
        _ => None,
    });
    Some(NextHop { gateway, interface: hop.interface_index, weight: u32::from(hop.hops) + 1 })
}

pub fn rule_from_message(message: &RuleMessage) -> Option<Rule> {
    let header = &message.header;
    let family = match header.family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut rule = Rule {
        family,
        priority: 0,
        table: u32::from(header.table),
        source: None,
        destination: None,
        protocol: 0,
        suppress_prefixlength: None,
        selectors: Default::default(),
        other_selectors: header.action != RuleAction::ToTable || header.tos != 0 || !header.flags.is_empty(),
    };
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(priority) => rule.priority = *priority,
            RuleAttribute::Table(table) => rule.table = *table,
            RuleAttribute::Source(address) => rule.source = IpNet::new(*address, header.src_len).ok(),
            RuleAttribute::Destination(address) => {
                rule.destination = IpNet::new(*address, header.dst_len).ok()
            }
            RuleAttribute::Protocol(protocol) => rule.protocol = (*protocol).into(),
            RuleAttribute::IpProtocol(protocol) => rule.selectors.ipproto = Some(u8::from(*protocol)),
            RuleAttribute::SourcePortRange(range) => rule.selectors.sport = Some((range.start, range.end)),
            RuleAttribute::DestinationPortRange(range) => {
                rule.selectors.dport = Some((range.start, range.end))
            }
            RuleAttribute::UidRange(range) => rule.selectors.uid = Some((range.start, range.end)),
            RuleAttribute::FwMark(mark) => {
                let mask = rule.selectors.fwmark.map_or(u32::MAX, |(_, mask)| mask);
                rule.selectors.fwmark = Some((*mark, mask));
            }
            RuleAttribute::FwMask(mask) => {
                let mark = rule.selectors.fwmark.map_or(0, |(mark, _)| mark);
                rule.selectors.fwmark = Some((mark, *mask));
            }
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::L3MDev(_)
            | RuleAttribute::TunId(_) => rule.other_selectors = true,
            // The kernel reports these on every rule; u32::MAX means unset.
            RuleAttribute::SuppressIfGroup(value) => rule.other_selectors |= *value != u32::MAX,
            RuleAttribute::SuppressPrefixLen(value) => {
                rule.suppress_prefixlength = (*value != u32::MAX).then_some(*value);
            }
            _ => {}
        }
    }
    Some(rule)
}

/// What a device's packets start with, by its link layer type.
fn framing(link_layer: rtnetlink::packet_route::link::LinkLayerType) -> Framing {
    use LinkLayerType as L;
    use rtnetlink::packet_route::link::LinkLayerType;
    match link_layer {
        L::Ether => Framing::Ethernet,
        L::None | L::Ppp | L::Rawip | L::Tunnel | L::Tunnel6 | L::Sit | L::Ipgre | L::Ip6gre => Framing::Ip,
        _ => Framing::Other,
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
    };

    use super::address_is_unpreferred;

    fn message(
        family: AddressFamily,
        flags: Option<AddressFlags>,
        header: AddressHeaderFlags,
    ) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.family = family;
        message.header.flags = header;
        message.attributes.extend(flags.map(AddressAttribute::Flags));
        message
    }

    #[test]
    fn deprecated_and_ipv6_temporary_addresses_are_unpreferred() {
        let (v4, v6) = (AddressFamily::Inet, AddressFamily::Inet6);
        let none = AddressHeaderFlags::empty();
        assert!(address_is_unpreferred(&message(v6, Some(AddressFlags::Deprecated), none)));
        assert!(address_is_unpreferred(&message(v4, None, AddressHeaderFlags::Deprecated)));
        // IFA_F_TEMPORARY (0x01) for IPv6; the same bit is IFA_F_SECONDARY for IPv4.
        assert!(address_is_unpreferred(&message(v6, Some(AddressFlags::Secondary), none)));
        assert!(!address_is_unpreferred(&message(v4, Some(AddressFlags::Secondary), none)));
        assert!(!address_is_unpreferred(&message(v6, Some(AddressFlags::Permanent), none)));
        // The 32-bit attribute wins over the header's byte.
        assert!(!address_is_unpreferred(&message(
            v6,
            Some(AddressFlags::Permanent),
            AddressHeaderFlags::Deprecated
        )));
    }
}
