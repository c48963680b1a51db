//! One change to the kernel ([`Action`]), its inverse, its metric kind and
//! how it reads (an `ip` command, a sentence), and a route's kernel key.

use ipnet::IpNet;
use serde::Serialize;

use super::Desired;
use crate::model::{Names, Nexthop, Route, Rule, rule_args};

/// One change to the kernel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    AddRoute {
        route: Route,
    },
    /// A route whose key stays but whose gateway, source or device changed.
    ReplaceRoute {
        old: Route,
        new: Route,
    },
    AddRule {
        rule: Rule,
    },
    DeleteRule {
        rule: Rule,
    },
    DeleteRoute {
        route: Route,
    },
    /// Move a foreign default route out of main, recording it for `down`.
    ReleaseDefault {
        route: Route,
        interface: String,
    },
    /// Put a recorded default route back into main.
    RestoreDefault {
        route: Route,
        interface: String,
    },
    AddNexthop {
        nexthop: Nexthop,
    },
    /// A nexthop whose id stays: a group's members, a member's gateway.
    /// Replacing a resilient group in place keeps the buckets of the
    /// members that stay.
    ReplaceNexthop {
        old: Nexthop,
        new: Nexthop,
    },
    DeleteNexthop {
        nexthop: Nexthop,
    },
}

impl Action {
    /// The action that undoes this one.
    pub fn inverse(&self) -> Self {
        match self.clone() {
            Self::AddRoute { route } => Self::DeleteRoute { route },
            Self::ReplaceRoute { old, new } => Self::ReplaceRoute { old: new, new: old },
            Self::DeleteRoute { route } => Self::AddRoute { route },
            Self::AddRule { rule } => Self::DeleteRule { rule },
            Self::DeleteRule { rule } => Self::AddRule { rule },
            Self::ReleaseDefault { route, interface } => Self::RestoreDefault { route, interface },
            Self::RestoreDefault { route, interface } => Self::ReleaseDefault { route, interface },
            Self::AddNexthop { nexthop } => Self::DeleteNexthop { nexthop },
            Self::ReplaceNexthop { old, new } => Self::ReplaceNexthop { old: new, new: old },
            Self::DeleteNexthop { nexthop } => Self::AddNexthop { nexthop },
        }
    }

    /// Whether this changes a nexthop object (not a route or rule).
    pub fn is_nexthop(&self) -> bool {
        matches!(self, Self::AddNexthop { .. } | Self::ReplaceNexthop { .. } | Self::DeleteNexthop { .. })
    }

    /// A short name for metrics (`mhr_drift_corrections_total{kind}`).
    /// Every value of [`Action::kind`], for metrics initialised at zero.
    pub const KINDS: [&'static str; 10] = [
        "route_added",
        "route_replaced",
        "route_deleted",
        "rule_added",
        "rule_deleted",
        "default_moved",
        "default_restored",
        "nexthop_added",
        "nexthop_replaced",
        "nexthop_deleted",
    ];

    /// Whether this action undoes drift (someone changed what mhr keeps)
    /// rather than following a change of the host (`before`: what mhr
    /// wanted at the previous reconcile).
    pub fn corrects_drift(&self, before: &Desired) -> bool {
        match self {
            Self::AddRoute { route } => before.routes.contains(route),
            Self::ReplaceRoute { new, .. } => before.routes.contains(new),
            Self::DeleteRoute { route } => !before.routes.contains(route),
            Self::AddRule { rule } => before.rules.contains(rule),
            Self::DeleteRule { rule } => !before.rules.contains(rule),
            Self::ReleaseDefault { .. } | Self::RestoreDefault { .. } => false,
            Self::AddNexthop { nexthop } => before.nexthops.contains(nexthop),
            Self::ReplaceNexthop { new, .. } => before.nexthops.contains(new),
            Self::DeleteNexthop { nexthop } => !before.nexthops.contains(nexthop),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::AddRoute { .. } => "route_added",
            Self::ReplaceRoute { .. } => "route_replaced",
            Self::DeleteRoute { .. } => "route_deleted",
            Self::AddRule { .. } => "rule_added",
            Self::DeleteRule { .. } => "rule_deleted",
            Self::ReleaseDefault { .. } => "default_moved",
            Self::RestoreDefault { .. } => "default_restored",
            Self::AddNexthop { .. } => "nexthop_added",
            Self::ReplaceNexthop { .. } => "nexthop_replaced",
            Self::DeleteNexthop { .. } => "nexthop_deleted",
        }
    }

    /// The equivalent `ip` command.
    pub fn ip_command(&self, names: &Names) -> String {
        match self {
            Self::ReplaceRoute { new, .. } => names.route_command("replace", new),
            Self::AddRoute { route } | Self::RestoreDefault { route, .. } => {
                names.route_command("add", route)
            }
            Self::DeleteRoute { route } | Self::ReleaseDefault { route, .. } => {
                names.route_command("del", route)
            }
            Self::AddRule { rule } => crate::model::rule_command("add", rule),
            Self::DeleteRule { rule } => crate::model::rule_command("del", rule),
            Self::AddNexthop { nexthop } => nexthop.command("add", names),
            Self::ReplaceNexthop { new, .. } => new.command("replace", names),
            Self::DeleteNexthop { nexthop } => format!("ip nexthop del id {}", nexthop.id),
        }
    }

    /// A sentence for people.
    pub fn describe(&self, names: &Names) -> String {
        match self {
            Self::AddRoute { route } => format!("add route {}", names.route_args(route)),
            Self::ReplaceRoute { old, new } => {
                format!("replace route {} with {}", names.route_args(old), names.route_args(new))
            }
            Self::DeleteRoute { route } => format!("delete route {}", names.route_args(route)),
            Self::AddRule { rule } => format!("add rule {}", rule_args(rule)),
            Self::DeleteRule { rule } => format!("delete rule {}", rule_args(rule)),
            Self::ReleaseDefault { route, interface } => {
                format!(
                    "move {interface}'s default route out of main (restored by `mhr down`): {}",
                    names.route_args(route)
                )
            }
            Self::RestoreDefault { route, interface } => {
                format!("restore {interface}'s default route to main: {}", names.route_args(route))
            }
            Self::AddNexthop { nexthop } => format!("add nexthop {}", nexthop.args(names)),
            Self::ReplaceNexthop { old, new } => {
                format!("replace nexthop {} with {}", old.args(names), new.args(names))
            }
            Self::DeleteNexthop { nexthop } => format!("delete nexthop {}", nexthop.args(names)),
        }
    }
}

/// The fields the kernel identifies a route by (tos is always 0 here):
/// two routes with the same key cannot coexist, one replaces the other.
pub fn route_key(route: &Route) -> (u32, IpNet, u32) {
    (route.table, route.destination, route.metric.unwrap_or(0))
}
