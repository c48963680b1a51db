//! Foreign objects where an uplink's table or rules go, and leaving such an
//! uplink as it is.

use super::{Action, Desired, PlanError, UplinkPlan};
use crate::{
    config::Config,
    model::{Observed, Rule, rule_args},
};

/// Uplinks whose table or priorities a foreign object already uses, with
/// the first such object: one-shot commands refuse before any change, the
/// daemon leaves those uplinks as they are ([`isolate`]).
pub(super) fn clashes(config: &Config, observed: &Observed, desired: &Desired) -> Vec<(usize, PlanError)> {
    let protocol = config.routing.protocol;
    let names = observed.names();
    let foreign_rules = || observed.rules.iter().filter(|r| r.protocol != protocol);
    let clash = |uplink: &UplinkPlan| {
        let interface = uplink.interface.clone();
        if let Some(route) =
            observed.routes.iter().find(|r| r.table == uplink.table && r.protocol != protocol)
        {
            let object = names.route_args(route);
            return Some(PlanError::TableHasForeignRoute { table: uplink.table, interface, object });
        }
        if let Some(rule) = foreign_rules().find(|r| r.table == uplink.table) {
            let object = rule_args(rule);
            return Some(PlanError::TableHasForeignRule { table: uplink.table, interface, object });
        }
        [uplink.to_priority, uplink.from_priority].into_iter().find_map(|priority| {
            let rule = foreign_rules().find(|r| r.priority == priority)?;
            let (interface, object) = (interface.clone(), rule_args(rule));
            Some(PlanError::PriorityTaken { priority, interface, object })
        })
    };
    desired.uplinks.iter().enumerate().filter_map(|(index, uplink)| Some((index, clash(uplink)?))).collect()
}

/// The uplink whose table or rule priorities `action` touches, if any
/// (mhr's default and the rules to it belong to no one uplink).
pub fn owner_of(desired: &Desired, action: &Action) -> Option<usize> {
    let (table, priority) = match action {
        Action::AddRoute { route }
        | Action::DeleteRoute { route }
        | Action::ReplaceRoute { new: route, .. } => (route.table, None),
        Action::AddRule { rule } | Action::DeleteRule { rule } => (rule.table, Some(rule.priority)),
        Action::ReleaseDefault { .. }
        | Action::RestoreDefault { .. }
        | Action::AddNexthop { .. }
        | Action::ReplaceNexthop { .. }
        | Action::DeleteNexthop { .. } => return None,
    };
    desired.uplinks.iter().position(|uplink| {
        uplink.table == table
            || priority.is_some_and(|p| [uplink.from_priority, uplink.to_priority].contains(&p))
    })
}

/// Leaves uplink `index`'s table and rules exactly as they are (mhr's own
/// included: deleting them would break the uplink's replies) and says why.
pub fn isolate(desired: &mut Desired, observed: &Observed, protocol: u8, index: usize, clash: &PlanError) {
    let uplink = &mut desired.uplinks[index];
    let (table, priorities) = (uplink.table, [uplink.to_priority, uplink.from_priority]);
    let its_rule = |rule: &Rule| rule.table == table || priorities.contains(&rule.priority);
    desired.rules.retain(|rule| !its_rule(rule));
    desired.routes.retain(|route| route.table != table);
    desired.rules.extend(observed.rules.iter().filter(|r| r.protocol == protocol && its_rule(r)).cloned());
    desired
        .routes
        .extend(observed.routes.iter().filter(|r| r.protocol == protocol && r.table == table).cloned());
    uplink.blocked = Some(clash.to_string());
    desired.notes.push(format!("{}: left as it is: {clash}", uplink.interface));
}
