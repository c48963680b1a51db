//! Drains the guard's ring buffer and writes each flagged packet as a
//! structured log line.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::guard::{GuardMaps, flags::FlaggedPacket};

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
    fn admit(&mut self, metric: &prometheus_client::metrics::counter::Counter) -> bool {
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
                "flagged packets not logged (log cap per second); mhr_guard_packets_total counts them all"
            );
            self.suppressed = 0;
        }
    }
}

/// Runs until the ring buffer's file descriptor fails.
pub async fn log_flags(
    ring: RingBuf<MapData>,
    names_from: GuardMaps,
    per_second: u32,
    not_logged: prometheus_client::metrics::counter::Counter,
) {
    let mut cap = LogCap::new(per_second);
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the AsyncFd owns the ring buffer.
    let registered = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(ring) => ring,
        Err(err) => {
            tracing::error!(%err, "cannot poll the flag ring buffer; flagged packets are not logged");
            return;
        }
    };
    // The summary of a window comes when it ends, also when the flood has.
    let mut windows = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let readable = tokio::select! {
            readable = ring.readable_mut() => readable,
            _ = windows.tick() => {
                cap.roll();
                continue;
            }
        };
        let mut ready = match readable {
            Ok(ready) => ready,
            Err(err) => {
                tracing::error!(%err, "polling the flag ring buffer failed");
                return;
            }
        };
        let names = names_from.slot_names().unwrap_or_default();
        while let Some(item) = ready.get_inner_mut().next() {
            let Some(packet) = FlaggedPacket::decode(&item, &names) else { continue };
            if !cap.admit(&not_logged) {
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
                proto = %crate::guard::flags::protocol_name(packet.protocol),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_its_budget_a_second_and_counts_the_rest() {
        let metric = prometheus_client::metrics::counter::Counter::default();
        let mut cap = LogCap::new(3);
        let admitted = (0..10).filter(|_| cap.admit(&metric)).count();
        assert_eq!((admitted, metric.get(), cap.suppressed), (3, 7, 7));
        cap.window -= std::time::Duration::from_secs(1);
        cap.roll();
        assert_eq!(cap.suppressed, 0, "summarised when the window ended");
        assert!(cap.admit(&metric), "a fresh budget");
    }
}
