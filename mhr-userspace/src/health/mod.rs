//! Uplink health, per uplink and address family. Faults of the link itself
//! (admin down, no carrier, no address, no gateway) count at once; what
//! only traffic tells (the gateway's neighbour entry, probes) counts in
//! rounds, with hysteresis: `down_after` failed rounds turn a healthy
//! uplink unhealthy, `up_after` good rounds bring it back. Pure: the daemon
//! and the one-shot commands feed it what they saw.
//!
//! The rest of health lives beside it: [`probe`] (what to probe and the
//! prober), [`judge`] (how the planner asks: one-shot, by the daemon's
//! book, or by the daemon's snapshot), [`snapshot`] (the daemon's view on
//! disk for `status`, `check` and the next start). The daemon's rounds are
//! in `daemon::rounds`.

pub mod cadence;
mod fault;
pub mod judge;
pub mod passive;
pub mod probe;
pub mod quality;
pub mod snapshot;
pub mod targets;

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use fault::Fault;

use crate::{
    config::{Assume, HealthConfig},
    model::Family,
};

/// One health round's view of an uplink family, besides the link itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundSample {
    pub gateway_unreachable: bool,
    /// `None` without probe targets; else whether any target answered,
    /// and the fastest answer.
    pub probe: Option<ProbeOutcome>,
    /// Its probes were not due this round (a `probe_interval` longer than
    /// `[health] interval`): its judge and probe figures stand; only the
    /// link and the gateway's neighbour state count.
    pub skipped: bool,
    /// `[health] passive`: it sends into silence (or failed for it and has
    /// received nothing since), or its TCP retransmits over the threshold.
    pub passive: Option<Fault>,
    /// `probe_when_idle`: its probes were not sent because it carries
    /// traffic, and what it received this round vouches for it.
    pub busy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeOutcome {
    pub answered: bool,
    pub rtt: Option<Duration>,
}

impl RoundSample {
    fn fault(&self) -> Option<Fault> {
        if self.gateway_unreachable {
            Some(Fault::GatewayUnreachable)
        } else if let Some(fault) = self.passive {
            Some(fault)
        } else if self.probe.is_some_and(|p| !p.answered) {
            Some(Fault::ProbesFailing)
        } else {
            None
        }
    }
}

/// Probe rounds remembered for the loss ratio.
const LOSS_WINDOW: usize = 20;

/// Health of one uplink in one family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyHealth {
    pub healthy: bool,
    /// Why it is unhealthy, or what is failing while hysteresis still holds it healthy.
    pub fault: Option<Fault>,
    /// Unix seconds of the last change of its state (healthy, degraded, down).
    pub since: u64,
    /// Consecutive good rounds (counting towards `up_after`).
    pub good_rounds: u32,
    /// Consecutive failed rounds (counting towards `down_after`).
    pub failed_rounds: u32,
    /// Fraction of the last probe rounds without an answer (None: no probes).
    pub probe_loss: Option<f64>,
    pub probe_rtt_seconds: Option<f64>,
    /// Each probe target over `[health] window`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<targets::TargetStats>,
    /// Why it is degraded (over a quality threshold), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    #[serde(skip)]
    probe_window: VecDeque<bool>,
}

impl FamilyHealth {
    fn new(fault: Option<Fault>, now: u64) -> Self {
        Self {
            healthy: fault.is_none(),
            fault,
            since: now,
            good_rounds: 0,
            failed_rounds: 0,
            probe_loss: None,
            probe_rtt_seconds: None,
            targets: Vec::new(),
            degraded: None,
            probe_window: VecDeque::new(),
        }
    }

    pub fn state(&self) -> quality::UplinkState {
        match (self.healthy, &self.degraded) {
            (false, _) => quality::UplinkState::Down,
            (true, Some(_)) => quality::UplinkState::Degraded,
            (true, None) => quality::UplinkState::Healthy,
        }
    }

    fn record_probe(&mut self, probe: Option<ProbeOutcome>) {
        let Some(probe) = probe else {
            self.probe_window.clear();
            self.targets.clear();
            // Without probes there is no quality to judge: not degraded.
            self.degraded = None;
            self.probe_loss = None;
            self.probe_rtt_seconds = None;
            return;
        };
        if self.probe_window.len() == LOSS_WINDOW {
            self.probe_window.pop_front();
        }
        self.probe_window.push_back(probe.answered);
        let lost = self.probe_window.iter().filter(|answered| !**answered).count();
        self.probe_loss = Some(lost as f64 / self.probe_window.len() as f64);
        if let Some(rtt) = probe.rtt {
            self.probe_rtt_seconds = Some(rtt.as_secs_f64());
        }
    }
}

/// A change of health, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub interface: String,
    pub family: Family,
    pub healthy: bool,
    pub fault: Option<Fault>,
    pub state: quality::UplinkState,
    pub previous: quality::UplinkState,
}

/// The daemon's memory of every uplink family's health.
#[derive(Clone, Debug)]
pub struct HealthBook {
    settings: HealthConfig,
    entries: BTreeMap<(String, Family), FamilyHealth>,
    /// Uplink families with probe targets: under `assume = "unhealthy"`
    /// they start unproven.
    probed: std::collections::BTreeSet<(String, Family)>,
    /// Each uplink's `probe_interval` where it is not `[health] interval`.
    cadence: BTreeMap<String, Duration>,
}

impl HealthBook {
    pub fn new(settings: HealthConfig) -> Self {
        Self { settings, entries: BTreeMap::new(), probed: Default::default(), cadence: BTreeMap::new() }
    }

    /// Each uplink's probe cadence (from the config): its targets' figures
    /// span `[health] window` in its own rounds.
    pub fn set_cadence(&mut self, config: &crate::config::Config) {
        let settings = &self.settings;
        self.cadence = config
            .uplinks
            .iter()
            .map(|u| (u.interface.clone(), u.probe_interval(settings)))
            .filter(|(_, every)| *every != settings.interval)
            .collect();
    }

    /// Which uplink families have probe targets (from the config).
    pub fn set_probed(&mut self, probed: impl IntoIterator<Item = (String, Family)>) {
        self.probed = probed.into_iter().collect();
    }

    /// Puts back what an earlier run judged (its counters start afresh).
    pub fn remember(&mut self, interface: &str, family: Family, health: FamilyHealth) {
        let entry = FamilyHealth { good_rounds: 0, failed_rounds: 0, ..health };
        self.entries.insert((interface.to_owned(), family), entry);
    }

    /// A first judgement from one probe round (the daemon's start-up, as
    /// `apply` does), for a family the book has no entry for yet.
    pub fn first_round(&mut self, interface: &str, family: Family, answered: bool, now: u64) {
        let fault = (!answered).then_some(Fault::ProbesFailing);
        self.entries.entry((interface.to_owned(), family)).or_insert_with(|| FamilyHealth::new(fault, now));
    }

    pub fn get(&self, interface: &str, family: Family) -> Option<&FamilyHealth> {
        self.entries.get(&(interface.to_owned(), family))
    }

    pub fn entries(&self) -> impl Iterator<Item = (&(String, Family), &FamilyHealth)> {
        self.entries.iter()
    }

    /// Forgets an uplink (both families): its interface was re-created, so
    /// it is judged as first seen.
    pub fn forget(&mut self, interface: &str) {
        self.entries.retain(|(name, _), _| name != interface);
    }

    /// Forgets uplink families that are no longer routed.
    pub fn retain(&mut self, keep: impl Fn(&str, Family) -> bool) {
        self.entries.retain(|(interface, family), _| keep(interface, *family));
    }

    /// What the link says now (any time, e.g. after a netlink event). An
    /// immediate fault turns the uplink unhealthy at once; a cleared one
    /// still waits for `up_after` good rounds. A family seen for the first
    /// time starts healthy unless its link is at fault.
    pub fn observe_link(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        now: u64,
    ) -> Option<Transition> {
        let key = (interface.to_owned(), family);
        let Some(entry) = self.entries.get_mut(&key) else {
            let unproven = self.settings.assume == Assume::Unhealthy && self.probed.contains(&key);
            let fault = link_fault.or(unproven.then_some(Fault::Unproven));
            self.entries.insert(key, FamilyHealth::new(fault, now));
            return None;
        };
        let fault = link_fault?;
        entry.good_rounds = 0;
        entry.fault = Some(fault);
        if !entry.healthy {
            return None;
        }
        let previous = entry.state();
        entry.healthy = false;
        entry.since = now;
        Some(Transition {
            interface: interface.to_owned(),
            family,
            healthy: false,
            fault: Some(fault),
            state: entry.state(),
            previous,
        })
    }

    /// One health round: the link's view and what traffic said.
    pub fn observe_round(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        sample: RoundSample,
        now: u64,
    ) -> Option<Transition> {
        let transition = self.observe_link(interface, family, link_fault, now);
        let entry = self.entries.get_mut(&(interface.to_owned(), family))?;
        if !sample.skipped {
            entry.record_probe(sample.probe);
        }
        let judged = sample.gateway_unreachable || sample.passive.is_some() || sample.busy;
        if link_fault.is_some() || (sample.skipped && !judged) {
            return transition;
        }
        let previous = entry.state();
        let to = |entry: &FamilyHealth| Transition {
            interface: interface.to_owned(),
            family,
            healthy: entry.healthy,
            fault: entry.fault,
            state: entry.state(),
            previous,
        };
        match sample.fault() {
            None => {
                entry.failed_rounds = 0;
                entry.good_rounds = entry.good_rounds.saturating_add(1);
                if entry.healthy {
                    entry.fault = None;
                } else if entry.good_rounds >= self.settings.up_after {
                    entry.healthy = true;
                    entry.fault = None;
                    entry.since = now;
                    return Some(to(entry));
                }
            }
            Some(fault) => {
                entry.good_rounds = 0;
                entry.failed_rounds = entry.failed_rounds.saturating_add(1);
                entry.fault = Some(fault);
                if entry.healthy && entry.failed_rounds >= self.settings.down_after {
                    entry.healthy = false;
                    entry.since = now;
                    return Some(to(entry));
                }
            }
        }
        None
    }

    /// `[health] passive` found `interface` sending into silence or
    /// retransmitting over the threshold (`fault`): every family it
    /// carries fails at once (no rounds to wait for), and counts good
    /// rounds again only once the passive fault is gone.
    pub fn observe_passive(&mut self, interface: &str, fault: Fault, now: u64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for ((name, family), entry) in self.entries.iter_mut().filter(|((name, _), _)| name == interface) {
            entry.good_rounds = 0;
            entry.fault = Some(fault);
            if !entry.healthy {
                continue;
            }
            let previous = entry.state();
            entry.healthy = false;
            entry.since = now;
            transitions.push(Transition {
                interface: name.clone(),
                family: *family,
                healthy: false,
                fault: entry.fault,
                state: entry.state(),
                previous,
            });
        }
        transitions
    }

    /// Each target's answer in the round, into its figures over `[health]
    /// window`, and the uplink's quality judged by them: a change between
    /// healthy and degraded is a transition.
    pub fn record_targets(
        &mut self,
        interface: &str,
        family: Family,
        answers: &[probe::TargetAnswer],
        now: u64,
    ) -> Option<Transition> {
        let every = self.cadence.get(interface).copied().unwrap_or(self.settings.interval);
        let rounds = self.settings.window_rounds_every(every);
        let min_rounds = (self.settings.down_after as usize).min(rounds);
        let entry = self.entries.get_mut(&(interface.to_owned(), family))?;
        targets::record_round(&mut entry.targets, answers, rounds);
        let previous = entry.state();
        entry.degraded =
            quality::assess(&self.settings, &entry.targets, min_rounds, entry.degraded.as_deref());
        if entry.state() == previous {
            return None;
        }
        entry.since = now;
        Some(Transition {
            interface: interface.to_owned(),
            family,
            healthy: entry.healthy,
            fault: entry.fault,
            state: entry.state(),
            previous,
        })
    }

    pub fn is_healthy(&self, interface: &str, family: Family) -> bool {
        self.get(interface, family).is_some_and(|entry| entry.healthy)
    }
}

/// A one-shot judgement (`apply`, `plan`, `check` without the daemon): the
/// link's view and one round, no hysteresis.
pub fn one_shot(link_fault: Option<Fault>, sample: RoundSample) -> Option<Fault> {
    link_fault.or_else(|| sample.fault())
}

#[cfg(test)]
mod tests;
