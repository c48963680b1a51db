//! One probe round: every plan's targets at once, each by its method, each
//! waiting at most the timeout.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use surge_ping::Client;

use super::{ProbePlan, ProbeResult, TargetAnswer, dns, http, icmp, tcp};
use crate::config::ProbeTarget;

/// Sends the probes; keeps one ICMP socket per uplink and source address
/// (TCP, DNS and HTTP probes open a socket per probe).
pub struct Prober {
    /// By interface name and index (a socket bound to a device keeps the
    /// index it was bound to: a re-created interface needs a new one) and
    /// source.
    clients: BTreeMap<(String, u32, IpAddr), Client>,
    identifier: u16,
    sequence: u16,
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        // Raw sockets see every echo reply on the host: a per-process
        // identifier keeps another mhr's (or ping's) replies apart.
        Self { clients: BTreeMap::new(), identifier: std::process::id() as u16, sequence: 0 }
    }

    /// Keeps the sockets of `plans` only (the daemon's current plans, due
    /// this round or not): those of uplinks no longer probed are closed.
    pub fn retain(&mut self, plans: &[ProbePlan]) {
        self.clients.retain(|(interface, index, source), _| {
            plans.iter().any(|p| p.interface == *interface && p.index == *index && p.source == *source)
        });
    }

    /// One round: every plan's targets at once, each waiting at most
    /// `timeout`; each plan judged by its quorum. Sockets stay open for
    /// the next rounds until [`Prober::retain`] closes them (an uplink not
    /// due this round keeps its own).
    pub async fn round(&mut self, plans: &[ProbePlan], timeout: Duration) -> Vec<ProbeResult> {
        self.sequence = self.sequence.wrapping_add(1);
        for plan in plans.iter().filter(|p| p.targets.iter().any(|t| matches!(t, ProbeTarget::Icmp(_)))) {
            let key = (plan.interface.clone(), plan.index, plan.source);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.clients.entry(key) {
                match icmp::client(plan) {
                    Ok(client) => {
                        slot.insert(client);
                    }
                    Err(err) => {
                        tracing::debug!(interface = %plan.interface, source = %plan.source, error = %crate::Chain(&err), "probe socket")
                    }
                }
            }
        }
        // Clients are only borrowed: dropping any clone of a surge-ping
        // Client marks it destroyed for every clone.
        let clients = &self.clients;
        let (identifier, sequence) = (self.identifier, self.sequence);
        let rounds = plans.iter().map(|plan| async move {
            let client = clients.get(&(plan.interface.clone(), plan.index, plan.source));
            let probes = plan.targets.iter().map(|target| async move {
                let answer = match target {
                    ProbeTarget::Icmp(address) => match client {
                        Some(client) => icmp::echo(client, *address, identifier, sequence, timeout).await,
                        None => Err(std::io::Error::other("no ICMP socket")),
                    },
                    ProbeTarget::Tcp(address) => tcp::connect(plan, *address, timeout).await,
                    ProbeTarget::Dns(address) => dns::query(plan, *address, timeout).await,
                    ProbeTarget::Http { address, path } => http::get(plan, *address, path, timeout).await,
                };
                let rtt = answer
                    .inspect_err(
                        |err| tracing::trace!(interface = %plan.interface, %target, error = %crate::Chain(&err), "probe unanswered"),
                    )
                    .ok();
                TargetAnswer { target: target.clone(), rtt }
            });
            ProbeResult::judged(plan, futures::future::join_all(probes).await)
        });
        futures::future::join_all(rounds).await
    }
}
