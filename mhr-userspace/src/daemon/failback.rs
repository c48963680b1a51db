//! `failback = "reset"`: when main's default returns to the primary, the
//! outgoing TCP connections a failover put on a backup uplink are closed
//! (the kernel resets them), so applications reconnect through the
//! primary instead of staying on a metered backup for hours. Which ones:
//! connections on a backup's addresses that were not there when the
//! failover happened (so the failover put them there) and whose local
//! port nothing listens on (so they went out, not came in), and that the
//! kernel would now send by the primary (a steering rule may keep some on
//! the backup on purpose). A daemon
//! restarted mid-failover has no such snapshot and closes nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::Daemon;
use crate::{
    config::{Failback, Policy},
    engine::Planned,
    model::{Connection, Family, Flow},
    southbound::Lookup,
};

/// The connections there were when main's default left the primary.
pub(super) type Snapshots = BTreeMap<Family, BTreeSet<Connection>>;

impl Daemon {
    /// After a reconcile that moved main's default (`before` → now).
    pub(super) async fn failback(&mut self, before: &BTreeMap<Family, Vec<String>>, planned: &Planned) {
        let config = self.engine.config();
        if config.failback != Failback::Reset || config.policy != Policy::Failover {
            self.failover_snapshots.clear();
            return;
        }
        let Some(primary) = config.uplinks.iter().find(|u| u.primary).map(|u| u.interface.clone()) else {
            return;
        };
        let kernel = self.engine.kernel().clone();
        for family in [Family::V4, Family::V6] {
            let on_primary = |active: Option<&Vec<String>>| active.is_some_and(|a| a.contains(&primary));
            let (was, is) =
                (on_primary(before.get(&family)), on_primary(planned.desired.active.get(&family)));
            if was && !is {
                match kernel.connections() {
                    Ok(now) => {
                        let snapshot = now.into_iter().filter(|c| c.family() == family).collect();
                        self.failover_snapshots.insert(family, snapshot);
                    }
                    Err(err) => {
                        tracing::warn!(error = %crate::Chain(&err), "listing connections at failover failed: fail-back will close none")
                    }
                }
            } else if !was && is {
                let Some(snapshot) = self.failover_snapshots.remove(&family) else { continue };
                let backups: BTreeSet<std::net::IpAddr> = planned
                    .desired
                    .uplinks
                    .iter()
                    .filter(|u| u.interface != primary)
                    .flat_map(|u| u.addresses.iter().map(|a| a.addr()))
                    .collect();
                let (connections, listening) = match (kernel.connections(), kernel.listening_ports()) {
                    (Ok(connections), Ok(listening)) => (connections, listening),
                    (Err(err), _) | (_, Err(err)) => {
                        tracing::warn!(error = %crate::Chain(&err), "listing connections at fail-back failed: none closed");
                        continue;
                    }
                };
                let moved: Vec<Connection> = connections
                    .into_iter()
                    .filter(|c| c.family() == family && backups.contains(&c.local.ip()))
                    .filter(|c| !snapshot.contains(c) && !listening.contains(&c.local.port()))
                    .collect();
                let primary_index =
                    planned.desired.uplinks.iter().find(|u| u.interface == primary).map(|u| u.index);
                let mut closed = 0;
                for connection in &moved {
                    // Only what the kernel would now send by the primary: a
                    // steering rule may keep a connection on the backup on
                    // purpose (it would only reconnect there).
                    let flow = Flow {
                        ipproto: Some(libc::IPPROTO_TCP as u8),
                        sport: Some(connection.local.port()),
                        dport: Some(connection.remote.port()),
                        ..Flow::default()
                    };
                    let lookup =
                        Lookup { destination: connection.remote.ip(), source: None, iif: None, flow };
                    let now_by = kernel.lookup(lookup).await.ok().and_then(|route| route.interface);
                    if now_by.is_none() || now_by != primary_index {
                        continue;
                    }
                    match kernel.destroy_connection(connection) {
                        Ok(()) => closed += 1,
                        Err(err) => {
                            tracing::debug!(connection = %connection.describe(), error = %crate::Chain(&err), "not closed")
                        }
                    }
                }
                self.control.failback_resets.inc_by(closed);
                if !moved.is_empty() {
                    tracing::info!(
                        family = %family,
                        closed,
                        found = moved.len(),
                        "fail-back: closed the connections the failover put on a backup (failback = \"reset\")"
                    );
                }
            }
        }
    }
}
