//! The diff: actions taking the observed state to the desired one, in a
//! safe order.

use std::collections::BTreeSet;

use super::{Action, Desired, route_key};
use crate::model::{MAIN_TABLE, Observed, Route, Rule};

/// Actions taking the observed state to the desired one, in a safe order:
/// new routes before the rules that point at them (connected and host
/// routes before the defaults whose gateway they make reachable), a route
/// that changed (new gateway, new source) replaced in place, stale rules
/// before the routes they point at, and main's default (a replace when the
/// active uplink changes) last.
pub fn diff(desired: &Desired, observed: &Observed, protocol: u8) -> Vec<Action> {
    let owned_routes: BTreeSet<&Route> = observed.routes.iter().filter(|r| r.protocol == protocol).collect();
    let owned_rules: BTreeSet<&Rule> = observed.rules.iter().filter(|r| r.protocol == protocol).collect();
    let mut stale: Vec<&Route> =
        owned_routes.iter().copied().filter(|r| !desired.routes.contains(r)).collect();
    let mut route_changes = |routes: Vec<&Route>| -> Vec<Action> {
        routes
            .into_iter()
            .map(|route| match stale.iter().position(|old| route_key(old) == route_key(route)) {
                Some(index) => Action::ReplaceRoute { old: stale.remove(index).clone(), new: route.clone() },
                None => Action::AddRoute { route: route.clone() },
            })
            .collect()
    };
    let missing: Vec<&Route> = desired.routes.iter().filter(|r| !owned_routes.contains(r)).collect();
    let (main_adds, table_adds): (Vec<&Route>, Vec<&Route>) =
        missing.into_iter().partition(|r| r.table == MAIN_TABLE);
    let (defaults, specifics): (Vec<&Route>, Vec<&Route>) =
        table_adds.into_iter().partition(|r| r.is_default());
    let mut actions = route_changes(specifics);
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
    actions.extend(desired.restore.iter().map(|record| Action::RestoreDefault {
        route: record.route.clone(),
        interface: record.interface.clone(),
    }));
    actions.extend(main_changes);
    actions
}
