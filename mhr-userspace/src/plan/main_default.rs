//! Main's default route: the candidates, the failover or balance choice,
//! the rules that reach mhr's default table, and moved defaults put back.

use std::collections::BTreeSet;

use super::{Desired, Gateway, GatewaySource, PlanError, Strictness, route_key};
use crate::{
    config::{Config, Policy, UplinkConfig},
    model::{
        Family, GroupMember, IPV6_DEFAULT_METRIC, MAIN_TABLE, MovedRoute, NextHop, Nexthop, NexthopKind,
        Observed, Route, Rule, SCOPE_LINK, SCOPE_UNIVERSE, nexthop, rule_args,
    },
};

/// An uplink family that could carry main's default route.
pub(super) struct Candidate<'a> {
    pub(super) position: usize,
    pub(super) uplink: &'a UplinkConfig,
    pub(super) index: u32,
    pub(super) family: Family,
    pub(super) gateway: (Gateway, GatewaySource),
    /// The gateway sits in one of the uplink's prefixes (or is link-local).
    pub(super) on_link: bool,
    pub(super) healthy: bool,
    /// Healthy but over a quality threshold.
    pub(super) degraded: bool,
    /// Drained for maintenance: the last resort.
    pub(super) drained: bool,
}

impl Candidate<'_> {
    /// Failover order: the primary, then by `priority`, then config order.
    fn order(&self) -> (bool, u32, usize) {
        (!self.uplink.primary, self.uplink.priority.unwrap_or(u32::MAX), self.position)
    }

    fn next_hop(&self) -> NextHop {
        let gateway = match self.gateway.0 {
            Gateway::Via(via) => Some(via),
            Gateway::OnLink => None,
        };
        NextHop { gateway, interface: self.index, weight: self.uplink.weight() }
    }
}

/// The default route host traffic takes for `family`: the first healthy
/// uplink (failover) or all of them (balance), in mhr's default table,
/// reached by two rules after the uplinks' `from` rules: `lookup main
/// suppress_prefixlength 0` (main's specific routes keep winning) and a
/// lookup of the default table. Main's own defaults, at whatever metric
/// their writers gave them, are left alone and answer when mhr's rules are
/// gone. With nothing healthy the default mhr has is kept.
pub(super) fn main_default(
    desired: &mut Desired,
    config: &Config,
    observed: &Observed,
    family: Family,
    mut candidates: Vec<&Candidate>,
    strictness: Strictness,
) -> Result<(), PlanError> {
    if candidates.is_empty() {
        return Ok(());
    }
    let routing = &config.routing;
    let (protocol, table) = (routing.protocol, routing.default_table());
    if let Some(clash) = default_clash(config, observed) {
        if strictness == Strictness::Strict {
            return Err(clash);
        }
        // Leave what mhr has there as it is: deleting it could leave the
        // host with a default it never chose.
        let (suppress, lookup) = routing.default_priorities();
        desired.rules.extend(
            observed
                .rules
                .iter()
                .filter(|r| r.protocol == protocol && r.family == family)
                .filter(|r| r.table == table || [suppress, lookup].contains(&r.priority))
                .cloned(),
        );
        desired
            .routes
            .extend(observed.routes.iter().filter(|r| r.protocol == protocol && r.table == table).cloned());
        desired.notes.push(format!("main's {family} default left as it is: {clash}"));
        if !desired.problems.contains(&clash) {
            desired.problems.push(clash);
        }
        return Ok(());
    }
    let names = observed.names();
    let rules = default_rules(config, family);
    let legacy = observed
        .routes
        .iter()
        .find(|r| r.table == MAIN_TABLE && r.is_default() && r.family() == family && r.protocol == protocol);
    if let Some(legacy) = legacy {
        desired.notes.push(format!(
            "upgrade: mhr's {family} default moves out of main ({}) into table {table}, looked up ahead of main's defaults whatever their metric",
            names.route_args(legacy)
        ));
    }
    candidates.sort_by_key(|c| c.order());
    // Degraded uplinks only when no healthy one is left (under balance they
    // take no new flows while one is); drained ones only when nothing else
    // is healthy: a drain never leaves the host without a way out.
    let tier = |keep: &dyn Fn(&Candidate) -> bool| -> Vec<&Candidate> {
        candidates.iter().copied().filter(|c| c.healthy && keep(c)).collect()
    };
    let mut healthy = tier(&|c| !c.degraded && !c.drained);
    for (fallback, why) in [(tier(&|c| !c.drained), "degraded"), (tier(&|_| true), "drained")] {
        if !healthy.is_empty() || fallback.is_empty() {
            continue;
        }
        let names: Vec<&str> = fallback.iter().map(|c| c.uplink.interface.as_str()).collect();
        desired.notes.push(format!(
            "every healthy {family} uplink is {why} ({}): main's default uses them anyway",
            names.join(", ")
        ));
        healthy = fallback;
    }
    let chosen: Vec<&Candidate> = match (config.policy, healthy.first()) {
        (Policy::Failover, Some(first)) => vec![*first],
        (Policy::Balance, Some(_)) => healthy,
        (_, None) => {
            let kept = observed.routes.iter().find(|r| {
                r.table == table && r.is_default() && r.family() == family && r.protocol == protocol
            });
            if let Some(kept) = kept {
                desired.notes.push(format!(
                    "no healthy {family} uplink: keeping main's default ({})",
                    names.route_args(kept)
                ));
                desired
                    .active
                    .insert(family, kept.next_hops().map(|h| names.interface(h.interface)).collect());
                desired.routes.insert(kept.clone());
                if let Some(group) = kept.nexthop_group {
                    keep_group(desired, observed, group, protocol);
                }
                desired.rules.extend(rules);
                return Ok(());
            }
            desired.notes.push(format!(
                "no healthy {family} uplink: using {} for main's default anyway",
                candidates[0].uplink.interface
            ));
            vec![candidates[0]]
        }
    };
    let mut route = Route {
        table,
        destination: family.default_route(),
        gateway: None,
        interface: None,
        source: None,
        protocol,
        scope: SCOPE_UNIVERSE,
        metric: (family == Family::V6).then_some(IPV6_DEFAULT_METRIC),
        onlink: false,
        multipath: Vec::new(),
        nexthop_group: None,
    };
    if let [only] = chosen.as_slice() {
        let hop = only.next_hop();
        route.gateway = hop.gateway;
        route.interface = Some(hop.interface);
        route.onlink = !only.on_link;
        if hop.gateway.is_none() && family == Family::V4 {
            route.scope = SCOPE_LINK;
        }
    } else {
        route.multipath = chosen.iter().map(|c| c.next_hop()).collect();
    }
    if config.policy == Policy::Balance {
        match resilient_group(observed, family, &chosen, protocol) {
            Ok(nexthops) => {
                route = Route {
                    nexthop_group: Some(nexthop::group_id(family)),
                    scope: SCOPE_UNIVERSE,
                    onlink: false,
                    ..route
                };
                desired.nexthops.extend(nexthops);
            }
            Err(why) => desired.notes.push(format!(
                "{family} balance uses a plain multipath route ({why}): losing an uplink moves flows between the others too"
            )),
        }
    }
    desired.active.insert(family, chosen.iter().map(|c| c.uplink.interface.clone()).collect());
    desired.routes.insert(route);
    desired.rules.extend(rules);
    Ok(())
}

/// The two rules that send host traffic to mhr's default: main without
/// its default routes, then the default table.
pub fn default_rules(config: &Config, family: Family) -> [Rule; 2] {
    let routing = &config.routing;
    let (suppress, lookup) = routing.default_priorities();
    let rule = |priority, table, suppress_prefixlength| Rule {
        family,
        priority,
        table,
        source: None,
        destination: None,
        protocol: routing.protocol,
        suppress_prefixlength,
        selectors: Default::default(),
        other_selectors: false,
    };
    [rule(suppress, MAIN_TABLE, Some(0)), rule(lookup, routing.default_table(), None)]
}

/// A foreign object where mhr's default goes: a route in the default
/// table, a rule pointing at it, a rule at one of its priorities.
fn default_clash(config: &Config, observed: &Observed) -> Option<PlanError> {
    let routing = &config.routing;
    let (protocol, table) = (routing.protocol, routing.default_table());
    let interface = "the default".to_owned();
    if let Some(route) = observed.routes.iter().find(|r| r.table == table && r.protocol != protocol) {
        let object = observed.names().route_args(route);
        return Some(PlanError::TableHasForeignRoute { table, interface, object });
    }
    let mut foreign_rules = observed.rules.iter().filter(|r| r.protocol != protocol);
    if let Some(rule) = foreign_rules.clone().find(|r| r.table == table) {
        return Some(PlanError::TableHasForeignRule { table, interface, object: rule_args(rule) });
    }
    let (suppress, lookup) = routing.default_priorities();
    let rule = foreign_rules.find(|r| r.priority == suppress || r.priority == lookup)?;
    Some(PlanError::PriorityTaken { priority: rule.priority, interface, object: rule_args(rule) })
}

/// Default routes an earlier mhr moved out of main go back where their
/// owner put them once their link can take them (up, with an address of
/// the family) and nothing holds their kernel key.
pub(super) fn restore_moved(desired: &mut Desired, observed: &Observed, moved: &[MovedRoute]) {
    let mut keys = BTreeSet::new();
    for record in moved {
        let Some(link) = observed.link(&record.interface).filter(|l| l.up) else { continue };
        let family = record.route.family();
        if !observed.addresses_of(link.index).any(|a| a.family() == family) {
            continue;
        }
        let route = Route { interface: Some(link.index), ..record.route.clone() };
        let key = route_key(&route);
        if observed.routes.iter().any(|r| route_key(r) == key) || !keys.insert(key) {
            continue;
        }
        desired.restore.push(MovedRoute { interface: record.interface.clone(), route });
    }
}

/// Why balance falls back to a plain multipath route.
#[derive(Debug, thiserror::Error)]
enum NoResilientGroup {
    #[error("the kernel has no resilient nexthop groups (Linux 5.13)")]
    Unsupported,
    #[error("nexthop id {id} is taken by protocol {protocol}")]
    IdTaken { id: u32, protocol: u8 },
}

/// Balance's resilient group over `chosen` and a nexthop per member, or
/// why there can be none (a kernel without nexthop objects, an id someone
/// else holds).
fn resilient_group(
    observed: &Observed,
    family: Family,
    chosen: &[&Candidate],
    protocol: u8,
) -> Result<Vec<Nexthop>, NoResilientGroup> {
    let Some(present) = &observed.nexthops else {
        return Err(NoResilientGroup::Unsupported);
    };
    let mut members = Vec::new();
    let mut nexthops = Vec::new();
    for candidate in chosen {
        let hop = candidate.next_hop();
        let id = nexthop::member_id(candidate.position, family);
        members.push(GroupMember { id, weight: hop.weight });
        let onlink = !candidate.on_link && hop.gateway.is_some();
        let kind = NexthopKind::Via { family, gateway: hop.gateway, interface: hop.interface, onlink };
        nexthops.push(Nexthop { id, protocol, kind });
    }
    nexthops.push(Nexthop {
        id: nexthop::group_id(family),
        protocol,
        kind: NexthopKind::Resilient {
            members,
            buckets: nexthop::GROUP_BUCKETS,
            idle_timer: nexthop::GROUP_IDLE_TIMER,
            unbalanced_timer: nexthop::GROUP_UNBALANCED_TIMER,
        },
    });
    if let Some(taken) =
        present.iter().find(|n| n.protocol != protocol && nexthops.iter().any(|m| m.id == n.id))
    {
        return Err(NoResilientGroup::IdTaken { id: taken.id, protocol: taken.protocol });
    }
    Ok(nexthops)
}

/// Keeps mhr's group `id` and its members as they are (the default they
/// carry is kept for want of a healthy uplink).
fn keep_group(desired: &mut Desired, observed: &Observed, id: u32, protocol: u8) {
    let owned: Vec<&Nexthop> =
        observed.nexthops.iter().flatten().filter(|n| n.protocol == protocol).collect();
    let Some(group) = owned.iter().find(|n| n.id == id) else { return };
    let members: Vec<u32> = group.members().iter().map(|m| m.id).collect();
    desired.nexthops.insert((*group).clone());
    desired.nexthops.extend(owned.iter().filter(|n| members.contains(&n.id)).map(|n| (*n).clone()));
}
