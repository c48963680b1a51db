//! Reading the kernel's links, addresses, routes and rules over rtnetlink
//! into plain data.

use std::{collections::BTreeSet, net::IpAddr, ops::RangeInclusive};

use futures::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use crate::{
    model::{Family, MAIN_TABLE, Names, NextHop, Route, Rule},
    plan::Gateway,
};

#[derive(Debug, thiserror::Error)]
#[error("reading {what} from the kernel failed")]
pub struct ObserveError {
    pub what: &'static str,
    #[source]
    pub source: rtnetlink::Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Has carrier (IFF_LOWER_UP).
    pub carrier: bool,
    pub point_to_point: bool,
    /// What the device's packets start with (how the guard parses them).
    pub framing: Framing,
}

/// What a device's packets start with at TC egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// An Ethernet header (Ethernet, veth, bonds, VLANs, bridges, macvlan).
    Ethernet,
    /// The IP header itself: tun, WireGuard, PPP, raw-IP modems (wwan), IP
    /// tunnels (ipip, sit, ip6tnl, GRE).
    Ip,
    /// Anything else (InfiniBand, CAN, …): routed, not guarded.
    Other,
}

impl Framing {
    pub fn of(link_layer: LinkLayerType) -> Self {
        use LinkLayerType as L;
        match link_layer {
            L::Ether => Self::Ethernet,
            L::None | L::Ppp | L::Rawip | L::Tunnel | L::Tunnel6 | L::Sit | L::Ipgre | L::Ip6gre => Self::Ip,
            _ => Self::Other,
        }
    }
}

/// A global-scope address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub interface: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Address {
    pub fn network(&self) -> IpNet {
        IpNet::new(self.address, self.prefix_len).map_or_else(|_| IpNet::from(self.address), |n| n.trunc())
    }

    pub fn family(&self) -> Family {
        Family::of(&self.address)
    }
}

/// Everything mhr needs to know about the host's routing state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub rules: Vec<Rule>,
    /// Neighbours (ARP/ND) whose resolution failed: (ifindex, address).
    pub failed_neighbours: BTreeSet<(u32, IpAddr)>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|link| link.name == name)
    }

    pub fn names(&self) -> Names {
        Names(self.links.iter().map(|link| (link.index, link.name.clone())).collect())
    }

    pub fn addresses_of(&self, interface: u32) -> impl Iterator<Item = &Address> {
        self.addresses.iter().filter(move |a| a.interface == interface)
    }

    /// Whether the kernel failed to resolve `gateway` on `interface`.
    pub fn neighbour_failed(&self, interface: u32, gateway: Gateway) -> bool {
        match gateway {
            Gateway::Via(address) => self.failed_neighbours.contains(&(interface, address)),
            Gateway::OnLink => false,
        }
    }
}

/// Neighbours whose resolution failed (`FAILED`, or `INCOMPLETE`: asked
/// and not yet answered).
pub async fn failed_neighbours(handle: &Handle) -> Result<BTreeSet<(u32, IpAddr)>, ObserveError> {
    let messages: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| ObserveError { what: "neighbours", source })?;
    Ok(messages.iter().filter_map(failed_neighbour).collect())
}

fn failed_neighbour(message: &NeighbourMessage) -> Option<(u32, IpAddr)> {
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

/// Which routing tables mhr reads. A host may carry a BGP table or a
/// CNI's routes; mhr has no business dumping them on every reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteScope {
    /// mhr's protocol: its routes are found in any table.
    pub protocol: u8,
    /// mhr's table range.
    pub range: RangeInclusive<u32>,
    /// Tables uplinks hold (explicit or allocated earlier).
    pub claimed: BTreeSet<u32>,
    /// Uplinks that still need a table from the range.
    pub allocations: usize,
    /// Look for mhr's routes in every table (a walk of all of them in the
    /// kernel): when no record says which tables are mhr's.
    pub search_everywhere: bool,
}

/// Protocols of the routes DHCP clients, router advertisements and
/// ifupdown install: gateways are learned from their default routes in
/// tables outside mhr's.
const GATEWAY_PROTOCOLS: [u8; 4] = [3, 4, 9, 16];
const LOCAL_TABLE: u32 = 255;
const DEFAULT_TABLE: u32 = 253;

/// Everything mhr needs, reading all routing tables (`mhr init`, kernels
/// without strict dump checking).
pub async fn observe(handle: &Handle) -> Result<Observed, ObserveError> {
    observe_scoped(handle, None).await
}

/// Like [`observe`], with routes read through `scoped`'s handle (strict
/// dump checking on, so the kernel filters) from the tables its scope
/// names only: main; tables uplinks hold or held, and tables of the range
/// that rules point at (mhr's own routes wherever they are, when nothing
/// records its tables); the next free tables of the range, as many as
/// uplinks still need; and default routes of DHCP/RA/boot/static
/// protocol in other tables rules point at (to learn gateways from).
pub async fn observe_scoped(
    handle: &Handle,
    scoped: Option<(&Handle, &RouteScope)>,
) -> Result<Observed, ObserveError> {
    let err = |what| move |source| ObserveError { what, source };
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await.map_err(err("links"))?;
    let addresses: Vec<AddressMessage> =
        handle.address().get().execute().try_collect().await.map_err(err("addresses"))?;
    let mut rules = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let messages: Vec<RuleMessage> =
            handle.rule().get(version).execute().try_collect().await.map_err(err("rules"))?;
        rules.extend(messages.iter().filter_map(rule_from_message));
    }
    let routes = match scoped {
        None => dump_routes(handle, None, None).await?,
        Some((strict, scope)) => scoped_routes(strict, scope, &rules).await?,
    };
    Ok(Observed {
        links: links.iter().filter_map(link_from_message).collect(),
        addresses: addresses.iter().filter_map(address_from_message).collect(),
        routes,
        rules,
        failed_neighbours: failed_neighbours(handle).await?,
    })
}

async fn scoped_routes(
    handle: &Handle,
    scope: &RouteScope,
    rules: &[Rule],
) -> Result<Vec<Route>, ObserveError> {
    let own = match scope.search_everywhere {
        true => dump_routes(handle, None, Some(scope.protocol)).await?,
        false => Vec::new(),
    };
    let mut whole: BTreeSet<u32> = BTreeSet::from([MAIN_TABLE]);
    whole.extend(&scope.claimed);
    whole.extend(rules.iter().map(|r| r.table).filter(|t| scope.range.contains(t)));
    whole.extend(own.iter().map(|r| r.table));
    let mut routes = Vec::new();
    for table in &whole {
        routes.extend(dump_routes(handle, Some(*table), None).await?);
    }
    // The tables the planner may allocate next: free ones, in order,
    // skipping those someone else's routes occupy.
    let mut free = 0;
    for table in scope.range.clone().filter(|t| !whole.contains(t)) {
        if free >= scope.allocations {
            break;
        }
        let found = dump_routes(handle, Some(table), None).await?;
        if found.is_empty() {
            free += 1;
        }
        routes.extend(found);
    }
    let elsewhere: BTreeSet<u32> = rules
        .iter()
        .map(|r| r.table)
        .filter(|t| !whole.contains(t) && !scope.range.contains(t))
        .filter(|t| ![0, LOCAL_TABLE, DEFAULT_TABLE].contains(t))
        .collect();
    for table in elsewhere {
        for protocol in GATEWAY_PROTOCOLS {
            let found = dump_routes(handle, Some(table), Some(protocol)).await?;
            routes.extend(found.into_iter().filter(Route::is_default));
        }
    }
    Ok(routes)
}

/// IPv4 and IPv6 routes, of one table and one protocol if given. The
/// filters take effect in the kernel only on a socket with strict dump
/// checking; they are applied here too.
async fn dump_routes(
    handle: &Handle,
    table: Option<u32>,
    protocol: Option<u8>,
) -> Result<Vec<Route>, ObserveError> {
    let mut routes = Vec::new();
    for mut request in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        // The builder's defaults (table main, protocol static) would
        // filter a strict dump: unset, then set what is asked for.
        request.header.table = 0;
        request.header.protocol = protocol.unwrap_or(0).into();
        if let Some(table) = table {
            request.attributes.push(RouteAttribute::Table(table));
        }
        let messages: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|source| ObserveError { what: "routes", source })?;
        routes.extend(
            messages
                .iter()
                .filter_map(route_from_message)
                .filter(|r| table.is_none_or(|t| r.table == t))
                .filter(|r| protocol.is_none_or(|p| r.protocol == p)),
        );
    }
    Ok(routes)
}

fn link_from_message(message: &LinkMessage) -> Option<Link> {
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
        framing: Framing::of(message.header.link_layer_type),
    })
}

pub(crate) fn address_from_message(message: &AddressMessage) -> Option<Address> {
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
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::FwMask(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::L3MDev(_)
            | RuleAttribute::TunId(_) => rule.other_selectors = true,
            // The kernel reports these on every rule; u32::MAX means unset.
            RuleAttribute::SuppressIfGroup(value) | RuleAttribute::SuppressPrefixLen(value) => {
                rule.other_selectors |= *value != u32::MAX;
            }
            _ => {}
        }
    }
    Some(rule)
}
