//! Per-target probe metrics: a round-trip histogram of every answered
//! probe, and the loss over `[health] window`, by uplink and target.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::metrics::{family::Family as MetricFamily, gauge::Gauge, histogram::Histogram};

use super::{Labels, labels};

/// From half a millisecond (a LAN next hop) to 5 s (a probe's longest
/// sensible timeout).
const RTT_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

type RttFamily = MetricFamily<Labels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct ProbeMetrics {
    pub rtt: RttFamily,
    pub loss: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        Self { rtt: RttFamily::new_with_constructor(rtt_histogram), loss: MetricFamily::default() }
    }
}

impl ProbeMetrics {
    /// One answered probe.
    pub fn answered(&self, uplink: &str, target: &str, rtt: Duration) {
        self.rtt.get_or_create(&labels([("uplink", uplink), ("target", target)])).observe(rtt.as_secs_f64());
    }

    pub fn loss(&self, uplink: &str, target: &str, ratio: f64) {
        self.loss.get_or_create(&labels([("uplink", uplink), ("target", target)])).set(ratio);
    }

    /// A target (or its uplink) left the config.
    pub fn forget(&self, uplink: &str, target: &str) {
        let key = labels([("uplink", uplink), ("target", target)]);
        self.rtt.remove(&key);
        self.loss.remove(&key);
    }
}
