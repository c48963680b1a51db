//! Gateway learning: where an uplink's gateway comes from, and whether it
//! sits on the uplink's link.

use std::net::IpAddr;

use super::{Gateway, GatewaySource, Memory};
use crate::{
    config::{Config, UplinkConfig},
    model::{Address, Family, Link, MAIN_TABLE, Observed, Route},
};

pub(super) fn gateway_on_link(gateway: (Gateway, GatewaySource), addresses: &[&Address]) -> bool {
    match gateway.0 {
        Gateway::Via(via) => is_link_local(via) || addresses.iter().any(|a| a.network().contains(&via)),
        Gateway::OnLink => true,
    }
}

/// Where an uplink's gateway comes from, first found wins: config, a
/// foreign default route in main, in another table, the DHCP client's
/// lease, mhr's own table, a route an earlier mhr moved, the remembered
/// one, point-to-point.
pub(super) fn learn_gateway(
    config: &Config,
    uplink: &UplinkConfig,
    link: &Link,
    family: Family,
    table: u32,
    observed: &Observed,
    memory: &Memory,
) -> Option<(Gateway, GatewaySource)> {
    let index = link.index;
    let configured = match family {
        Family::V4 => uplink.gateway.map(IpAddr::V4),
        Family::V6 => uplink.gateway6.map(IpAddr::V6),
    };
    if let Some(gateway) = configured {
        return Some((Gateway::Via(gateway), GatewaySource::Config));
    }
    let protocol = config.routing.protocol;
    let defaults = || {
        observed.routes.iter().filter(move |r| {
            r.is_default() && r.family() == family && r.interface == Some(index) && r.gateway.is_some()
        })
    };
    let pick =
        |source, found: Option<&Route>| found.and_then(|r| r.gateway).map(|g| (Gateway::Via(g), source));
    pick(GatewaySource::MainTable, defaults().find(|r| r.table == MAIN_TABLE && r.protocol != protocol))
        .or_else(|| {
            pick(GatewaySource::OtherTable, defaults().find(|r| r.table != table && r.protocol != protocol))
        })
        .or_else(|| {
            // Only a router on one of the link's prefixes: a lease left
            // from another network names nothing here.
            let lease = memory.leases.get(&uplink.interface).filter(|_| family == Family::V4)?;
            let router = IpAddr::V4(lease.router);
            observed
                .addresses_of(index)
                .any(|a| a.network().contains(&router))
                .then_some((Gateway::Via(router), GatewaySource::Lease(lease.keeper)))
        })
        .or_else(|| {
            pick(GatewaySource::Owned, defaults().find(|r| r.table == table && r.protocol == protocol))
        })
        .or_else(|| {
            let recorded =
                memory.moved.iter().find(|m| m.interface == uplink.interface && m.route.family() == family);
            pick(GatewaySource::Moved, recorded.map(|m| &m.route))
        })
        .or_else(|| {
            let remembered = memory.gateways.get(&uplink.interface)?.get(&family)?;
            Some((Gateway::Via(remembered.gateway), GatewaySource::Remembered))
        })
        .or_else(|| link.point_to_point.then_some((Gateway::OnLink, GatewaySource::PointToPoint)))
}

pub(super) fn is_link_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}
