//! Link quality: an uplink that answers, but slowly or with loss, is
//! degraded. Its probe targets' average round trip and loss over
//! `[health] window` are held against `latency_high`/`loss_high` to turn
//! degraded, and against `latency_low`/`loss_low` to turn healthy again
//! (hysteresis, as pfSense's dpinger and mwan3 do). A degraded uplink
//! carries main's default only when no healthy uplink is left.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::targets::TargetStats;
use crate::config::HealthConfig;

/// The uplink family's state, as `status`, metrics and hooks name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkState {
    Healthy,
    /// Answers, but over a quality threshold.
    Degraded,
    /// Unhealthy: a link fault, failed probe rounds, or unproven.
    Down,
    /// Taken out of use (`mhr drain`), whatever its health.
    Drained,
}

impl UplinkState {
    pub const ALL: [Self; 4] = [Self::Healthy, Self::Degraded, Self::Down, Self::Drained];

    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Down => "down",
            Self::Drained => "drained",
        }
    }
}

impl fmt::Display for UplinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The window's figures over all targets: the average of their average
/// round trips (targets that answered), and of their loss.
fn figures(targets: &[TargetStats]) -> (Option<f64>, f64) {
    let rtts: Vec<f64> = targets.iter().filter_map(|t| t.rtt_seconds).collect();
    let rtt = (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
    let loss = targets.iter().map(|t| t.loss).sum::<f64>() / targets.len().max(1) as f64;
    (rtt, loss)
}

/// Why the uplink is degraded after this round (None: its quality is
/// fine), given why it was (`now`). Before every target has `min_rounds`
/// rounds in its window, nothing changes: one lost probe is not 100 % loss.
pub fn assess(
    settings: &HealthConfig,
    targets: &[TargetStats],
    min_rounds: usize,
    now: Option<&str>,
) -> Option<String> {
    if targets.is_empty() || targets.iter().any(|t| t.rounds() < min_rounds) {
        return now.map(str::to_owned);
    }
    let (rtt, loss) = figures(targets);
    let loss_percent = loss * 100.0;
    let degraded = now.is_some();
    let (latency_mark, loss_mark, words) = if degraded {
        (settings.latency_low, settings.loss_low, "not yet under")
    } else {
        (settings.latency_high, settings.loss_high, "over")
    };
    let (latency_key, loss_key) =
        if degraded { ("latency_low", "loss_low") } else { ("latency_high", "loss_high") };
    if let (Some(mark), Some(rtt)) = (latency_mark, rtt)
        && rtt > mark.as_secs_f64()
    {
        return Some(format!(
            "latency {:.0} ms {words} {latency_key} {:.0} ms",
            rtt * 1000.0,
            mark.as_secs_f64() * 1000.0
        ));
    }
    if let Some(mark) = loss_mark
        && loss_percent > f64::from(mark)
    {
        return Some(format!("loss {loss_percent:.0}% {words} {loss_key} {mark}%"));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn target(rtts: &[Option<f64>]) -> TargetStats {
        let mut stats = TargetStats::new("192.0.2.1".into());
        for rtt in rtts {
            stats.record(*rtt, 100);
        }
        stats
    }

    fn settings() -> HealthConfig {
        HealthConfig {
            latency_high: Some(Duration::from_millis(500)),
            latency_low: Some(Duration::from_millis(200)),
            loss_high: Some(20),
            loss_low: Some(10),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn over_a_high_mark_degrades_and_only_under_the_low_marks_recovers() {
        let settings = settings();
        let slow = [target(&[Some(0.9), Some(0.9), Some(0.9)])];
        let reason = assess(&settings, &slow, 3, None);
        assert_eq!(reason.as_deref(), Some("latency 900 ms over latency_high 500 ms"));
        // 300 ms: under the high mark, not under the low one: still degraded.
        let better = [target(&[Some(0.3), Some(0.3), Some(0.3)])];
        assert_eq!(assess(&settings, &better, 3, None), None, "healthy stays healthy at 300 ms");
        let still = assess(&settings, &better, 3, reason.as_deref());
        assert_eq!(still.as_deref(), Some("latency 300 ms not yet under latency_low 200 ms"));
        let good = [target(&[Some(0.1), Some(0.1), Some(0.1)])];
        assert_eq!(assess(&settings, &good, 3, still.as_deref()), None);
    }

    #[test]
    fn loss_counts_over_all_targets_and_needs_a_full_minimum_of_rounds() {
        let settings = settings();
        // One target lost one round in three (33 %), the other none: 17 %.
        let mixed = [target(&[Some(0.01), None, Some(0.01)]), target(&[Some(0.01), Some(0.01), Some(0.01)])];
        assert_eq!(assess(&settings, &mixed, 3, None), None, "17% is not over 20%");
        let lossy = [target(&[None, None, Some(0.01)]), target(&[Some(0.01), Some(0.01), Some(0.01)])];
        assert_eq!(assess(&settings, &lossy, 3, None).as_deref(), Some("loss 33% over loss_high 20%"));
        assert_eq!(
            assess(&settings, &lossy, 3, Some("x")).as_deref(),
            Some("loss 33% not yet under loss_low 10%")
        );
        let early = [target(&[None])];
        assert_eq!(assess(&settings, &early, 3, None), None, "one lost probe is not 100% loss yet");
        assert_eq!(assess(&settings, &early, 3, Some("kept")).as_deref(), Some("kept"));
        assert_eq!(assess(&HealthConfig::default(), &lossy, 3, None), None, "thresholds are off by default");
    }
}
