//! Teardown: the actions that remove everything mhr owns and put the
//! default routes it moved back into main.

use std::collections::BTreeSet;

use super::{Action, route_key};
use crate::model::{MovedRoute, Observed, Route};

/// Actions that remove everything mhr owns and put moved routes back.
pub fn teardown(observed: &Observed, protocol: u8, moved: &[MovedRoute]) -> Vec<Action> {
    let mut actions: Vec<Action> = observed
        .rules
        .iter()
        .filter(|r| r.protocol == protocol)
        .map(|rule| Action::DeleteRule { rule: rule.clone() })
        .collect();
    // Restore main's default routes before removing mhr's own routes, so the
    // host never lacks one. A default mhr added in main under the same
    // kernel key is replaced by the restored route; a foreign route that
    // took the key meanwhile (a DHCP client) wins. Records of interfaces
    // that are gone wait for a later `down`.
    let mut keys = BTreeSet::new();
    let mut replaced: Vec<&Route> = Vec::new();
    for record in moved {
        let Some(link) = observed.link(&record.interface) else {
            continue;
        };
        let route = Route { interface: Some(link.index), ..record.route.clone() };
        let key = route_key(&route);
        let holder = observed.routes.iter().find(|r| route_key(r) == key);
        if !keys.insert(key) || holder.is_some_and(|r| r.protocol != protocol) {
            continue;
        }
        match holder {
            Some(owned) => {
                replaced.push(owned);
                actions.push(Action::ReplaceRoute { old: owned.clone(), new: route });
            }
            None => actions.push(Action::RestoreDefault { route, interface: record.interface.clone() }),
        }
    }
    actions.extend(
        observed
            .routes
            .iter()
            .filter(|r| r.protocol == protocol && !replaced.contains(r))
            .map(|route| Action::DeleteRoute { route: route.clone() }),
    );
    let owned = observed.nexthops.iter().flatten().filter(|n| n.protocol == protocol);
    actions.extend(super::diff::delete_nexthops(owned));
    actions
}
