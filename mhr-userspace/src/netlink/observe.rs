//! Reading the host's links, addresses, routes and rules over rtnetlink
//! (decoded by `netlink::decode`), from the tables a [`RouteScope`] names.

use std::{collections::BTreeSet, net::IpAddr};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::{
    address::AddressMessage,
    link::{LinkAttribute, LinkMessage},
    neighbour::NeighbourMessage,
    route::RouteAttribute,
    route::RouteMessage,
    rule::RuleMessage,
};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use crate::{
    health::passive::LinkCounters,
    model::{MAIN_TABLE, Observed, Route, Rule},
    netlink::{decode, encode::kernel_error},
    southbound::{ObserveError, RouteScope},
};

fn failed(what: &'static str) -> impl Fn(rtnetlink::Error) -> ObserveError {
    move |err| ObserveError { what, source: kernel_error(&err) }
}

/// Neighbours whose resolution failed (`FAILED`, or `INCOMPLETE`: asked
/// and not yet answered).
pub async fn failed_neighbours(handle: &Handle) -> Result<BTreeSet<(u32, IpAddr)>, ObserveError> {
    let messages: Vec<NeighbourMessage> =
        handle.neighbours().get().execute().try_collect().await.map_err(failed("neighbours"))?;
    Ok(messages.iter().filter_map(decode::failed_neighbour).collect())
}

/// Packets each of `interfaces` sent and received, unicast (the kernel's
/// 64-bit counters less multicast): one request per interface, not a dump
/// of every link of a host that may have thousands.
pub async fn link_counters(
    handle: &Handle,
    interfaces: &[u32],
) -> Result<std::collections::BTreeMap<u32, LinkCounters>, ObserveError> {
    let mut counters = std::collections::BTreeMap::new();
    for index in interfaces {
        let messages: Result<Vec<LinkMessage>, _> =
            handle.link().get().match_index(*index).execute().try_collect().await;
        let messages = match messages {
            Ok(messages) => messages,
            // Gone meanwhile: no counters, not an error.
            Err(err)
                if kernel_error(&err).is_missing() || kernel_error(&err).errno() == Some(libc::ENODEV) =>
            {
                continue;
            }
            Err(err) => return Err(failed("link counters")(err)),
        };
        let stats = messages.iter().flat_map(|m| m.attributes.iter()).find_map(|attribute| match attribute {
            LinkAttribute::Stats64(stats) => Some(stats),
            _ => None,
        });
        if let Some(stats) = stats {
            let rx_packets = stats.rx_packets.saturating_sub(stats.multicast);
            counters.insert(*index, LinkCounters { tx_packets: stats.tx_packets, rx_packets });
        }
    }
    Ok(counters)
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
    let links: Vec<LinkMessage> =
        handle.link().get().execute().try_collect().await.map_err(failed("links"))?;
    let addresses: Vec<AddressMessage> =
        handle.address().get().execute().try_collect().await.map_err(failed("addresses"))?;
    let mut rules = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let messages: Vec<RuleMessage> =
            handle.rule().get(version).execute().try_collect().await.map_err(failed("rules"))?;
        rules.extend(messages.iter().filter_map(decode::rule_from_message));
    }
    let routes = match scoped {
        None => dump_routes(handle, None, None).await?,
        Some((strict, scope)) => scoped_routes(strict, scope, &rules).await?,
    };
    Ok(Observed {
        links: links.iter().filter_map(decode::link_from_message).collect(),
        addresses: addresses.iter().filter_map(decode::address_from_message).collect(),
        routes,
        rules,
        failed_neighbours: failed_neighbours(handle).await?,
        unpreferred: addresses
            .iter()
            .filter(|message| decode::address_is_unpreferred(message))
            .filter_map(decode::address_from_message)
            .map(|a| (a.interface, a.address))
            .collect(),
        nexthops: nexthops()?,
    })
}

/// The nexthop objects; None from a kernel without resilient groups
/// (before 5.13: balance then keeps a plain multipath route).
fn nexthops() -> Result<Option<Vec<crate::model::Nexthop>>, ObserveError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !has_resilient_groups(&release) {
        return Ok(None);
    }
    match super::nexthop::dump() {
        Ok(found) => Ok(Some(found)),
        Err(source) if source.is_transport() => Err(ObserveError { what: "nexthops", source }),
        Err(refused) => {
            tracing::debug!(%refused, "the kernel lists no nexthop objects");
            Ok(None)
        }
    }
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
        let messages: Vec<RouteMessage> =
            handle.route().get(request).execute().try_collect().await.map_err(failed("routes"))?;
        routes.extend(
            messages
                .iter()
                .filter_map(decode::route_from_message)
                .filter(|r| table.is_none_or(|t| r.table == t))
                .filter(|r| protocol.is_none_or(|p| r.protocol == p)),
        );
    }
    Ok(routes)
}

/// Whether a kernel `release` (`6.18.44-…`) is 5.13 or later.
fn has_resilient_groups(release: &str) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 13),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resilient_groups_come_with_linux_5_13() {
        assert!(super::has_resilient_groups("6.18.44-fc-v1045"));
        assert!(super::has_resilient_groups("5.13.0"));
        assert!(!super::has_resilient_groups("5.12.19-generic"));
        assert!(!super::has_resilient_groups("4.19.0"));
        assert!(!super::has_resilient_groups(""));
    }
}
