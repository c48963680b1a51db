//! Steering rules (`[[rule]]`) compiled to kernel rules: each rule, in
//! each family it covers, looks up the table of the first usable uplink of
//! its list (healthy, not degraded, not drained, not blocked, with an
//! address and a gateway in the family); with none, it is withdrawn and
//! its traffic takes main's default. Priorities: rule N (from 0) at
//! `suppress − MAX_RULES + N`, after every uplink's `from` rules (traffic
//! with an uplink's own source keeps to that uplink: replies stay
//! symmetric) and before mhr's default lookup.

use serde::Serialize;

use super::{Desired, UplinkPlan};
use crate::{
    config::{Config, MAX_RULES},
    model::{Family, Rule},
};

/// Where one rule steers one family now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Steering {
    /// The rule's number in the config (from 1).
    pub rule: usize,
    pub family: Family,
    /// The uplink taken, or None: withdrawn.
    pub uplink: Option<String>,
    /// The kernel rules' priority.
    pub priority: u32,
}

/// The priority of rule `index` (from 0).
pub fn priority(config: &Config, index: usize) -> u32 {
    let (suppress, _) = config.routing.default_priorities();
    suppress - MAX_RULES as u32 + index as u32
}

fn usable(uplink: &UplinkPlan, family: Family) -> bool {
    let verdict = uplink.verdict(family);
    uplink.blocked.is_none()
        && uplink.drained.is_none()
        && uplink.gateway(family).is_some()
        && uplink.addresses.iter().any(|a| Family::of(&a.addr()) == family)
        && verdict.is_some_and(|v| v.healthy && !v.degraded)
}

/// Adds every rule's kernel rules to `desired`, and what each steers.
pub(super) fn steer(desired: &mut Desired, config: &Config) {
    let protocol = config.routing.protocol;
    for (index, rule) in config.rules.iter().enumerate().take(MAX_RULES) {
        let Ok(selectors) = rule.selectors() else { continue };
        let priority = priority(config, index);
        for family in rule.families() {
            let chosen = rule.uplink.iter().find_map(|name| {
                desired.uplinks.iter().find(|u| &u.interface == name).filter(|u| usable(u, family))
            });
            let Some(uplink) = chosen else {
                desired.notes.push(format!(
                    "rule #{}: no usable {family} uplink among {}: withdrawn, its traffic takes main's default",
                    index + 1,
                    rule.uplink.join(", ")
                ));
                desired.steering.push(Steering { rule: index + 1, family, uplink: None, priority });
                continue;
            };
            let table = uplink.table;
            desired.steering.push(Steering {
                rule: index + 1,
                family,
                uplink: Some(uplink.interface.clone()),
                priority,
            });
            let destinations: Vec<Option<ipnet::IpNet>> = if rule.to.is_empty() {
                vec![None]
            } else {
                // A /0 is "any destination": the kernel stores and reports
                // it without a destination, and so must the plan.
                rule.to
                    .iter()
                    .filter(|p| Family::of(&p.addr()) == family)
                    .map(|p| Some(*p).filter(|p| p.prefix_len() > 0))
                    .collect()
            };
            for destination in destinations {
                desired.rules.insert(Rule {
                    family,
                    priority,
                    table,
                    source: None,
                    destination,
                    protocol,
                    suppress_prefixlength: None,
                    selectors,
                    other_selectors: false,
                });
            }
        }
    }
}
