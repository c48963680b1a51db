//! `mhr status`: uplinks as mhr sees them and whether each of their rules
//! and routes is in place.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    engine::{Engine, EngineError},
    model::rule_args,
    plan::{Gateway, GatewaySource},
};

mod guard;

pub use guard::{GuardStatus, GuardUplinkStatus, PacketCount, TOP_OFFENDERS};

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

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UplinkStatus {
    pub interface: String,
    pub index: u32,
    pub primary: bool,
    pub up: bool,
    pub carrier: bool,
    pub table: u32,
    pub addresses: Vec<String>,
    pub gateway4: Option<GatewayStatus>,
    pub gateway6: Option<GatewayStatus>,
    pub rules: Vec<ObjectStatus>,
    pub routes: Vec<ObjectStatus>,
    /// Per family the uplink carries: health, why, since when, probes.
    pub health: Vec<FamilyStatus>,
    /// Why mhr leaves this uplink's table and rules as they are.
    pub blocked: Option<String>,
    /// Configured, but no such interface on the host.
    pub missing: bool,
    /// `optional = true`: may be missing.
    pub optional: bool,
    /// Drained (`mhr drain`): since when and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<crate::drain::Drain>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FamilyStatus {
    pub family: crate::model::Family,
    pub healthy: bool,
    pub fault: Option<crate::health::Fault>,
    /// Holds main's default route in this family.
    pub active: bool,
    /// From the running daemon (with hysteresis), else judged now.
    pub judged_by: &'static str,
    /// Unix seconds of the last change (daemon only).
    pub since: Option<u64>,
    pub probe_loss: Option<f64>,
    pub probe_rtt_seconds: Option<f64>,
    /// healthy, degraded or down.
    pub state: crate::health::quality::UplinkState,
    /// Why it is degraded (a quality threshold it is over), daemon only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Each probe target over `[health] window` (daemon only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<crate::health::targets::TargetStats>,
}

/// `status --json`'s `version`: 2 lists missing uplinks (`missing`),
/// `errors`, `daemon`, `confirmation` and `rolled_back`; 3 adds each probe
/// target's figures (`health[].targets`), and `health[].state` (healthy,
/// degraded, down, drained) with `degraded`, why, and `drained`; and
/// `steering`, where each `[[rule]]` sends each family.
pub const STATUS_VERSION: u32 = 3;

/// The daemon, as its health view on disk says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaemonStatus {
    /// A fresh health view exists (written within three health intervals).
    pub running: bool,
    pub pid: Option<u32>,
    /// Unix seconds of its last health view.
    pub updated: Option<u64>,
    /// Why its source guard is not running (it retries with backoff).
    pub guard_error: Option<String>,
}

/// A change applied with `--confirm` that waits for `mhr confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfirmationStatus {
    /// Unix seconds after which it is rolled back.
    pub deadline: u64,
    pub config_path: String,
    pub guardian: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// The schema of `status --json`: grows compatibly; a breaking change
    /// bumps it.
    pub version: u32,
    pub uplinks: Vec<UplinkStatus>,
    /// Per family, the uplinks holding main's default route.
    pub active: BTreeMap<crate::model::Family, Vec<String>>,
    /// Where each steering rule (`[[rule]]`) sends each family.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steering: Vec<crate::plan::Steering>,
    /// The rules that send host traffic to mhr's default table (main
    /// without its default routes, then the table).
    pub default_rules: Vec<ObjectStatus>,
    /// None when no guard is installed under the configured pin directory.
    pub guard: Option<GuardStatus>,
    /// True when `apply` would change nothing.
    pub in_sync: bool,
    /// What `apply` would do.
    pub pending: Vec<String>,
    pub notes: Vec<String>,
    /// What `plan` and `apply` refuse (the same errors, in full).
    pub errors: Vec<String>,
    pub daemon: DaemonStatus,
    pub confirmation: Option<ConfirmationStatus>,
    /// The config whose change was rolled back (`mhr run` will not use it).
    pub rolled_back: Option<String>,
}

fn gateway_status(gateway: Option<(Gateway, GatewaySource)>) -> Option<GatewayStatus> {
    gateway.map(|(gateway, learned_from)| GatewayStatus { gateway: gateway.to_string(), learned_from })
}

impl Engine {
    /// Never fails because one uplink cannot be routed: it is reported.
    pub async fn status(&self) -> Result<Status, EngineError> {
        let planned = self.plan_as(crate::plan::Strictness::Tolerant).await?;
        let daemon = self.daemon_health();
        let (observed, desired, names) = (&planned.observed, &planned.desired, &planned.names);
        let uplinks = desired
            .uplinks
            .iter()
            .map(|uplink| UplinkStatus {
                interface: uplink.interface.clone(),
                index: uplink.index,
                primary: uplink.primary,
                up: uplink.up,
                carrier: uplink.carrier,
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
                health: uplink
                    .health
                    .iter()
                    .map(|verdict| {
                        let remembered =
                            daemon.as_ref().and_then(|d| d.get(&uplink.interface, verdict.family));
                        FamilyStatus {
                            family: verdict.family,
                            healthy: verdict.healthy,
                            fault: verdict.fault,
                            active: desired
                                .active
                                .get(&verdict.family)
                                .is_some_and(|a| a.contains(&uplink.interface)),
                            judged_by: if remembered.is_some() { "daemon" } else { "now" },
                            since: remembered.map(|h| h.since),
                            probe_loss: remembered.and_then(|h| h.probe_loss),
                            probe_rtt_seconds: remembered.and_then(|h| h.probe_rtt_seconds),
                            targets: remembered.map(|h| h.targets.clone()).unwrap_or_default(),
                            state: match (verdict.healthy, verdict.degraded) {
                                _ if uplink.drained.is_some() => crate::health::quality::UplinkState::Drained,
                                (false, _) => crate::health::quality::UplinkState::Down,
                                (true, true) => crate::health::quality::UplinkState::Degraded,
                                (true, false) => crate::health::quality::UplinkState::Healthy,
                            },
                            degraded: remembered.and_then(|h| h.degraded.clone()),
                        }
                    })
                    .collect(),
                blocked: uplink.blocked.clone(),
                drained: uplink.drained,
                missing: false,
                optional: self.config().uplinks.iter().any(|u| u.interface == uplink.interface && u.optional),
            })
            .collect::<Vec<_>>();
        let mut uplinks = uplinks;
        for configured in &self.config().uplinks {
            if uplinks.iter().any(|u| u.interface == configured.interface) {
                continue;
            }
            uplinks.push(UplinkStatus {
                interface: configured.interface.clone(),
                index: 0,
                primary: configured.primary,
                up: false,
                carrier: false,
                table: configured.table.unwrap_or(0),
                addresses: Vec::new(),
                gateway4: None,
                gateway6: None,
                rules: Vec::new(),
                routes: Vec::new(),
                health: Vec::new(),
                blocked: None,
                drained: None,
                missing: true,
                optional: configured.optional,
            });
        }
        let state_dir = &self.config().routing.state_dir;
        let confirmation = crate::confirm::read_pending(state_dir)?.map(|pending| ConfirmationStatus {
            deadline: pending.deadline_ms / 1000,
            config_path: pending.config_path.display().to_string(),
            guardian: pending.guardian,
        });
        let rolled_back =
            crate::confirm::read_rolled_back(state_dir)?.map(|r| r.config_path.display().to_string());
        let uplink_tables: Vec<u32> = desired.uplinks.iter().map(|u| u.table).collect();
        let default_rules = desired
            .rules
            .iter()
            .filter(|rule| !uplink_tables.contains(&rule.table))
            .map(|rule| ObjectStatus { object: rule_args(rule), present: observed.rules.contains(rule) })
            .collect();
        let errors: Vec<String> = desired.problems.iter().map(ToString::to_string).collect();
        // Stale pins are named, not read (their layout is not the guard's).
        let pin_notes = crate::guard::pins::diagnose(&self.config().guard.pin_dir);
        let stale = pin_notes.iter().any(|note| note.starts_with("pinned map"));
        Ok(Status {
            errors,
            daemon: DaemonStatus {
                running: daemon.is_some(),
                pid: daemon.as_ref().map(|d| d.pid),
                updated: daemon.as_ref().map(|d| d.written),
                guard_error: daemon.as_ref().and_then(|d| d.guard_error.clone()),
            },
            confirmation,
            rolled_back,
            version: STATUS_VERSION,
            guard: if stale { None } else { self.guard_status()? },
            active: desired.active.clone(),
            steering: desired.steering.clone(),
            default_rules,
            uplinks,
            in_sync: planned.actions.is_empty() && desired.problems.is_empty(),
            pending: planned.actions.iter().map(|a| a.describe(names)).collect(),
            notes: desired
                .notes
                .iter()
                .cloned()
                .chain(
                    self.neighbours()
                        .into_iter()
                        .filter_map(|n| Some(format!("{}; {}", n.warning?, n.advice))),
                )
                .chain(pin_notes)
                .collect(),
        })
    }
}

/// An uplink named on the command line that the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("`{name}` is not a configured uplink (uplinks: {})", configured.join(", "))]
pub struct UnknownUplink {
    pub name: String,
    pub configured: Vec<String>,
}

impl Status {
    /// Only the uplinks named (and their guard lines); unknown names are an error.
    pub fn only(mut self, interfaces: &[String]) -> Result<Self, UnknownUplink> {
        if interfaces.is_empty() {
            return Ok(self);
        }
        if let Some(unknown) =
            interfaces.iter().find(|name| !self.uplinks.iter().any(|u| &u.interface == *name))
        {
            let configured = self.uplinks.iter().map(|u| u.interface.clone()).collect();
            return Err(UnknownUplink { name: unknown.clone(), configured });
        }
        self.uplinks.retain(|u| interfaces.contains(&u.interface));
        if let Some(guard) = &mut self.guard {
            guard.uplinks.retain(|u| interfaces.contains(&u.interface));
            guard.top_offenders.retain(|o| interfaces.contains(&o.uplink));
        }
        Ok(self)
    }
}
