//! The daemon's health rounds: the probe task, one round over the uplinks
//! of the last plan, and the probe round before the first reconcile.

use std::{collections::BTreeSet, time::Duration};

use tokio::sync::{mpsc, watch};

use crate::{
    health::{
        Fault, HealthBook, RoundSample, Transition,
        cadence::{Cadence, ProbeRound},
        probe::ProbePlan,
    },
    model::Family,
    plan::{Gateway, UplinkPlan},
};

/// What the probe task follows: the probes of the last plan, and the
/// uplinks that carry traffic (`probe_when_idle`; always empty without).
pub struct ProbeInputs {
    pub plans: watch::Receiver<Vec<ProbePlan>>,
    pub busy: watch::Receiver<BTreeSet<String>>,
}

/// One health round per `interval` over whatever `plans` holds: probes
/// the uplink families due by their `probe_interval` ([`Cadence`]) and not
/// busy, and sends the results (possibly none) and the families skipped
/// to `rounds`: the heartbeat of health rounds.
pub async fn probe_rounds(
    kernel: std::sync::Arc<dyn crate::southbound::Southbound>,
    mut inputs: ProbeInputs,
    rounds: mpsc::Sender<ProbeRound>,
    interval: Duration,
    timeout: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cadence = Cadence::new(interval);
    loop {
        let now = ticker.tick().await;
        let current = inputs.plans.borrow_and_update().clone();
        kernel.keep_probes(&current).await;
        let (due, mut skipped) = cadence.due(&current, now);
        let busy_now = inputs.busy.borrow_and_update().clone();
        let (busy, due): (Vec<ProbePlan>, Vec<ProbePlan>) =
            due.into_iter().partition(|plan| busy_now.contains(&plan.interface));
        let busy: BTreeSet<(String, Family)> =
            busy.into_iter().map(|plan| (plan.interface, plan.family)).collect();
        skipped.extend(busy.iter().cloned());
        let results = kernel.probe(&due, timeout).await;
        if rounds.send(ProbeRound { results, skipped, busy }).await.is_err() {
            return;
        }
    }
}

/// What the link itself says about `uplink` carrying `family`.
fn link_fault(uplink: &UplinkPlan, family: Family) -> Option<Fault> {
    let has_address = uplink.addresses.iter().any(|a| Family::of(&a.addr()) == family);
    crate::health::judge::link_fault(uplink.up, uplink.carrier, has_address, uplink.gateway(family).is_some())
}

/// One health round over the uplink families of the last plan;
/// `passive_fault` says what passive health holds against an uplink.
pub fn round(
    book: &mut HealthBook,
    uplinks: &[UplinkPlan],
    probes: &ProbeRound,
    failed_neighbours: &BTreeSet<(u32, std::net::IpAddr)>,
    passive_fault: &dyn Fn(&str) -> Option<Fault>,
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
            let result =
                probes.results.iter().find(|p| p.interface == uplink.interface && p.family == family);
            let skipped = probes.skipped.contains(&(uplink.interface.clone(), family));
            let sample = RoundSample {
                gateway_unreachable,
                probe: result.map(|p| p.outcome),
                skipped,
                passive: passive_fault(&uplink.interface),
                busy: probes.busy.contains(&(uplink.interface.clone(), family)),
            };
            let fault = link_fault(uplink, family);
            transitions.extend(book.observe_round(&uplink.interface, family, fault, sample, now));
            if let Some(result) = result {
                transitions.extend(book.record_targets(&uplink.interface, family, &result.targets, now));
            }
        }
    }
    transitions
}

/// One probe round before the first reconcile, as `apply` does: an uplink
/// family nothing is remembered of is judged by it at once (a primary
/// already dead never takes main's default). Probes without a way out of
/// their uplink yet (no table, no default via it) judge nothing.
pub async fn startup_round(engine: &crate::engine::Engine, book: &mut HealthBook, timeout: Duration) {
    let observed = match engine.observe().await {
        Ok(observed) => observed,
        Err(err) => {
            tracing::warn!(error = %crate::error_chain(&err), "observing for the start-up probe round failed");
            return;
        }
    };
    let plans: Vec<ProbePlan> = crate::health::probe::probe_plans(engine.config(), &observed)
        .into_iter()
        .filter(|plan| crate::health::probe::has_path(&observed, plan))
        .filter(|plan| book.get(&plan.interface, plan.family).is_none())
        .collect();
    if plans.is_empty() {
        return;
    }
    let now = crate::clock::unix_seconds();
    for result in engine.kernel().probe(&plans, timeout).await {
        book.first_round(&result.interface, result.family, result.outcome.answered, now);
    }
}
