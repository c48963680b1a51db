//! Drains the guard's ring buffer and writes each flagged packet as a
//! structured log line.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::guard::{GuardMaps, flags::FlaggedPacket};

/// Runs until the ring buffer's file descriptor fails.
pub async fn log_flags(ring: RingBuf<MapData>, names_from: GuardMaps) {
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
    loop {
        let mut ready = match ring.readable_mut().await {
            Ok(ready) => ready,
            Err(err) => {
                tracing::error!(%err, "polling the flag ring buffer failed");
                return;
            }
        };
        let names = names_from.slot_names().unwrap_or_default();
        while let Some(item) = ready.get_inner_mut().next() {
            let Some(packet) = FlaggedPacket::decode(&item, &names) else { continue };
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
