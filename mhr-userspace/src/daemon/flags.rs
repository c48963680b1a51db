//! Drains the guard's ring buffer into the log: the first flagged packet
//! of each offender (uplink, source, verdict) as a line of its own, then
//! at most one summary line per offender per interval, all under a global
//! cap of lines a second. A flood of random sources leaves the log and
//! this table bounded and adds no metric series.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use tokio::io::unix::AsyncFd;

use crate::guard::flags::{FlagSource, FlaggedPacket};

/// Offenders remembered between summaries; beyond it, new sources are only
/// logged as first lines (under the cap), never tracked.
pub const OFFENDER_CAPACITY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OffenderId {
    uplink: String,
    source: Option<IpAddr>,
    verdict: &'static str,
}

/// Flag records of one offender since its last line.
#[derive(Clone, Debug, Default)]
struct Tally {
    folded: u64,
    dropped: u64,
    last_destination: Option<IpAddr>,
    last_seen: Option<Instant>,
}

/// What to do with a flag record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    /// A new offender: its line.
    First,
    /// Known: folded into its next summary.
    Folded,
}

/// The offenders seen in the current interval.
struct Offenders {
    interval: Duration,
    capacity: usize,
    seen: HashMap<OffenderId, Tally>,
}

impl Offenders {
    fn new(interval: Duration, capacity: usize) -> Self {
        Self { interval, capacity, seen: HashMap::new() }
    }

    fn record(&mut self, packet: &FlaggedPacket, now: Instant) -> Disposition {
        let id = OffenderId { uplink: packet.uplink.clone(), source: packet.source, verdict: packet.verdict };
        if let Some(tally) = self.seen.get_mut(&id) {
            tally.folded += 1;
            tally.dropped += u64::from(packet.dropped);
            tally.last_destination = packet.destination;
            tally.last_seen = Some(now);
            return Disposition::Folded;
        }
        if self.seen.len() < self.capacity {
            self.seen.insert(id, Tally { last_seen: Some(now), ..Tally::default() });
        }
        Disposition::First
    }

    /// The interval's summaries (offenders with folded records), and the
    /// table emptied of offenders quiet for a whole interval.
    fn summaries(&mut self, now: Instant) -> Vec<(OffenderId, Tally)> {
        let interval = self.interval;
        let mut due = Vec::new();
        for (id, tally) in &mut self.seen {
            if tally.folded > 0 {
                due.push((id.clone(), tally.clone()));
                (tally.folded, tally.dropped) = (0, 0);
            }
        }
        self.seen.retain(|_, tally| tally.last_seen.is_some_and(|seen| now.duration_since(seen) < interval));
        due
    }
}

/// At most `per_second` flag lines a second reach the log, whatever the
/// number of CPUs and uplinks flagging; the rest are counted and
/// summarised in one line a second.
struct LogCap {
    per_second: u32,
    window: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl LogCap {
    fn new(per_second: u32) -> Self {
        Self { per_second, window: std::time::Instant::now(), logged: 0, suppressed: 0 }
    }

    /// Ends the window if a second has passed: its summary, a fresh budget.
    fn roll(&mut self) {
        if self.window.elapsed() >= std::time::Duration::from_secs(1) {
            self.summarise();
            self.window = std::time::Instant::now();
            self.logged = 0;
        }
    }

    /// Whether this line may be logged.
    fn admit(&mut self, metric: &Counter) -> bool {
        self.roll();
        if self.logged < self.per_second {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            metric.inc();
            false
        }
    }

    fn summarise(&mut self) {
        if self.suppressed > 0 {
            tracing::warn!(
                target: "mhr::flag",
                suppressed = self.suppressed,
                cap = self.per_second,
                "flag log lines not written (log cap per second); mhr_guard_packets_total counts every packet"
            );
            self.suppressed = 0;
        }
    }
}

/// How flagged packets reach the log, and the counters of what did not.
pub struct FlagLog {
    /// Lines a second, over all CPUs and uplinks.
    pub per_second: u32,
    /// At most one summary line per offender per interval.
    pub summary_interval: Duration,
    /// Lines not written because of the cap.
    pub lines_suppressed: Counter,
    /// Records of known offenders folded into summary lines.
    pub records_folded: Counter,
}

/// Runs until the ring buffer's file descriptor fails.
pub async fn log_flags(source: FlagSource, log: FlagLog) {
    let FlagSource { ring, names: names_from } = source;
    let mut cap = LogCap::new(log.per_second);
    let mut offenders = Offenders::new(log.summary_interval, OFFENDER_CAPACITY);
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the AsyncFd owns the ring buffer.
    let registered = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(ring) => ring,
        Err(err) => {
            tracing::error!(error = %crate::Chain(&err), "cannot poll the flag ring buffer; flagged packets are not logged");
            return;
        }
    };
    // The summary of a window comes when it ends, also when the flood has.
    let mut windows = tokio::time::interval(Duration::from_secs(1));
    let mut summaries = tokio::time::interval(log.summary_interval);
    summaries.tick().await;
    loop {
        let readable = tokio::select! {
            readable = ring.readable_mut() => readable,
            _ = windows.tick() => {
                cap.roll();
                continue;
            }
            _ = summaries.tick() => {
                for (id, tally) in offenders.summaries(Instant::now()) {
                    if cap.admit(&log.lines_suppressed) {
                        log_summary(&id, &tally, log.summary_interval);
                    }
                }
                continue;
            }
        };
        let mut ready = match readable {
            Ok(ready) => ready,
            Err(err) => {
                tracing::error!(error = %crate::Chain(&err), "polling the flag ring buffer failed");
                return;
            }
        };
        let names = names_from.slot_names().unwrap_or_default();
        while let Some(item) = ready.get_inner_mut().next() {
            let Some(packet) = FlaggedPacket::decode(&item, &names) else { continue };
            if offenders.record(&packet, Instant::now()) == Disposition::Folded {
                log.records_folded.inc();
                continue;
            }
            if !cap.admit(&log.lines_suppressed) {
                continue;
            }
            // The field names of FlaggedPacket's schema (watch uses the same).
            tracing::warn!(
                target: "mhr::flag",
                uplink = %packet.uplink,
                ifindex = packet.ifindex,
                verdict = packet.verdict,
                src = %packet.source.map(|a| a.to_string()).unwrap_or_default(),
                dst = %packet.destination.map(|a| a.to_string()).unwrap_or_default(),
                proto = %crate::guard::flags::ip_protocol_name(packet.protocol),
                sport = packet.source_port,
                dport = packet.destination_port,
                len = packet.length,
                vlan = packet.vlan,
                dropped = packet.dropped,
                "flagged packet"
            );
        }
        ready.clear_ready();
    }
}

fn log_summary(id: &OffenderId, tally: &Tally, interval: Duration) {
    tracing::warn!(
        target: "mhr::flag",
        uplink = %id.uplink,
        verdict = id.verdict,
        src = %id.source.map(|a| a.to_string()).unwrap_or_default(),
        dst = %tally.last_destination.map(|a| a.to_string()).unwrap_or_default(),
        packets = tally.folded,
        dropped = tally.dropped,
        interval_s = interval.as_secs_f64(),
        "offender still flagged"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(source: &str) -> FlaggedPacket {
        FlaggedPacket {
            uplink: "ens3".into(),
            ifindex: 2,
            verdict: "spoofed",
            source: source.parse().ok(),
            destination: "203.0.113.5".parse().ok(),
            protocol: 17,
            source_port: 1,
            destination_port: 2,
            length: 64,
            vlan: 0,
            dropped: true,
        }
    }

    #[test]
    fn an_offender_gets_one_line_then_one_summary_per_interval_and_is_forgotten_when_quiet() {
        let start = Instant::now();
        let mut offenders = Offenders::new(Duration::from_secs(10), 8);
        assert_eq!(offenders.record(&packet("192.0.2.1"), start), Disposition::First);
        for _ in 0..5 {
            assert_eq!(offenders.record(&packet("192.0.2.1"), start), Disposition::Folded);
        }
        assert_eq!(offenders.record(&packet("192.0.2.2"), start), Disposition::First);
        let due = offenders.summaries(start + Duration::from_secs(10) - Duration::from_millis(1));
        assert_eq!(due.len(), 1, "only the offender with folded records: {due:?}");
        assert_eq!((due[0].1.folded, due[0].1.dropped), (5, 5));
        assert_eq!(offenders.seen.len(), 2, "both seen within the interval");
        // Quiet for a whole interval (to the nanosecond): forgotten, its
        // next packet is a first line.
        assert!(offenders.summaries(start + Duration::from_secs(10)).is_empty());
        assert!(offenders.seen.is_empty());
        assert_eq!(offenders.record(&packet("192.0.2.1"), start), Disposition::First);
    }

    #[test]
    fn the_table_is_bounded_and_sources_beyond_it_are_first_lines() {
        let now = Instant::now();
        let mut offenders = Offenders::new(Duration::from_secs(10), 3);
        for i in 0..100 {
            assert_eq!(offenders.record(&packet(&format!("192.0.2.{i}")), now), Disposition::First);
        }
        assert_eq!(offenders.seen.len(), 3);
    }

    #[test]
    fn the_cap_admits_its_budget_a_second_and_counts_the_rest() {
        let metric = Counter::default();
        let mut cap = LogCap::new(3);
        let admitted = (0..10).filter(|_| cap.admit(&metric)).count();
        assert_eq!((admitted, metric.get(), cap.suppressed), (3, 7, 7));
        cap.window -= std::time::Duration::from_secs(1);
        cap.roll();
        assert_eq!(cap.suppressed, 0, "summarised when the window ended");
        assert!(cap.admit(&metric), "a fresh budget");
    }
}
