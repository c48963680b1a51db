//! mhr's model into netlink messages: the route and rule requests apply
//! sends, and what a refused one is called.

use std::net::IpAddr;

use rtnetlink::packet_route::{
    AddressFamily,
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteProtocol, RouteScope,
        RouteType,
    },
    rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange, RuleUidRange},
};

use crate::{
    model::{Family, Route, Rule},
    southbound::KernelError,
};

/// `RT_TABLE_UNSPEC` in the header when the id only fits the attribute (as iproute2 does).
const TABLE_IN_ATTRIBUTE: u8 = 0;

/// The kernel's answer to a refused request, or why none came.
pub fn kernel_error(err: &rtnetlink::Error) -> KernelError {
    match err {
        rtnetlink::Error::NetlinkError(message) => match message.raw_code() {
            0 => KernelError::Unreadable("an acknowledgement where an error was expected"),
            code => KernelError::Refused(-code),
        },
        rtnetlink::Error::RequestFailed => KernelError::NoAnswer { errno: None },
        rtnetlink::Error::UnexpectedMessage(_) => KernelError::Unreadable("a message of an unexpected type"),
        rtnetlink::Error::NamespaceError(_) => KernelError::Unreadable("a namespace error"),
        rtnetlink::Error::InvalidHardwareAddress(_)
        | rtnetlink::Error::InvalidIp(_)
        | rtnetlink::Error::InvalidAddress(..)
        | rtnetlink::Error::InvalidNla(_) => KernelError::Unreadable("an attribute that does not decode"),
    }
}

pub fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(TABLE_IN_ATTRIBUTE)
}

pub fn route_message(route: &Route) -> RouteMessage {
    let mut message = RouteMessage::default();
    let header = &mut message.header;
    header.address_family = address_family(route.family());
    header.destination_prefix_length = route.destination.prefix_len();
    header.table = header_table(route.table);
    header.protocol = RouteProtocol::from(route.protocol);
    header.scope = RouteScope::from(route.scope);
    header.kind = RouteType::Unicast;
    if route.onlink && route.nexthop_group.is_none() {
        header.flags |= RouteFlags::Onlink;
    }
    let attributes = &mut message.attributes;
    attributes.push(RouteAttribute::Table(route.table));
    if !route.is_default() {
        attributes.push(RouteAttribute::Destination(route_address(route.destination.addr())));
    }
    if let Some(metric) = route.metric {
        attributes.push(RouteAttribute::Priority(metric));
    }
    if let Some(id) = route.nexthop_group {
        // The group says where: the kernel refuses a gateway or device too.
        attributes.push(RouteAttribute::NhId(id));
        return message;
    }
    if let Some(gateway) = route.gateway {
        attributes.push(RouteAttribute::Gateway(route_address(gateway)));
    }
    if let Some(index) = route.interface {
        attributes.push(RouteAttribute::Oif(index));
    }
    if let Some(source) = route.source {
        attributes.push(RouteAttribute::PrefSource(route_address(source)));
    }
    if !route.multipath.is_empty() {
        let hops = route.multipath.iter().map(|hop| {
            let mut next = RouteNextHop::default();
            next.hops = u8::try_from(hop.weight.saturating_sub(1)).unwrap_or(u8::MAX);
            next.interface_index = hop.interface;
            next.attributes =
                hop.gateway.map(|g| RouteAttribute::Gateway(route_address(g))).into_iter().collect();
            next
        });
        attributes.push(RouteAttribute::MultiPath(hops.collect()));
    }
    message
}

fn route_address(address: IpAddr) -> RouteAddress {
    RouteAddress::from(address)
}

pub fn rule_message(rule: &Rule) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = address_family(rule.family);
    message.header.table = header_table(rule.table);
    message.header.action = RuleAction::ToTable;
    let attributes = &mut message.attributes;
    attributes.push(RuleAttribute::Priority(rule.priority));
    attributes.push(RuleAttribute::Table(rule.table));
    if let Some(source) = rule.source {
        message.header.src_len = source.prefix_len();
        attributes.push(RuleAttribute::Source(source.addr()));
    }
    if let Some(destination) = rule.destination {
        message.header.dst_len = destination.prefix_len();
        attributes.push(RuleAttribute::Destination(destination.addr()));
    }
    if let Some(length) = rule.suppress_prefixlength {
        attributes.push(RuleAttribute::SuppressPrefixLen(length));
    }
    let selectors = &rule.selectors;
    if let Some(protocol) = selectors.ipproto {
        attributes.push(RuleAttribute::IpProtocol(protocol.into()));
    }
    if let Some((start, end)) = selectors.sport {
        attributes.push(RuleAttribute::SourcePortRange(RulePortRange { start, end }));
    }
    if let Some((start, end)) = selectors.dport {
        attributes.push(RuleAttribute::DestinationPortRange(RulePortRange { start, end }));
    }
    if let Some((start, end)) = selectors.uid {
        attributes.push(RuleAttribute::UidRange(RuleUidRange { start, end }));
    }
    if let Some((mark, mask)) = selectors.fwmark {
        attributes.push(RuleAttribute::FwMark(mark));
        attributes.push(RuleAttribute::FwMask(mask));
    }
    attributes.push(RuleAttribute::Protocol(RouteProtocol::from(rule.protocol)));
    message
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    #[test]
    fn the_kernels_refusal_keeps_its_errno_and_a_lost_answer_has_none() {
        let mut nack = ErrorMessage::default();
        nack.code = NonZeroI32::new(-libc::EEXIST);
        let refused = kernel_error(&rtnetlink::Error::NetlinkError(nack));
        assert_eq!(refused, KernelError::Refused(libc::EEXIST));
        assert!(!refused.is_transport());

        let closed = kernel_error(&rtnetlink::Error::RequestFailed);
        assert_eq!(closed, KernelError::NoAnswer { errno: None });
        assert!(closed.is_transport() && closed.errno().is_none());
        assert_eq!(closed.to_string(), "no answer from the kernel: the netlink connection closed");

        let garbled = kernel_error(&rtnetlink::Error::InvalidNla("x".to_owned()));
        assert!(matches!(garbled, KernelError::Unreadable(_)) && garbled.is_transport());
        assert!(kernel_error(&rtnetlink::Error::NetlinkError(ErrorMessage::default())).is_transport());
    }

    #[test]
    fn a_failed_socket_names_its_errno() {
        let failed = KernelError::NoAnswer { errno: Some(libc::ENOBUFS) };
        assert_eq!(
            failed.to_string(),
            format!(
                "no answer from the kernel: the netlink socket failed: {}",
                std::io::Error::from_raw_os_error(libc::ENOBUFS)
            )
        );
    }
}
