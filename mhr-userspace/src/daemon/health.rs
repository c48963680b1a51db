//! The daemon's side of uplink health: the probe task, health rounds, the
//! judge the planner asks, the snapshot `mhr status` reads, and what a
//! start knows before its first round (the last judgement, one probe round).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::{
    health::{FamilyHealth, Fault, HealthBook, RoundSample, Transition},
    model::Family,
    plan::{FamilyVerdict, Gateway, HealthJudge, UplinkPlan},
    probe::{ProbePlan, ProbeResult},
};

/// The planner's judge during a reconcile: link faults count at once,
/// everything else is what the rounds have established.
pub struct BookJudge<'a> {
    pub book: &'a mut HealthBook,
    pub now: u64,
    pub transitions: Vec<Transition>,
}

impl HealthJudge for BookJudge<'_> {
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        _: bool,
    ) -> FamilyVerdict {
        self.transitions.extend(self.book.observe_link(interface, family, link_fault, self.now));
        let entry = self.book.get(interface, family);
        FamilyVerdict {
            family,
            healthy: entry.is_some_and(|e| e.healthy),
            fault: entry.and_then(|e| e.fault),
        }
    }
}

/// Sends one probe round per `interval` to whatever `plans` holds, and the
/// results (possibly none) to `rounds`: the heartbeat of health rounds.
pub async fn probe_rounds(
    kernel: std::sync::Arc<dyn crate::southbound::Southbound>,
    mut plans: watch::Receiver<Vec<ProbePlan>>,
    rounds: mpsc::Sender<Vec<ProbeResult>>,
    interval: Duration,
    timeout: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let current = plans.borrow_and_update().clone();
        let results = kernel.probe(&current, timeout).await;
        if rounds.send(results).await.is_err() {
            return;
        }
    }
}

/// What the link itself says about `uplink` carrying `family`.
fn link_fault(uplink: &UplinkPlan, family: Family) -> Option<Fault> {
    let has_address = uplink.addresses.iter().any(|a| Family::of(&a.addr()) == family);
    crate::plan::link_fault(uplink.up, uplink.carrier, has_address, uplink.gateway(family).is_some())
}

/// One health round over the uplink families of the last plan.
pub fn round(
    book: &mut HealthBook,
    uplinks: &[UplinkPlan],
    probes: &[ProbeResult],
    failed_neighbours: &std::collections::BTreeSet<(u32, std::net::IpAddr)>,
    now: u64,
) -> Vec<Transition> {
    let mut transitions = Vec::new();
    for uplink in uplinks {
        for verdict in &uplink.health {
            let family = verdict.family;
            let gateway_unreachable = match uplink.gateway(family) {
                Some(Gateway::Via(address)) => failed_neighbours.contains(&(uplink.index, address)),
                _ => false,
            };
            let probe = probes
                .iter()
                .find(|p| p.interface == uplink.interface && p.family == family)
                .map(|p| p.outcome);
            let sample = RoundSample { gateway_unreachable, probe };
            let fault = link_fault(uplink, family);
            transitions.extend(book.observe_round(&uplink.interface, family, fault, sample, now));
        }
    }
    transitions
}

/// The daemon's health view on disk, for `mhr status` and `mhr check`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub pid: u32,
    /// Unix seconds when written.
    pub written: u64,
    pub uplinks: Vec<HealthRecord>,
    /// Per family, the uplinks holding main's default.
    pub active: BTreeMap<Family, Vec<String>>,
    /// Why the daemon's guard is not running (it retries with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub interface: String,
    pub family: Family,
    #[serde(flatten)]
    pub health: FamilyHealth,
}

impl HealthSnapshot {
    pub fn of(book: &HealthBook, active: &BTreeMap<Family, Vec<String>>, now: u64) -> Self {
        Self {
            pid: std::process::id(),
            written: now,
            uplinks: book
                .entries()
                .map(|((interface, family), health)| HealthRecord {
                    interface: interface.clone(),
                    family: *family,
                    health: health.clone(),
                })
                .collect(),
            active: active.clone(),
            guard_error: None,
        }
    }

    pub fn get(&self, interface: &str, family: Family) -> Option<&FamilyHealth> {
        self.uplinks.iter().find(|r| r.interface == interface && r.family == family).map(|r| &r.health)
    }
}

/// How old a remembered judgement may be to count at start-up.
pub const REMEMBER_FOR: u64 = 600;

/// Uplink families with probe targets.
pub fn probed(config: &crate::config::Config) -> Vec<(String, Family)> {
    config
        .uplinks
        .iter()
        .flat_map(|u| {
            [Family::V4, Family::V6]
                .into_iter()
                .filter(|family| u.probes(*family).next().is_some())
                .map(|family| (u.interface.clone(), family))
        })
        .collect()
}

/// Puts back the last judgement of an earlier run (a daemon killed leaves
/// `health.json`, one stopped `health-last.json`) when it is at most
/// [`REMEMBER_FOR`] old: a restart during a failover keeps the failover.
pub fn remember(book: &mut HealthBook, state_dir: &std::path::Path, now: u64) {
    let read = |snapshot: Result<HealthSnapshot, crate::state::StateError>| {
        snapshot.ok().filter(|s| s.written > 0 && s.written + REMEMBER_FOR >= now)
    };
    let newest =
        [read(crate::state::read_health(state_dir)), read(crate::state::read_retired_health(state_dir))]
            .into_iter()
            .flatten()
            .max_by_key(|s| s.written);
    let Some(snapshot) = newest else { return };
    for record in snapshot.uplinks {
        tracing::info!(
            uplink = %record.interface,
            family = %record.family,
            healthy = record.health.healthy,
            age_seconds = now.saturating_sub(snapshot.written),
            "remembered health"
        );
        book.remember(&record.interface, record.family, record.health);
    }
}

/// One probe round before the first reconcile, as `apply` does: an uplink
/// family nothing is remembered of is judged by it at once (a primary
/// already dead never takes main's default). Probes without a way out of
/// their uplink yet (no table, no default via it) judge nothing.
pub async fn startup_round(engine: &crate::engine::Engine, book: &mut HealthBook, timeout: Duration) {
    let observed = match engine.observe().await {
        Ok(observed) => observed,
        Err(err) => {
            tracing::warn!(error = %crate::engine::error_chain(&err), "observing for the start-up probe round failed");
            return;
        }
    };
    let plans: Vec<ProbePlan> = crate::probe::probe_plans(engine.config(), &observed)
        .into_iter()
        .filter(|plan| crate::probe::has_path(&observed, plan))
        .filter(|plan| book.get(&plan.interface, plan.family).is_none())
        .collect();
    if plans.is_empty() {
        return;
    }
    let now = unix_seconds();
    for result in engine.kernel().probe(&plans, timeout).await {
        book.first_round(&result.interface, result.family, result.outcome.answered, now);
    }
}

pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
