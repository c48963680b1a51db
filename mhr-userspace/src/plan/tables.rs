//! Uplink tables: which table each uplink gets, and the routes in it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::{Gateway, PlanError, gateway::is_link_local};
use crate::{
    config::{Config, UplinkConfig},
    model::{Address, Family, IPV6_DEFAULT_METRIC, Observed, Route, SCOPE_LINK, SCOPE_UNIVERSE},
};

/// Tables per uplink (config order): explicit, else the one named in an
/// earlier run, else the lowest free id of `table_range`.
pub(super) fn allocate_tables(
    config: &Config,
    observed: &Observed,
    registry: &BTreeMap<String, u32>,
) -> Result<Vec<u32>, PlanError> {
    let range = config.routing.tables();
    let protocol = config.routing.protocol;
    let foreign_tables: BTreeSet<u32> = observed
        .routes
        .iter()
        .filter(|r| r.protocol != protocol)
        .map(|r| r.table)
        .chain(observed.rules.iter().filter(|r| r.protocol != protocol).map(|r| r.table))
        .collect();
    // A remembered table is kept unless another uplink now claims it explicitly.
    let explicit: BTreeSet<u32> = config.uplinks.iter().filter_map(|u| u.table).collect();
    let kept = |uplink: &UplinkConfig| {
        uplink.table.or_else(|| {
            registry.get(&uplink.interface).copied().filter(|t| {
                range.contains(t) && !explicit.contains(t) && *t != config.routing.default_table()
            })
        })
    };
    // Tables spoken for: explicit ones, and every registry entry (also of
    // uplinks no longer configured, whose routes are about to go).
    let mut taken = explicit.clone();
    taken.extend(registry.values().copied());
    taken.insert(config.routing.default_table());
    let mut tables = Vec::with_capacity(config.uplinks.len());
    for uplink in &config.uplinks {
        let table = match kept(uplink) {
            Some(table) => table,
            None => {
                let free = range.clone().find(|t| !taken.contains(t) && !foreign_tables.contains(t));
                free.ok_or_else(|| PlanError::TablesExhausted {
                    start: *range.start(),
                    end: *range.end(),
                    interface: uplink.interface.clone(),
                })?
            }
        };
        taken.insert(table);
        tables.push(table);
    }
    Ok(tables)
}

/// The uplink's table: connected prefix routes (with `src` for IPv4), a host
/// route to a gateway outside every prefix, and the default route.
pub(super) fn table_routes(
    routes: &mut BTreeSet<Route>,
    protocol: u8,
    table: u32,
    index: u32,
    addresses: &[&Address],
    gateway: Gateway,
) {
    let family = addresses[0].family();
    let metric = (family == Family::V6).then_some(IPV6_DEFAULT_METRIC);
    let route = |destination: IpNet, gateway: Option<IpAddr>, source: Option<IpAddr>, scope: u8| Route {
        table,
        destination,
        gateway,
        interface: Some(index),
        source,
        protocol,
        scope,
        metric,
        onlink: false,
        multipath: Vec::new(),
        nexthop_group: None,
    };
    let source_for = |address: &Address| (family == Family::V4).then_some(address.address);
    let mut seen = BTreeSet::new();
    for address in addresses {
        let network = address.network();
        if network.prefix_len() == network.max_prefix_len() || !seen.insert(network) {
            continue;
        }
        let scope = if family == Family::V4 { SCOPE_LINK } else { SCOPE_UNIVERSE };
        routes.insert(route(network, None, source_for(address), scope));
    }
    match gateway {
        Gateway::Via(via) => {
            let on_link = seen.iter().any(|network| network.contains(&via)) || is_link_local(via);
            if !on_link {
                let scope = if family == Family::V4 { SCOPE_LINK } else { SCOPE_UNIVERSE };
                routes.insert(route(IpNet::from(via), None, source_for(addresses[0]), scope));
            }
            routes.insert(route(family.default_route(), Some(via), None, SCOPE_UNIVERSE));
        }
        Gateway::OnLink => {
            let scope = if family == Family::V4 { SCOPE_LINK } else { SCOPE_UNIVERSE };
            routes.insert(route(family.default_route(), None, None, scope));
        }
    }
}
