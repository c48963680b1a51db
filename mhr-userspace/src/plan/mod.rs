//! From config and observed kernel state to the desired state, and from
//! there to the actions that reach it. Pure functions: no kernel, no files.

mod action;
mod clashes;
mod desired;
mod diff;
mod gateway;
mod main_default;
mod steer;
mod tables;
mod teardown;

pub use action::{Action, route_key};
pub use clashes::{isolate, owner_of};
pub use desired::{DEFAULT_TABLE_NAME, Desired, Memory, Strictness, UplinkPlan, desired, rule_sources};
pub use diff::diff;
pub use main_default::default_rules;
pub use steer::Steering;
pub use teardown::teardown;

use crate::model::{Family, KernelError};
pub use crate::model::{Gateway, GatewaySource};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{path}: uplink `{interface}` does not exist on this host")]
    UnknownInterface { path: String, interface: String },
    #[error(
        "cannot learn the {family} gateway of `{interface}`: no default route via `{interface}` in any table; set `{key}` for this uplink in {path}"
    )]
    GatewayUnknown { path: String, interface: String, family: Family, key: &'static str },
    #[error("table {table} (for `{interface}`) is already used by a route mhr does not own: {object}")]
    TableHasForeignRoute { table: u32, interface: String, object: String },
    #[error("table {table} (for `{interface}`) is already used by a rule mhr does not own: {object}")]
    TableHasForeignRule { table: u32, interface: String, object: String },
    #[error("priority {priority} (for `{interface}`) is already used by a rule mhr does not own: {object}")]
    PriorityTaken { priority: u32, interface: String, object: String },
    #[error("no free table left in table_range {start}–{end} for `{interface}`")]
    TablesExhausted { start: u32, end: u32, interface: String },
    #[error("the kernel refused `{action}` for `{interface}`: {error}")]
    Refused { interface: String, action: String, error: KernelError },
}

#[cfg(test)]
mod tests;
