//! Passive TCP quality per uplink, from the guard's tracepoint maps: the
//! round-trip histogram, the retransmissions and the segments sent
//! (their ratio is what `[health] retransmit_percent` judges).

use mhr_common::guard::tcp::{RTT_BUCKETS, rtt_bucket_bound_seconds};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
};

use super::Labels;
use crate::guard::tcp::TcpCounts;

/// One uplink's round trips as a Prometheus histogram.
struct RttHistogram<'a>(&'a TcpCounts);

impl EncodeMetric for RttHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> =
            (0..RTT_BUCKETS).map(|i| (rtt_bucket_bound_seconds(i), self.0.rtt_buckets[i])).collect();
        let sum = self.0.rtt_sum_us as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, self.0.rtt_samples(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Both families, for the uplinks whose TCP figures could be read.
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    rows: &[(Labels, TcpCounts)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "mhr_uplink_tcp_rtt_seconds",
        "Smoothed TCP round trip at each segment received by connections on the uplink's addresses",
        None,
        MetricType::Histogram,
    )?;
    for (labels, counts) in rows {
        RttHistogram(counts).encode(family.encode_family(labels)?)?;
    }
    counter(
        encoder,
        rows,
        "mhr_uplink_tcp_retransmits",
        "TCP segments retransmitted by connections on the uplink's addresses",
        |counts| counts.retransmits,
    )?;
    counter(
        encoder,
        rows,
        "mhr_uplink_tcp_segments_sent",
        "TCP segments the uplink sent from its own addresses, retransmissions included",
        |counts| counts.segments_sent,
    )?;
    Ok(())
}

/// One counter family: a series per uplink.
fn counter(
    encoder: &mut DescriptorEncoder,
    rows: &[(Labels, TcpCounts)],
    name: &str,
    help: &str,
    value: impl Fn(&TcpCounts) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, counts) in rows {
        ConstCounter::new(value(counts)).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}
