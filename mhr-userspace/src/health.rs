//! Uplink health, per uplink and address family. Faults of the link itself
//! (admin down, no carrier, no address, no gateway) count at once; what
//! only traffic tells (the gateway's neighbour entry, probes) counts in
//! rounds, with hysteresis: `down_after` failed rounds turn a healthy
//! uplink unhealthy, `up_after` good rounds bring it back. Pure: the daemon
//! and the one-shot commands feed it what they saw.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{Assume, HealthConfig},
    model::Family,
};

/// Why an uplink is (or is becoming) unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    AdminDown,
    NoCarrier,
    NoAddress,
    NoGateway,
    /// The gateway's neighbour entry (ARP/ND) failed.
    GatewayUnreachable,
    ProbesFailing,
    /// First seen, with probes, under `assume = "unhealthy"`: not yet
    /// `up_after` good rounds.
    Unproven,
}

impl Fault {
    /// Faults of the link itself: they need no confirmation.
    pub fn is_immediate(self) -> bool {
        matches!(self, Self::AdminDown | Self::NoCarrier | Self::NoAddress | Self::NoGateway)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AdminDown => "admin_down",
            Self::NoCarrier => "no_carrier",
            Self::NoAddress => "no_address",
            Self::NoGateway => "no_gateway",
            Self::GatewayUnreachable => "gateway_unreachable",
            Self::ProbesFailing => "probes_failing",
            Self::Unproven => "unproven",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AdminDown => "link administratively down",
            Self::NoCarrier => "no carrier",
            Self::NoAddress => "no address",
            Self::NoGateway => "no gateway known",
            Self::GatewayUnreachable => "gateway unreachable (neighbour entry failed)",
            Self::ProbesFailing => "probes failing",
            Self::Unproven => "not proven yet (waiting for up_after good probe rounds)",
        })
    }
}

/// One health round's view of an uplink family, besides the link itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundSample {
    pub gateway_unreachable: bool,
    /// `None` without probe targets; else whether any target answered,
    /// and the fastest answer.
    pub probe: Option<ProbeOutcome>,
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
    /// Unix seconds of the last change of `healthy`.
    pub since: u64,
    /// Consecutive good rounds (counting towards `up_after`).
    pub good_rounds: u32,
    /// Consecutive failed rounds (counting towards `down_after`).
    pub failed_rounds: u32,
    /// Fraction of the last probe rounds without an answer (None: no probes).
    pub probe_loss: Option<f64>,
    pub probe_rtt_seconds: Option<f64>,
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
            probe_window: VecDeque::new(),
        }
    }

    fn record_probe(&mut self, probe: Option<ProbeOutcome>) {
        let Some(probe) = probe else {
            self.probe_window.clear();
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
}

/// The daemon's memory of every uplink family's health.
#[derive(Clone, Debug)]
pub struct HealthBook {
    settings: HealthConfig,
    entries: BTreeMap<(String, Family), FamilyHealth>,
    /// Uplink families with probe targets: under `assume = "unhealthy"`
    /// they start unproven.
    probed: std::collections::BTreeSet<(String, Family)>,
}

impl HealthBook {
    pub fn new(settings: HealthConfig) -> Self {
        Self { settings, entries: BTreeMap::new(), probed: Default::default() }
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
        entry.healthy = false;
        entry.since = now;
        Some(Transition { interface: interface.to_owned(), family, healthy: false, fault: Some(fault) })
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
        entry.record_probe(sample.probe);
        if link_fault.is_some() {
            return transition;
        }
        let to = |healthy, fault| Transition { interface: interface.to_owned(), family, healthy, fault };
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
                    return Some(to(true, None));
                }
            }
            Some(fault) => {
                entry.good_rounds = 0;
                entry.failed_rounds = entry.failed_rounds.saturating_add(1);
                entry.fault = Some(fault);
                if entry.healthy && entry.failed_rounds >= self.settings.down_after {
                    entry.healthy = false;
                    entry.since = now;
                    return Some(to(false, Some(fault)));
                }
            }
        }
        None
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
mod tests {
    use super::*;

    fn book() -> HealthBook {
        HealthBook::new(HealthConfig { down_after: 3, up_after: 5, ..HealthConfig::default() })
    }

    fn probe(answered: bool) -> RoundSample {
        RoundSample {
            gateway_unreachable: false,
            probe: Some(ProbeOutcome { answered, rtt: answered.then_some(Duration::from_millis(2)) }),
        }
    }

    #[test]
    fn a_new_uplink_starts_healthy_unless_its_link_is_at_fault() {
        let mut book = book();
        assert_eq!(book.observe_link("a", Family::V4, None, 1), None);
        assert!(book.is_healthy("a", Family::V4));
        assert_eq!(book.observe_link("b", Family::V4, Some(Fault::NoCarrier), 1), None);
        assert!(!book.is_healthy("b", Family::V4));
        assert_eq!(book.get("b", Family::V4).unwrap().fault, Some(Fault::NoCarrier));
        assert!(!book.is_healthy("a", Family::V6), "families are separate");
    }

    #[test]
    fn a_new_uplink_with_probes_is_unproven_until_up_after_good_rounds_unless_assumed_healthy() {
        let mut book = book();
        book.set_probed([("a".to_owned(), Family::V4)]);
        assert_eq!(book.observe_link("a", Family::V4, None, 1), None);
        assert_eq!(
            book.get("a", Family::V4).map(|e| (e.healthy, e.fault)),
            Some((false, Some(Fault::Unproven)))
        );
        assert!(book.observe_link("a", Family::V6, None, 1).is_none());
        assert!(book.is_healthy("a", Family::V6), "a family without probes starts healthy");
        for round in 1..5 {
            assert_eq!(
                book.observe_round("a", Family::V4, None, probe(true), 1 + round),
                None,
                "round {round}"
            );
        }
        let proven =
            book.observe_round("a", Family::V4, None, probe(true), 6).expect("healthy after 5 rounds");
        assert_eq!((proven.healthy, proven.fault), (true, None));
        // Re-created: judged as first seen again.
        book.forget("a");
        assert_eq!((book.get("a", Family::V4), book.get("a", Family::V6)), (None, None));
        book.observe_link("a", Family::V4, None, 7);
        assert_eq!(book.get("a", Family::V4).and_then(|e| e.fault), Some(Fault::Unproven));

        let mut trusting =
            HealthBook::new(HealthConfig { assume: Assume::Healthy, ..HealthConfig::default() });
        trusting.set_probed([("a".to_owned(), Family::V4)]);
        trusting.observe_link("a", Family::V4, None, 1);
        assert!(trusting.is_healthy("a", Family::V4));
    }

    #[test]
    fn a_remembered_or_first_round_judgement_stands_until_rounds_change_it() {
        let mut book = book();
        book.set_probed([("a".to_owned(), Family::V4), ("b".to_owned(), Family::V4)]);
        let mut sick = FamilyHealth::new(Some(Fault::ProbesFailing), 1);
        sick.failed_rounds = 40;
        book.remember("a", Family::V4, sick);
        assert_eq!(book.observe_link("a", Family::V4, None, 2), None, "an event does not bring it back");
        assert!(!book.is_healthy("a", Family::V4));
        assert_eq!(book.get("a", Family::V4).map(|e| e.failed_rounds), Some(0), "counters start afresh");
        book.first_round("b", Family::V4, true, 2);
        assert!(book.is_healthy("b", Family::V4), "answered at start-up: healthy at once");
        book.first_round("b", Family::V4, false, 3);
        assert!(book.is_healthy("b", Family::V4), "only a family without an entry is judged so");
        book.first_round("c", Family::V4, false, 3);
        assert_eq!(book.get("c", Family::V4).and_then(|e| e.fault), Some(Fault::ProbesFailing));
    }

    #[test]
    fn link_faults_count_at_once_and_recovery_waits_for_up_after_rounds() {
        let mut book = book();
        book.observe_link("a", Family::V4, None, 1);
        let down = book.observe_link("a", Family::V4, Some(Fault::AdminDown), 2).unwrap();
        assert_eq!((down.healthy, down.fault), (false, Some(Fault::AdminDown)));
        assert_eq!(
            book.observe_link("a", Family::V4, None, 3),
            None,
            "an event alone does not bring it back"
        );
        for round in 1..5 {
            let t = book.observe_round("a", Family::V4, None, RoundSample::default(), 3 + round);
            assert_eq!(t, None, "round {round} of 5");
            assert!(!book.is_healthy("a", Family::V4));
        }
        let up = book.observe_round("a", Family::V4, None, RoundSample::default(), 9).unwrap();
        assert!(up.healthy && up.fault.is_none());
        assert_eq!(book.get("a", Family::V4).unwrap().since, 9);
    }

    #[test]
    fn probe_failures_need_down_after_consecutive_rounds() {
        let mut book = book();
        book.observe_link("a", Family::V4, None, 0);
        assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 1), None);
        assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 2), None);
        assert_eq!(book.observe_round("a", Family::V4, None, probe(true), 3), None, "a good round resets");
        assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 4), None);
        assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 5), None);
        assert!(book.is_healthy("a", Family::V4));
        assert_eq!(book.get("a", Family::V4).unwrap().fault, Some(Fault::ProbesFailing));
        let down = book.observe_round("a", Family::V4, None, probe(false), 6).unwrap();
        assert_eq!((down.healthy, down.fault), (false, Some(Fault::ProbesFailing)));
    }

    #[test]
    fn an_unreachable_gateway_counts_like_a_failed_round() {
        let mut book = book();
        book.observe_link("a", Family::V6, None, 0);
        let unreachable = RoundSample { gateway_unreachable: true, probe: None };
        for now in 1..3 {
            assert_eq!(book.observe_round("a", Family::V6, None, unreachable, now), None);
        }
        let down = book.observe_round("a", Family::V6, None, unreachable, 3).unwrap();
        assert_eq!(down.fault, Some(Fault::GatewayUnreachable));
    }

    #[test]
    fn loss_and_rtt_follow_the_probe_window() {
        let mut book = book();
        book.observe_link("a", Family::V4, None, 0);
        for (now, answered) in [true, false, true, true].into_iter().enumerate() {
            book.observe_round("a", Family::V4, None, probe(answered), now as u64);
        }
        let entry = book.get("a", Family::V4).unwrap();
        assert_eq!(entry.probe_loss, Some(0.25));
        assert_eq!(entry.probe_rtt_seconds, Some(0.002));
        for now in 0..LOSS_WINDOW {
            book.observe_round("a", Family::V4, None, probe(true), 10 + now as u64);
        }
        assert_eq!(book.get("a", Family::V4).unwrap().probe_loss, Some(0.0), "old losses leave the window");
    }

    #[test]
    fn occasional_loss_does_not_flap() {
        // 10% loss, never three in a row: healthy throughout.
        let mut book = book();
        book.observe_link("a", Family::V4, None, 0);
        for now in 1..=200u64 {
            let answered = now % 10 != 0;
            assert_eq!(book.observe_round("a", Family::V4, None, probe(answered), now), None, "round {now}");
        }
        assert!(book.is_healthy("a", Family::V4));
    }

    #[test]
    fn one_shot_takes_the_link_first_then_the_round() {
        assert_eq!(one_shot(Some(Fault::NoCarrier), probe(false)), Some(Fault::NoCarrier));
        assert_eq!(one_shot(None, probe(false)), Some(Fault::ProbesFailing));
        assert_eq!(one_shot(None, probe(true)), None);
        assert_eq!(one_shot(None, RoundSample::default()), None);
    }
}
