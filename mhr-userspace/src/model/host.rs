//! What mhr observes of the host (links, addresses and everything routed),
//! and the default routes it moved aside: the planner's input.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Family, Gateway, Names, Nexthop, Route, Rule};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Has carrier (IFF_LOWER_UP).
    pub carrier: bool,
    pub point_to_point: bool,
    /// What the device's packets start with (how the guard parses them).
    pub framing: Framing,
}

/// What a device's packets start with at TC egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// An Ethernet header (Ethernet, veth, bonds, VLANs, bridges, macvlan).
    Ethernet,
    /// The IP header itself: tun, WireGuard, PPP, raw-IP modems (wwan), IP
    /// tunnels (ipip, sit, ip6tnl, GRE).
    Ip,
    /// Anything else (InfiniBand, CAN, …): routed, not guarded.
    Other,
}

/// A global-scope address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub interface: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Address {
    pub fn network(&self) -> IpNet {
        IpNet::new(self.address, self.prefix_len).map_or_else(|_| IpNet::from(self.address), |n| n.trunc())
    }

    pub fn family(&self) -> Family {
        Family::of(&self.address)
    }
}

/// Everything mhr needs to know about the host's routing state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub rules: Vec<Rule>,
    /// Neighbours (ARP/ND) whose resolution failed: (ifindex, address).
    pub failed_neighbours: BTreeSet<(u32, IpAddr)>,
    /// Deprecated addresses, and IPv6 temporary (privacy) ones: (ifindex,
    /// address). Never what probes leave from.
    pub unpreferred: BTreeSet<(u32, IpAddr)>,
    /// Nexthop objects; None where the kernel has none (before 5.3) or
    /// refused to list them.
    pub nexthops: Option<Vec<Nexthop>>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|link| link.name == name)
    }

    pub fn names(&self) -> Names {
        Names(self.links.iter().map(|link| (link.index, link.name.clone())).collect())
    }

    pub fn addresses_of(&self, interface: u32) -> impl Iterator<Item = &Address> {
        self.addresses.iter().filter(move |a| a.interface == interface)
    }

    /// Whether the kernel failed to resolve `gateway` on `interface`.
    pub fn neighbour_failed(&self, interface: u32, gateway: Gateway) -> bool {
        match gateway {
            Gateway::Via(address) => self.failed_neighbours.contains(&(interface, address)),
            Gateway::OnLink => false,
        }
    }
}

/// A default route mhr took out of main.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MovedRoute {
    /// By name: the interface may come back with another index.
    pub interface: String,
    pub route: Route,
}
