//! The daemon's passive health: samples the uplinks' packet counters,
//! exports how long each has been sending into silence, and under
//! `[health] passive` fails one at once when it passes `rx_silence`.

use std::time::Duration;

use super::Daemon;
use crate::health::passive::LinkCounters;

/// How often the counters are sampled: a quarter of `rx_silence`, within
/// 50 ms and 1 s, so a silence is seen at most a quarter late.
pub fn sample_every(rx_silence: Duration) -> Duration {
    (rx_silence / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

impl Daemon {
    /// One sample. True when an uplink failed (reconcile now).
    pub(super) async fn passive_round(&mut self) -> bool {
        let Some(last) = &self.last else { return false };
        let indexes: Vec<u32> = last.desired.uplinks.iter().map(|u| u.index).collect();
        let counters = match self.engine.kernel().link_counters(&indexes).await {
            Ok(counters) => counters,
            Err(err) => {
                tracing::warn!(error = %err, "reading the uplinks' packet counters failed");
                return false;
            }
        };
        let by_name: std::collections::BTreeMap<String, LinkCounters> = last
            .desired
            .uplinks
            .iter()
            .filter_map(|u| counters.get(&u.index).map(|c| (u.interface.clone(), *c)))
            .collect();
        let now = tokio::time::Instant::now();
        let silenced = self.passive.observe(&by_name, now);
        for interface in self.passive.interfaces() {
            let key = crate::metrics::labels([("uplink", interface)]);
            self.control.rx_silence.get_or_create(&key).set(self.passive.silence_seconds(interface, now));
        }
        if !self.engine.config().health.passive || silenced.is_empty() {
            return false;
        }
        let unix_now = crate::clock::unix_seconds();
        let mut transitions = Vec::new();
        for interface in &silenced {
            tracing::warn!(uplink = %interface, "sending with nothing received for rx_silence: failing it");
            transitions.extend(self.book.observe_silence(interface, unix_now));
        }
        if transitions.is_empty() {
            return false;
        }
        let last = self.last.take();
        if let Some(last) = &last {
            self.after_health_change(&transitions, last);
        }
        self.last = last;
        self.write_snapshot();
        true
    }
}
