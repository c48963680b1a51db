//! The daemon's passive health: samples the uplinks' packet counters and
//! the guard's TCP counters, exports how long each uplink has been sending
//! into silence, and under `[health] passive` fails one at once when it
//! passes `rx_silence` or `retransmit_percent`. With `probe_when_idle` it
//! tells the probe task which uplinks carry traffic.

use std::{collections::BTreeMap, time::Duration};

use super::Daemon;
use crate::{
    config::HealthConfig,
    health::{
        Fault,
        passive::{LinkCounters, PassiveWatch, RetransmitRule, TcpTotals},
    },
};

/// How often the counters are sampled: a quarter of `rx_silence`, within
/// 50 ms and 1 s, so a silence is seen at most a quarter late.
pub fn sample_every(rx_silence: Duration) -> Duration {
    (rx_silence / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// The watch `[health]` asks for.
pub fn watch(settings: &HealthConfig) -> PassiveWatch {
    let retransmit = (settings.retransmit_percent > 0).then(|| RetransmitRule {
        ratio: f64::from(settings.retransmit_percent) / 100.0,
        window: settings.retransmit_window,
    });
    PassiveWatch::new(settings.rx_silence, retransmit)
}

/// An uplink carries traffic (`probe_when_idle`) when it received at
/// least [`busy_packets`] over the last this many samples.
pub const BUSY_SAMPLES: usize = 2;

/// Received packets that show an uplink carries traffic: more than the
/// replies to its own probes could be (up to 8 packets per target, an
/// HTTP probe's exchange), and more than a neighbour exchange.
pub fn busy_packets(config: &crate::config::Config, interface: &str) -> u64 {
    let targets = config.uplinks.iter().find(|u| u.interface == interface).map_or(0, |u| {
        u.probes(crate::model::Family::V4).count() + u.probes(crate::model::Family::V6).count()
    });
    8 * targets as u64 + 8
}

impl Daemon {
    /// One sample. True when an uplink failed (reconcile now).
    pub(super) async fn passive_round(&mut self) -> bool {
        let Some(last) = &self.last else {
            self.busy.send_replace(Default::default());
            return false;
        };
        let indexes: Vec<u32> = last.desired.uplinks.iter().map(|u| u.index).collect();
        let counters = match self.engine.kernel().link_counters(&indexes).await {
            Ok(counters) => counters,
            Err(err) => {
                tracing::warn!(error = %crate::Chain(&err), "reading the uplinks' packet counters failed");
                // Nothing shows any uplink carries traffic: probe them all.
                self.busy.send_replace(Default::default());
                return false;
            }
        };
        let by_name: BTreeMap<String, LinkCounters> = last
            .desired
            .uplinks
            .iter()
            .filter_map(|u| counters.get(&u.index).map(|c| (u.interface.clone(), *c)))
            .collect();
        let tcp = self.tcp_totals(&by_name);
        let now = tokio::time::Instant::now();
        let silenced = self.passive.observe(&by_name, now);
        // A failed read judges nothing (and forgets no window).
        let retransmitting = tcp.map(|tcp| self.passive.observe_tcp(&tcp, now)).unwrap_or_default();
        for interface in self.passive.interfaces() {
            let key = crate::metrics::labels([("uplink", interface)]);
            self.control.rx_silence.get_or_create(&key).set(self.passive.silence_seconds(interface, now));
        }
        let settings = &self.engine.config().health;
        if settings.probe_when_idle {
            // Only a healthy uplink is spared: one that is unhealthy or
            // degraded needs its probes to come back.
            let well = |interface: &str| {
                self.book
                    .entries()
                    .filter(|((name, _), _)| name == interface)
                    .all(|(_, health)| health.state() == crate::health::quality::UplinkState::Healthy)
            };
            let busy = last
                .desired
                .uplinks
                .iter()
                .filter(|u| {
                    let packets = busy_packets(self.engine.config(), &u.interface);
                    well(&u.interface) && self.passive.busy(&u.interface, BUSY_SAMPLES, packets)
                })
                .map(|u| u.interface.clone())
                .collect();
            self.busy.send_replace(busy);
        }
        if !settings.passive {
            return false;
        }
        let unix_now = crate::clock::unix_seconds();
        let mut transitions = Vec::new();
        for interface in &silenced {
            tracing::warn!(uplink = %interface, "sending with nothing received for rx_silence: failing it");
            transitions.extend(self.book.observe_passive(interface, Fault::RxSilent, unix_now));
        }
        for interface in retransmitting.iter().filter(|name| !self.passive.silent(name)) {
            let ratio = self.passive.retransmit_ratio(interface).unwrap_or_default();
            tracing::warn!(uplink = %interface, ratio, "TCP retransmitting over retransmit_percent: failing it");
            transitions.extend(self.book.observe_passive(interface, Fault::Retransmitting, unix_now));
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

    /// The guard's TCP counters for the uplinks sampled (none without the
    /// guard's tracepoints); `None` when they could not be read.
    fn tcp_totals(&self, uplinks: &BTreeMap<String, LinkCounters>) -> Option<BTreeMap<String, TcpTotals>> {
        let Some(guard) = self.guard.as_ref().filter(|guard| guard.watches_tcp()) else {
            return Some(BTreeMap::new());
        };
        match guard.tcp_counts() {
            Ok(counts) => Some(
                counts
                    .into_iter()
                    .filter(|(name, _)| uplinks.contains_key(name))
                    .map(|(name, c)| (name, TcpTotals { sent: c.segments_sent, retransmits: c.retransmits }))
                    .collect(),
            ),
            Err(err) => {
                tracing::warn!(error = %crate::Chain(&err), "reading the guard's TCP counters failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::time::Instant;

    use super::*;
    use crate::config::Config;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("mhr.toml")).expect("a valid config")
    }

    #[test]
    fn busy_means_more_than_eight_packets_a_probe_target_and_eight_more() {
        let config = config(
            "[[uplink]]\ninterface = \"ens3\"\nprimary = true\nprobe = [\"192.0.2.1\", \"tcp:192.0.2.2:443\"]\n\
             [[uplink]]\ninterface = \"ens4\"\n",
        );
        assert_eq!(busy_packets(&config, "ens3"), 24, "two targets");
        assert_eq!(busy_packets(&config, "ens4"), 8, "no targets: a neighbour exchange");
        assert_eq!(busy_packets(&config, "ens9"), 8, "not configured");
    }

    #[test]
    fn retransmit_percent_zero_judges_nothing_and_ten_fails_over_ten() {
        let totals =
            |sent, retransmits| BTreeMap::from([("ens3".to_owned(), TcpTotals { sent, retransmits })]);
        let start = Instant::now();
        let window = |watch: &mut PassiveWatch| {
            watch.observe_tcp(&totals(0, 0), start);
            watch.observe_tcp(&totals(1000, 500), start + Duration::from_secs(10))
        };
        let off = config(
            "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[health]\npassive = true\nretransmit_percent = 0\n",
        );
        assert!(window(&mut watch(&off.health)).is_empty(), "0: off, even at 50 %");
        let on = config("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[health]\npassive = true\n");
        assert_eq!(window(&mut watch(&on.health)), ["ens3"], "the default 10 % over a 10 s window");
    }
}
