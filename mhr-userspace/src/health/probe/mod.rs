//! Active health probes, sent from the uplink's own address and bound to
//! the uplink (SO_BINDTODEVICE), so the path tested is the uplink's own
//! table even while it does not hold main's default, and the guard sees a
//! packet with the uplink's own source (never an offender). Each target is
//! probed by its method: ICMP echo ([`icmp`]), TCP connect ([`tcp`]), a
//! DNS query ([`dns`]) or an HTTP GET ([`http`]); a round is good when at
//! least the uplink's quorum of targets answered.

mod dns;
mod http;
mod icmp;
mod prober;
mod socket;
mod tcp;

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;

pub use prober::Prober;

use crate::{
    config::{Config, ProbeTarget},
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
    pub targets: Vec<ProbeTarget>,
    /// Targets that must answer for a good round (1..=targets).
    pub quorum: usize,
    /// How often the daemon sends them: the uplink's `probe_interval`.
    pub interval: Duration,
}

/// One target's answer in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetAnswer {
    pub target: ProbeTarget,
    /// The round trip, when it answered.
    pub rtt: Option<Duration>,
}

/// The outcome of one uplink family's probes in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub interface: String,
    pub family: Family,
    pub outcome: ProbeOutcome,
    /// Every target's answer, in the plan's order.
    pub targets: Vec<TargetAnswer>,
}

impl ProbeResult {
    /// Judges a round by the plan's quorum: good when at least `quorum`
    /// targets answered; the round trip is the fastest answer.
    pub fn judged(plan: &ProbePlan, targets: Vec<TargetAnswer>) -> Self {
        let answers = targets.iter().filter_map(|t| t.rtt);
        let answered = answers.clone().count();
        let outcome = ProbeOutcome { answered: answered >= plan.quorum.max(1), rtt: answers.min() };
        Self { interface: plan.interface.clone(), family: plan.family, outcome, targets }
    }
}

/// The probes of every uplink family that has targets, a link that is up
/// and an address to send from.
pub fn probe_plans(config: &Config, observed: &Observed) -> Vec<ProbePlan> {
    let mut plans = Vec::new();
    for uplink in &config.uplinks {
        let Some(link) = observed.link(&uplink.interface).filter(|l| l.up) else { continue };
        for family in [Family::V4, Family::V6] {
            let targets: Vec<ProbeTarget> = uplink.probes(family).cloned().collect();
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
                    quorum: uplink.quorum(&config.health, family),
                    interval: uplink.probe_interval(&config.health),
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
