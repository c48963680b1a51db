//! What each probe target did over `[health] window`: its loss, and the
//! average and standard deviation (jitter, as dpinger reports it) of its
//! round trips. For `status`, the snapshot and the loss metric; the uplink
//! is judged by its rounds (quorum), not by these.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::probe::TargetAnswer;

/// One target's figures over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    /// As written in the config (`tcp:192.0.2.1:443`).
    pub target: String,
    /// Whether it answered in the last round.
    pub answered: bool,
    /// Fraction of the window's rounds without an answer.
    pub loss: f64,
    /// Average round trip of the window's answers.
    pub rtt_seconds: Option<f64>,
    /// Standard deviation of those round trips (needs two answers).
    pub jitter_seconds: Option<f64>,
    /// The window's rounds: the round trip, or None when unanswered.
    #[serde(skip)]
    samples: VecDeque<Option<f64>>,
}

impl TargetStats {
    pub fn new(target: String) -> Self {
        Self { target, ..Self::default() }
    }

    /// Rounds in the window so far.
    pub fn rounds(&self) -> usize {
        self.samples.len()
    }

    /// One round's answer; `rounds` is how many rounds the window holds.
    pub fn record(&mut self, rtt: Option<f64>, rounds: usize) {
        while self.samples.len() >= rounds.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
        self.answered = rtt.is_some();
        let answers: Vec<f64> = self.samples.iter().flatten().copied().collect();
        self.loss = 1.0 - answers.len() as f64 / self.samples.len() as f64;
        let mean = (!answers.is_empty()).then(|| answers.iter().sum::<f64>() / answers.len() as f64);
        self.rtt_seconds = mean;
        self.jitter_seconds = mean.filter(|_| answers.len() >= 2).map(|mean| {
            let variance =
                answers.iter().map(|rtt| (rtt - mean).powi(2)).sum::<f64>() / (answers.len() - 1) as f64;
            variance.sqrt()
        });
    }
}

/// Records one round of answers into `stats`, in the plan's order: targets
/// no longer probed are dropped, new ones start with an empty window.
pub fn record_round(stats: &mut Vec<TargetStats>, answers: &[TargetAnswer], rounds: usize) {
    let mut next = Vec::with_capacity(answers.len());
    for answer in answers {
        let name = answer.target.to_string();
        let mut entry = match stats.iter().position(|s| s.target == name) {
            Some(found) => stats.swap_remove(found),
            None => TargetStats::new(name),
        };
        entry.record(answer.rtt.map(|rtt| rtt.as_secs_f64()), rounds);
        next.push(entry);
    }
    *stats = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_jitter_over_the_window_only() {
        let mut stats = TargetStats::new("192.0.2.1".into());
        for rtt in [Some(0.010), Some(0.030), None, None] {
            stats.record(rtt, 4);
        }
        assert_eq!(stats.loss, 0.5);
        assert!((stats.rtt_seconds.unwrap() - 0.020).abs() < 1e-9);
        assert!((stats.jitter_seconds.unwrap() - 0.014_142).abs() < 1e-5, "{:?}", stats.jitter_seconds);
        assert!(!stats.answered);
        // Two more rounds push the answers out of a 4-round window.
        stats.record(None, 4);
        stats.record(Some(0.050), 4);
        assert_eq!(stats.loss, 0.75);
        assert_eq!(stats.rtt_seconds, Some(0.050));
        assert_eq!(stats.jitter_seconds, None, "one answer has no spread");
        assert!(stats.answered);
    }

    #[test]
    fn targets_follow_the_plan() {
        let answer = |target: &str, rtt: Option<u64>| TargetAnswer {
            target: target.parse().unwrap(),
            rtt: rtt.map(std::time::Duration::from_millis),
        };
        let mut stats = Vec::new();
        record_round(&mut stats, &[answer("192.0.2.1", Some(10)), answer("tcp:192.0.2.2:443", None)], 10);
        record_round(&mut stats, &[answer("tcp:192.0.2.2:443", Some(20)), answer("192.0.2.3", Some(5))], 10);
        let names: Vec<&str> = stats.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(names, ["tcp:192.0.2.2:443", "192.0.2.3"]);
        assert_eq!(stats[0].loss, 0.5, "its window kept the earlier round");
        assert_eq!(stats[1].loss, 0.0);
    }
}
