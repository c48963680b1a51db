//! Active health probes: one ICMP echo per target and round, sent from the
//! uplink's own address and bound to the uplink (SO_BINDTODEVICE), so the
//! path tested is the uplink's own table even while it does not hold
//! main's default, and the guard sees a packet with the uplink's own
//! source (never an offender). The socket is an unprivileged ICMP socket
//! where `net.ipv4.ping_group_range` allows it (systemd's default), else a
//! raw one (CAP_NET_RAW).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use surge_ping::{Client, Config as PingConfig, ICMP, PingIdentifier, PingSequence};

use crate::{health::ProbeOutcome, model::Family};

/// What to probe from one uplink in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    pub interface: String,
    pub family: Family,
    /// The uplink's address the probes leave from.
    pub source: IpAddr,
    pub targets: Vec<IpAddr>,
}

/// The outcome of one uplink family's probes in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub interface: String,
    pub family: Family,
    pub outcome: ProbeOutcome,
}

const PAYLOAD: &[u8] = b"mhr health probe";

/// Sends the probes; keeps one socket per uplink and source address.
pub struct Prober {
    clients: BTreeMap<(String, IpAddr), Client>,
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

    /// One round: every plan's targets at once, each waiting at most
    /// `timeout`. An uplink family is answered when any target answers.
    pub async fn round(&mut self, plans: &[ProbePlan], timeout: Duration) -> Vec<ProbeResult> {
        self.sequence = self.sequence.wrapping_add(1);
        self.clients.retain(|(interface, source), _| {
            plans.iter().any(|p| p.interface == *interface && p.source == *source)
        });
        for plan in plans {
            if let Err(err) = self.open(plan) {
                tracing::debug!(interface = %plan.interface, source = %plan.source, %err, "probe socket");
            }
        }
        // Clients are only borrowed: dropping any clone of a surge-ping
        // Client marks it destroyed for every clone.
        let clients = &self.clients;
        let pings = plans.iter().map(|plan| {
            let client = clients.get(&(plan.interface.clone(), plan.source));
            probe_plan(client, plan, self.identifier, self.sequence, timeout)
        });
        futures::future::join_all(pings).await
    }

    fn open(&mut self, plan: &ProbePlan) -> std::io::Result<()> {
        if let std::collections::btree_map::Entry::Vacant(slot) =
            self.clients.entry((plan.interface.clone(), plan.source))
        {
            let kind = match plan.family {
                Family::V4 => ICMP::V4,
                Family::V6 => ICMP::V6,
            };
            let config = PingConfig::builder()
                .kind(kind)
                .interface(&plan.interface)
                .bind(SocketAddr::new(plan.source, 0))
                .build();
            slot.insert(Client::new(&config)?);
        }
        Ok(())
    }
}

async fn probe_plan(
    client: Option<&Client>,
    plan: &ProbePlan,
    identifier: u16,
    sequence: u16,
    timeout: Duration,
) -> ProbeResult {
    let mut outcome = ProbeOutcome { answered: false, rtt: None };
    if let Some(client) = client {
        let pings = plan.targets.iter().map(|target| async move {
            let mut pinger = client.pinger(*target, PingIdentifier(identifier)).await;
            pinger.timeout(timeout);
            pinger.ping(PingSequence(sequence), PAYLOAD).await.map(|(_, rtt)| rtt)
        });
        for answer in futures::future::join_all(pings).await {
            match answer {
                Ok(rtt) => {
                    outcome.answered = true;
                    outcome.rtt = Some(outcome.rtt.map_or(rtt, |best: Duration| best.min(rtt)));
                }
                Err(err) => tracing::trace!(interface = %plan.interface, %err, "probe unanswered"),
            }
        }
    }
    ProbeResult { interface: plan.interface.clone(), family: plan.family, outcome }
}
