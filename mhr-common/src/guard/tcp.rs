//! Passive TCP quality: the kernel's own TCP tracepoints, attributed to
//! the uplink whose address a connection uses (the guard's owner maps).

use core::mem::size_of;

/// Tracepoint programs in the guard object.
pub const TCP_PROBE_PROGRAM: &str = "mhr_tcp_probe";
pub const TCP_RETRANSMIT_PROGRAM: &str = "mhr_tcp_retransmit";

/// Map names.
pub const TCP_LAYOUT_MAP: &str = "MHR_TCP_LAYOUT";
pub const TCP_RTT_MAP: &str = "MHR_TCP_RTT";
pub const TCP_RETRANSMITS_MAP: &str = "MHR_TCP_RETRANS";
pub const TCP_SENT_MAP: &str = "MHR_TCP_SENT";

/// Round-trip buckets: upper bounds of 250 µs × 2^i, the last one
/// unbounded (250 µs … 4.096 s, then +Inf).
pub const RTT_BUCKETS: usize = 16;
pub const RTT_FIRST_BOUND_US: u32 = 250;

/// The bucket of a round trip of `us` microseconds (upper bounds
/// inclusive, as Prometheus' `le`).
#[inline(always)]
pub fn rtt_bucket(us: u32) -> usize {
    let quotient = us.saturating_sub(1) / RTT_FIRST_BOUND_US;
    let bits = (u32::BITS - quotient.leading_zeros()) as usize;
    if bits < RTT_BUCKETS - 1 { bits } else { RTT_BUCKETS - 1 }
}

/// The upper bound of bucket `i`, in seconds (`f64::INFINITY` for the last).
#[cfg(feature = "user")]
pub fn rtt_bucket_bound_seconds(i: usize) -> f64 {
    if i + 1 >= RTT_BUCKETS {
        f64::INFINITY
    } else {
        f64::from(RTT_FIRST_BOUND_US) * f64::from(1u32 << i) / 1e6
    }
}

/// One uplink's round-trip samples on one CPU: the kernel's smoothed round
/// trip (`srtt`) at every segment its connections receive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpRtt {
    /// Samples per bucket (not cumulative).
    pub buckets: [u64; RTT_BUCKETS],
    pub sum_us: u64,
}

const _: () = assert!(size_of::<TcpRtt>() == 8 * (RTT_BUCKETS + 1));

/// Where the tracepoints' fields are, read from their `format` files at
/// attach time (offsets change between kernels); zero until then.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTraceLayout {
    /// `tcp_probe`: `family`, `saddr` (a sockaddr_in or sockaddr_in6) and
    /// `srtt` (µs).
    pub probe_family: u16,
    pub probe_saddr: u16,
    pub probe_srtt: u16,
    /// `tcp_retransmit_skb`: `family`, `saddr` (4 bytes), `saddr_v6`.
    pub retransmit_family: u16,
    pub retransmit_saddr: u16,
    pub retransmit_saddr_v6: u16,
    /// 1 while the tracepoints are attached: the guard then also counts
    /// the TCP segments the host's connections send from each uplink's
    /// addresses (the retransmission ratio's denominator); 0 costs the
    /// guard one array read per packet it passes.
    pub count_sent: u16,
    pub _pad: u16,
}

const _: () = assert!(size_of::<TcpTraceLayout>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: repr(C) plain old data with explicit padding (sizes asserted
    // above).
    unsafe impl aya::Pod for TcpRtt {}
    unsafe impl aya::Pod for TcpTraceLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fall_in_the_bucket_whose_bound_holds_them() {
        assert_eq!(rtt_bucket(0), 0);
        assert_eq!(rtt_bucket(250), 0);
        assert_eq!(rtt_bucket(251), 1);
        assert_eq!(rtt_bucket(500), 1);
        assert_eq!(rtt_bucket(501), 2);
        assert_eq!(rtt_bucket(1000), 2);
        assert_eq!(rtt_bucket(4_096_000), RTT_BUCKETS - 2);
        assert_eq!(rtt_bucket(4_096_001), RTT_BUCKETS - 1);
        assert_eq!(rtt_bucket(u32::MAX), RTT_BUCKETS - 1);
        for us in [1u32, 249, 250, 251, 999, 1000, 1001, 123_456, 4_096_000] {
            let bucket = rtt_bucket(us);
            let bound = f64::from(RTT_FIRST_BOUND_US) * f64::from(1u32 << bucket);
            assert!(f64::from(us) <= bound, "{us} in {bucket}");
            if bucket > 0 {
                assert!(f64::from(us) > bound / 2.0, "{us} in {bucket}");
            }
        }
    }
}
