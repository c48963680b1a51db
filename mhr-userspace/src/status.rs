//! `mhr status`: uplinks as mhr sees them and whether each of their rules
//! and routes is in place.

use serde::Serialize;

use crate::{
    engine::{Engine, EngineError},
    model::rule_args,
    plan::{Gateway, GatewaySource},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectStatus {
    pub object: String,
    pub present: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayStatus {
    pub gateway: String,
    pub learned_from: GatewaySource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UplinkStatus {
    pub interface: String,
    pub index: u32,
    pub primary: bool,
    pub up: bool,
    pub table: u32,
    pub addresses: Vec<String>,
    pub gateway4: Option<GatewayStatus>,
    pub gateway6: Option<GatewayStatus>,
    pub rules: Vec<ObjectStatus>,
    pub routes: Vec<ObjectStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub uplinks: Vec<UplinkStatus>,
    /// True when `apply` would change nothing.
    pub in_sync: bool,
    /// What `apply` would do.
    pub pending: Vec<String>,
    pub notes: Vec<String>,
}

fn gateway_status(gateway: Option<(Gateway, GatewaySource)>) -> Option<GatewayStatus> {
    gateway.map(|(gateway, learned_from)| GatewayStatus { gateway: gateway.to_string(), learned_from })
}

impl Engine {
    pub async fn status(&self) -> Result<Status, EngineError> {
        let planned = self.plan().await?;
        let (observed, desired, names) = (&planned.observed, &planned.desired, &planned.names);
        let uplinks = desired
            .uplinks
            .iter()
            .map(|uplink| UplinkStatus {
                interface: uplink.interface.clone(),
                index: uplink.index,
                primary: uplink.primary,
                up: uplink.up,
                table: uplink.table,
                addresses: uplink.addresses.iter().map(ToString::to_string).collect(),
                gateway4: gateway_status(uplink.gateway4),
                gateway6: gateway_status(uplink.gateway6),
                rules: desired
                    .rules
                    .iter()
                    .filter(|rule| rule.table == uplink.table)
                    .map(|rule| ObjectStatus {
                        object: rule_args(rule),
                        present: observed.rules.contains(rule),
                    })
                    .collect(),
                routes: desired
                    .routes
                    .iter()
                    .filter(|route| route.table == uplink.table || route.interface == Some(uplink.index))
                    .map(|route| ObjectStatus {
                        object: names.route_args(route),
                        present: observed.routes.contains(route),
                    })
                    .collect(),
            })
            .collect();
        Ok(Status {
            uplinks,
            in_sync: planned.actions.is_empty(),
            pending: planned.actions.iter().map(|a| a.describe(names)).collect(),
            notes: desired.notes.clone(),
        })
    }
}
