//! Route lookups the way the kernel answers them: rules in priority order,
//! the longest matching prefix of a rule's table (lowest metric among
//! equals), `suppress_prefixlength` refusing short answers, and source
//! validation (rp_filter) for lookups as if received on an interface.

use std::net::IpAddr;

use crate::{
    model::{Family, Flow, MAIN_TABLE, Observed, Route, Rule},
    southbound::{KernelError, Lookup},
};

/// The kernel's rules at boot: local (0), main (32766), default (32767).
const MAIN_RULE_PRIORITY: u32 = 32766;
const LOCAL_TABLE: u32 = 255;

/// Whether `rule` selects a packet of `flow` from `source` to `destination`.
fn selects(rule: &Rule, destination: IpAddr, source: Option<IpAddr>, flow: &Flow) -> bool {
    let from = match rule.source {
        None => true,
        Some(net) => source.is_some_and(|source| net.contains(&source)),
    };
    let to = rule.destination.is_none_or(|net| net.contains(&destination));
    // Selectors the model does not know (iif, fwmark, …) never match
    // here: the model's packets carry none of them.
    from && to && rule.selectors.matches(flow) && !rule.other_selectors
}

/// The best route of `table` for `destination`: the longest prefix, then
/// the lowest metric. Routes through a link that is down do not answer;
/// with `oif` (a socket bound to a device) only routes through it do.
fn best_in_table(host: &Observed, table: u32, destination: IpAddr, oif: Option<u32>) -> Option<&Route> {
    let usable = |route: &Route| {
        route.next_hops().all(|hop| host.links.iter().any(|link| link.index == hop.interface && link.up))
            && oif.is_none_or(|oif| route.next_hops().any(|hop| hop.interface == oif))
    };
    host.routes
        .iter()
        .filter(|r| r.table == table && r.destination.contains(&destination) && usable(r))
        .max_by_key(|r| (r.destination.prefix_len(), std::cmp::Reverse(r.metric.unwrap_or(0))))
}

/// The rule walk. Without rules of the family (a model built by hand), main
/// is looked up at its usual priority.
pub fn route(host: &Observed, destination: IpAddr, source: Option<IpAddr>) -> Option<Route> {
    route_via(host, destination, source, None)
}

/// [`route`] for a socket bound to device `oif` (SO_BINDTODEVICE).
pub fn route_via(
    host: &Observed,
    destination: IpAddr,
    source: Option<IpAddr>,
    oif: Option<u32>,
) -> Option<Route> {
    route_flow(host, destination, source, oif, &Flow::default())
}

/// The rule walk for a packet of `flow` (protocol, ports, uid, mark).
pub fn route_flow(
    host: &Observed,
    destination: IpAddr,
    source: Option<IpAddr>,
    oif: Option<u32>,
    flow: &Flow,
) -> Option<Route> {
    let family = Family::of(&destination);
    let mut rules: Vec<&Rule> =
        host.rules.iter().filter(|r| r.family == family && r.table != LOCAL_TABLE).collect();
    let main_rule = Rule {
        family,
        priority: MAIN_RULE_PRIORITY,
        table: MAIN_TABLE,
        source: None,
        destination: None,
        protocol: 0,
        suppress_prefixlength: None,
        selectors: Default::default(),
        other_selectors: false,
    };
    if !rules.iter().any(|r| r.table == MAIN_TABLE && r.suppress_prefixlength.is_none()) {
        rules.push(&main_rule);
    }
    rules.sort_by_key(|r| r.priority);
    rules.into_iter().filter(|rule| selects(rule, destination, source, flow)).find_map(|rule| {
        let found = best_in_table(host, rule.table, destination, oif)?;
        let suppressed = rule
            .suppress_prefixlength
            .is_some_and(|length| u32::from(found.destination.prefix_len()) <= length);
        (!suppressed).then(|| found.clone())
    })
}

/// `ip route get`: the route a packet takes, with the next hop of a
/// multipath route resolved to its first hop. With `iif`, the kernel
/// validates the source: under strict rp_filter the way back to it must
/// leave by `iif` (EXDEV otherwise).
pub fn answer(host: &Observed, lookup: Lookup, rp_filter: u8) -> Result<Route, KernelError> {
    let unreachable = KernelError::Refused(libc::ENETUNREACH);
    if let (Some(iif), Some(source)) = (lookup.iif, lookup.source) {
        if rp_filter == 1 {
            let back =
                route(host, source, Some(lookup.destination)).ok_or(KernelError::Refused(libc::EXDEV))?;
            if !back.next_hops().any(|hop| hop.interface == iif) {
                return Err(KernelError::Refused(libc::EXDEV));
            }
        }
        let local = host.addresses.iter().any(|a| a.address == lookup.destination);
        if local {
            return Ok(Route {
                table: LOCAL_TABLE,
                destination: lookup.destination.into(),
                gateway: None,
                interface: Some(iif),
                source: None,
                protocol: 2,
                scope: 254,
                metric: None,
                onlink: false,
                multipath: Vec::new(),
                nexthop_group: None,
            });
        }
    }
    let mut found =
        route_flow(host, lookup.destination, lookup.source, None, &lookup.flow).ok_or(unreachable)?;
    if let Some(first) = found.multipath.first().copied() {
        found.gateway = first.gateway;
        found.interface = Some(first.interface);
        found.multipath.clear();
    }
    Ok(found)
}
