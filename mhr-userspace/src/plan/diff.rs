//! The diff: actions taking the observed state to the desired one, in a
//! safe order.

use std::collections::BTreeSet;

use super::{Action, Desired, route_key};
use crate::model::{MAIN_TABLE, Nexthop, Observed, Route, Rule};

/// Actions taking the observed state to the desired one, in a safe order:
/// new routes before the rules that point at them (connected and host
/// routes before the defaults whose gateway they make reachable), a route
/// that changed (new gateway, new source) replaced in place, stale rules
/// before the routes they point at, and main's default (a replace when the
/// active uplink changes) last.
pub fn diff(desired: &Desired, observed: &Observed, protocol: u8) -> Vec<Action> {
    let owned_routes: BTreeSet<&Route> = observed.routes.iter().filter(|r| r.protocol == protocol).collect();
    // A route on a group is the same route whatever next hops the group
    // has now: the group's replacement changes them.
    let wanted: BTreeSet<Route> = desired.routes.iter().map(identity).collect();
    let owned_identities: BTreeSet<Route> = owned_routes.iter().map(|r| identity(r)).collect();
    let owned_rules: BTreeSet<&Rule> = observed.rules.iter().filter(|r| r.protocol == protocol).collect();
    let mut stale: Vec<&Route> =
        owned_routes.iter().copied().filter(|r| !wanted.contains(&identity(r))).collect();
    let mut route_changes = |routes: Vec<&Route>| -> Vec<Action> {
        routes
            .into_iter()
            .map(|route| match stale.iter().position(|old| route_key(old) == route_key(route)) {
                Some(index) => Action::ReplaceRoute { old: stale.remove(index).clone(), new: route.clone() },
                None => Action::AddRoute { route: route.clone() },
            })
            .collect()
    };
    let missing: Vec<&Route> =
        desired.routes.iter().filter(|r| !owned_identities.contains(&identity(r))).collect();
    let (main_adds, table_adds): (Vec<&Route>, Vec<&Route>) =
        missing.into_iter().partition(|r| r.table == MAIN_TABLE);
    let (defaults, specifics): (Vec<&Route>, Vec<&Route>) =
        table_adds.into_iter().partition(|r| r.is_default());
    // Nexthops before the routes that use them: members, then groups.
    let owned_nexthops: Vec<&Nexthop> =
        observed.nexthops.iter().flatten().filter(|n| n.protocol == protocol).collect();
    let (groups, members): (Vec<&Nexthop>, Vec<&Nexthop>) =
        desired.nexthops.iter().filter(|n| !owned_nexthops.contains(n)).partition(|n| n.is_group());
    let mut actions: Vec<Action> = members
        .into_iter()
        .chain(groups)
        .map(|new| match owned_nexthops.iter().find(|old| old.id == new.id) {
            Some(old) => Action::ReplaceNexthop { old: (*old).clone(), new: new.clone() },
            None => Action::AddNexthop { nexthop: new.clone() },
        })
        .collect();
    actions.extend(route_changes(specifics));
    actions.extend(route_changes(defaults));
    let main_changes = route_changes(main_adds);
    actions.extend(
        desired
            .rules
            .iter()
            .filter(|r| !owned_rules.contains(r))
            .map(|rule| Action::AddRule { rule: rule.clone() }),
    );
    actions.extend(
        owned_rules
            .iter()
            .filter(|r| !desired.rules.contains(r))
            .map(|rule| Action::DeleteRule { rule: (*rule).clone() }),
    );
    actions.extend(stale.into_iter().map(|route| Action::DeleteRoute { route: route.clone() }));
    // Nexthops no route or group uses any more: groups, then members.
    let wanted: BTreeSet<u32> = desired.nexthops.iter().map(|n| n.id).collect();
    actions.extend(delete_nexthops(owned_nexthops.into_iter().filter(|n| !wanted.contains(&n.id))));
    actions.extend(desired.restore.iter().map(|record| Action::RestoreDefault {
        route: record.route.clone(),
        interface: record.interface.clone(),
    }));
    actions.extend(main_changes);
    actions
}

/// Deletions of `nexthops`, groups before their members.
pub(super) fn delete_nexthops<'a>(nexthops: impl Iterator<Item = &'a Nexthop>) -> Vec<Action> {
    let (groups, members): (Vec<&Nexthop>, Vec<&Nexthop>) = nexthops.partition(|n| n.is_group());
    groups.into_iter().chain(members).map(|n| Action::DeleteNexthop { nexthop: n.clone() }).collect()
}

/// What makes a route itself: for a route on a nexthop group, not the
/// next hops the kernel reports for the group.
fn identity(route: &Route) -> Route {
    match route.nexthop_group {
        Some(_) => {
            Route { gateway: None, interface: None, onlink: false, multipath: Vec::new(), ..route.clone() }
        }
        None => route.clone(),
    }
}
