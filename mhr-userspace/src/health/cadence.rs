//! Per-uplink probe cadence: health rounds tick at `[health] interval`;
//! an uplink family whose `probe_interval` is longer is probed only in
//! the rounds where that much has passed since its last probes. Rounds it
//! skips leave its judge and its probe figures as they were.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tokio::time::Instant;

use super::probe::{ProbePlan, ProbeResult};
use crate::model::Family;

/// One health round's probes: the results of the uplink families that
/// were due, and the families that were not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeRound {
    pub results: Vec<ProbeResult>,
    pub skipped: BTreeSet<(String, Family)>,
    /// Of those skipped, the ones skipped because they carry traffic
    /// (`probe_when_idle`): that traffic vouches for them this round.
    pub busy: BTreeSet<(String, Family)>,
}

/// When each uplink family was last probed.
#[derive(Debug)]
pub struct Cadence {
    /// `[health] interval`, the rounds' tick.
    tick: Duration,
    /// (interface, family) → (its index then, when).
    last: BTreeMap<(String, Family), (u32, Instant)>,
}

impl Cadence {
    pub fn new(tick: Duration) -> Self {
        Self { tick, last: BTreeMap::new() }
    }

    /// The plans due at `now` (recorded as probed now), and the families
    /// skipped. A plan is due when it was never probed, its interface was
    /// re-created, or its `interval` has passed since its last probes, in
    /// whole rounds (ticks never come closer than `tick`; a tenth of one
    /// absorbs rounding).
    pub fn due(&mut self, plans: &[ProbePlan], now: Instant) -> (Vec<ProbePlan>, BTreeSet<(String, Family)>) {
        self.last.retain(|(interface, family), _| {
            plans.iter().any(|p| p.interface == *interface && p.family == *family)
        });
        let mut due = Vec::new();
        let mut skipped = BTreeSet::new();
        for plan in plans {
            let key = (plan.interface.clone(), plan.family);
            let waited = match self.last.get(&key) {
                Some((index, at)) if *index == plan.index => Some(now.saturating_duration_since(*at)),
                _ => None,
            };
            if waited.is_some_and(|waited| waited + self.tick / 10 < plan.interval) {
                skipped.insert(key);
            } else {
                self.last.insert(key, (plan.index, now));
                due.push(plan.clone());
            }
        }
        (due, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(interface: &str, index: u32, every: u64) -> ProbePlan {
        ProbePlan {
            interface: interface.to_owned(),
            index,
            family: Family::V4,
            source: "192.0.2.10".parse().unwrap(),
            targets: vec!["192.0.2.1".parse().unwrap()],
            quorum: 1,
            interval: Duration::from_secs(every),
        }
    }

    #[test]
    fn a_slower_uplink_is_probed_every_its_interval_in_whole_rounds() {
        let mut cadence = Cadence::new(Duration::from_secs(1));
        let start = Instant::now();
        let plans = [plan("ens3", 2, 1), plan("lte0", 3, 10)];
        let mut probed = BTreeMap::<String, Vec<u64>>::new();
        let mut late = Duration::ZERO;
        for second in 0..30 {
            // A late round delays the ones after it (tokio's `Delay`).
            late += Duration::from_millis(match second {
                4 => 470,
                13 => 30,
                _ => 0,
            });
            let now = start + Duration::from_secs(second) + late;
            let (due, skipped) = cadence.due(&plans, now);
            for plan in &due {
                probed.entry(plan.interface.clone()).or_default().push(second);
            }
            assert_eq!(due.len() + skipped.len(), 2);
        }
        assert_eq!(probed["ens3"].len(), 30);
        assert_eq!(probed["lte0"], [0, 10, 20]);
        // Not a whole number of rounds: the next whole one.
        let mut cadence = Cadence::new(Duration::from_secs(1));
        let plans = [plan("lte0", 3, 0)].map(|p| ProbePlan { interval: Duration::from_millis(2500), ..p });
        let due: Vec<u64> = (0..10)
            .filter(|second| !cadence.due(&plans, start + Duration::from_secs(*second)).0.is_empty())
            .collect();
        assert_eq!(due, [0, 3, 6, 9]);
    }

    #[test]
    fn a_recreated_or_new_uplink_is_probed_at_once() {
        let mut cadence = Cadence::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(cadence.due(&[plan("lte0", 3, 10)], start).0.len(), 1);
        let (due, skipped) = cadence.due(&[plan("lte0", 3, 10)], start + Duration::from_secs(1));
        assert!(due.is_empty() && skipped.len() == 1);
        assert_eq!(cadence.due(&[plan("lte0", 4, 10)], start + Duration::from_secs(2)).0.len(), 1);
        // Gone from the plans, then back: probed at once.
        cadence.due(&[], start + Duration::from_secs(3));
        assert_eq!(cadence.due(&[plan("lte0", 4, 10)], start + Duration::from_secs(4)).0.len(), 1);
    }
}
