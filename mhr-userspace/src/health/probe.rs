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

use ipnet::IpNet;

use crate::{
    config::Config,
    health::ProbeOutcome,
    model::{Address, Family, Observed},
};

/// What to probe from one uplink in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    pub interface: String,
    /// The interface's index when planned: a re-created interface (same
    /// name, new index) needs new device-bound sockets.
    pub index: u32,
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

    /// One round: every plan's targets at once, each waiting at most
    /// `timeout`. An uplink family is answered when any target answers.
    pub async fn round(&mut self, plans: &[ProbePlan], timeout: Duration) -> Vec<ProbeResult> {
        self.sequence = self.sequence.wrapping_add(1);
        self.clients.retain(|(interface, index, source), _| {
            plans.iter().any(|p| p.interface == *interface && p.index == *index && p.source == *source)
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
            let client = clients.get(&(plan.interface.clone(), plan.index, plan.source));
            probe_plan(client, plan, self.identifier, self.sequence, timeout)
        });
        futures::future::join_all(pings).await
    }

    fn open(&mut self, plan: &ProbePlan) -> std::io::Result<()> {
        if let std::collections::btree_map::Entry::Vacant(slot) =
            self.clients.entry((plan.interface.clone(), plan.index, plan.source))
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

/// The probes of every uplink family that has targets, a link that is up
/// and an address to send from.
pub fn probe_plans(config: &Config, observed: &Observed) -> Vec<ProbePlan> {
    let mut plans = Vec::new();
    for uplink in &config.uplinks {
        let Some(link) = observed.link(&uplink.interface).filter(|l| l.up) else { continue };
        for family in [Family::V4, Family::V6] {
            let targets: Vec<_> = uplink.probes(family).collect();
            if targets.is_empty() {
                continue;
            }
            let configured = match family {
                Family::V4 => uplink.gateway.map(IpAddr::V4),
                Family::V6 => uplink.gateway6.map(IpAddr::V6),
            };
            let gateway =
                configured.or_else(|| {
                    observed.routes.iter().filter(|r| r.is_default() && r.family() == family).find_map(|r| {
                        r.next_hops().find(|h| h.interface == link.index).and_then(|h| h.gateway)
                    })
                });
            let all: Vec<&Address> =
                observed.addresses_of(link.index).filter(|a| a.family() == family).collect();
            // Deprecated and temporary addresses only when nothing else is left.
            let preferred: Vec<&Address> = all
                .iter()
                .copied()
                .filter(|a| !observed.unpreferred.contains(&(a.interface, a.address)))
                .collect();
            let addresses = if preferred.is_empty() { all } else { preferred };
            let chosen = match family {
                Family::V4 => uplink.probe_source.map(IpAddr::V4),
                Family::V6 => uplink.probe_source6.map(IpAddr::V6),
            };
            if let Some(source) = chosen.or_else(|| probe_source(&addresses, gateway)) {
                plans.push(ProbePlan {
                    interface: uplink.interface.clone(),
                    index: link.index,
                    family,
                    source,
                    targets,
                });
            }
        }
    }
    plans
}

/// The address probes leave from: the one whose prefix holds the gateway
/// (what the upstream routes back); else, in IPv6, a global one that is
/// not a ULA (fc00::/7); else the first. Adding a VIP, a ULA or a second
/// prefix never moves it off the gateway's prefix.
pub fn probe_source(addresses: &[&Address], gateway: Option<IpAddr>) -> Option<IpAddr> {
    let on_gateway_prefix =
        gateway.and_then(|gateway| addresses.iter().find(|a| a.network().contains(&gateway)));
    let routable = || {
        let ula: IpNet = "fc00::/7".parse().ok()?;
        addresses.iter().find(|a| a.address.is_ipv4() || !ula.contains(&a.address))
    };
    on_gateway_prefix.or_else(routable).or_else(|| addresses.first()).map(|a| a.address)
}

/// Whether a probe of `plan` has a way out of its uplink: a default route
/// through it in any table mhr reads.
pub fn has_path(observed: &Observed, plan: &ProbePlan) -> bool {
    let Some(link) = observed.link(&plan.interface) else { return false };
    observed.routes.iter().any(|r| {
        r.is_default() && r.family() == plan.family && r.next_hops().any(|h| h.interface == link.index)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Address {
        let net: IpNet = text.parse().unwrap();
        Address { interface: 2, address: net.addr(), prefix_len: net.prefix_len() }
    }

    #[test]
    fn probes_leave_from_the_address_on_the_gateways_prefix_whatever_else_is_added() {
        let global = address("2001:db8:3::10/64");
        let ula = address("fd00:1::10/64");
        let vip = address("2001:db8:99::1/128");
        let gateway = Some("2001:db8:3::1".parse().unwrap());
        for order in [vec![&global, &ula, &vip], vec![&ula, &vip, &global], vec![&vip, &ula, &global]] {
            assert_eq!(probe_source(&order, gateway), Some(global.address), "{order:?}");
        }
        // A link-local gateway (router advertisements): not a ULA.
        let link_local = Some("fe80::1".parse().unwrap());
        assert_eq!(probe_source(&[&ula, &global], link_local), Some(global.address));
        assert_eq!(probe_source(&[&ula], link_local), Some(ula.address), "a ULA when nothing else");
        let v4 = [address("10.0.3.10/24"), address("192.0.2.7/32")];
        let v4: Vec<&Address> = v4.iter().rev().collect();
        assert_eq!(probe_source(&v4, Some("10.0.3.1".parse().unwrap())), Some("10.0.3.10".parse().unwrap()));
        assert_eq!(probe_source(&[], gateway), None);
    }
}
