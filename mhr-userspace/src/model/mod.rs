//! Plain data for routes and rules, the way mhr reasons about them: the
//! fields that make two of them the same object to the kernel, and how to
//! write them as `ip` commands.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod connection;
mod gateway;
mod host;
mod kernel_error;
pub mod nexthop;
pub mod selectors;

pub use connection::Connection;
pub use gateway::{Gateway, GatewaySource, LeaseKeeper, RememberedGateway, RememberedGateways};
pub use host::{Address, Framing, Link, MovedRoute, Observed};
pub use kernel_error::KernelError;
pub use nexthop::{GroupMember, Nexthop, NexthopKind};
pub use selectors::{Flow, Selectors};

pub const MAIN_TABLE: u32 = 254;
pub const SCOPE_UNIVERSE: u8 = 0;
pub const SCOPE_LINK: u8 = 253;
/// IPv6 routes without an explicit metric get this one from the kernel.
pub const IPV6_DEFAULT_METRIC: u32 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(address: &IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The `ip` flag selecting this family.
    pub fn ip_flag(self) -> &'static str {
        match self {
            Self::V4 => "-4",
            Self::V6 => "-6",
        }
    }

    pub fn default_route(self) -> IpNet {
        match self {
            Self::V4 => IpNet::V4(ipnet::Ipv4Net::default()),
            Self::V6 => IpNet::V6(ipnet::Ipv6Net::default()),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// A unicast route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub interface: Option<u32>,
    /// Preferred source address (`src`).
    pub source: Option<IpAddr>,
    pub protocol: u8,
    pub scope: u8,
    pub metric: Option<u32>,
    pub onlink: bool,
    /// Next hops of a multipath route (then `gateway` and `interface` are
    /// empty); empty for a single-path route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multipath: Vec<NextHop>,
    /// The nexthop object the route uses (`nhid`, a resilient group under
    /// balance). The kernel still reports the group's next hops in
    /// `multipath` (or `gateway` and `interface` for one): so does mhr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop_group: Option<u32>,
}

/// One next hop of a multipath route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub interface: u32,
    /// Relative share of flows, 1–256.
    pub weight: u32,
}

impl Route {
    /// Every next hop: the multipath ones, or the single one.
    pub fn next_hops(&self) -> impl Iterator<Item = NextHop> + '_ {
        let single = self.interface.filter(|_| self.multipath.is_empty()).map(|interface| NextHop {
            gateway: self.gateway,
            interface,
            weight: 1,
        });
        self.multipath.iter().copied().chain(single)
    }

    pub fn family(&self) -> Family {
        Family::of(&self.destination.addr())
    }

    pub fn is_default(&self) -> bool {
        self.destination.prefix_len() == 0
    }
}

/// A policy rule that looks up a table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    pub source: Option<IpNet>,
    pub destination: Option<IpNet>,
    pub protocol: u8,
    /// `suppress_prefixlength N`: the lookup's answer is refused when its
    /// prefix is N bits or shorter (0: main without its default routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_prefixlength: Option<u32>,
    /// Steering selectors (ipproto, ports, uid range, fwmark).
    #[serde(default, skip_serializing_if = "Selectors::is_empty")]
    pub selectors: Selectors,
    /// Selectors mhr does not model (iif, oif, tos, …) or an action other
    /// than "lookup": such a rule is never mhr's.
    pub other_selectors: bool,
}

/// Interface names by index, for writing objects the way people read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names(pub BTreeMap<u32, String>);

impl Names {
    pub fn interface(&self, index: u32) -> String {
        self.0.get(&index).cloned().unwrap_or_else(|| format!("if{index}"))
    }

    /// `ip route …` arguments after the verb.
    pub fn route_args(&self, route: &Route) -> String {
        self.route_args_with(route, true)
    }

    /// `hops`: a route on a nexthop object also names the next hops the
    /// group has now (as `ip route show` does; `ip route add` takes the id
    /// alone).
    fn route_args_with(&self, route: &Route, hops: bool) -> String {
        let mut out = if route.is_default() { "default".to_owned() } else { route.destination.to_string() };
        if let Some(id) = route.nexthop_group {
            out += &format!(" nhid {id}");
            if !hops {
                out += &format!(" proto {} table {}", route.protocol, table_name(route.table));
                if let Some(metric) = route.metric {
                    out += &format!(" metric {metric}");
                }
                return out;
            }
        }
        if let Some(gateway) = route.gateway {
            out += &format!(" via {gateway}");
        }
        if let Some(index) = route.interface {
            out += &format!(" dev {}", self.interface(index));
        }
        if route.onlink {
            out += " onlink";
        }
        if let Some(source) = route.source {
            out += &format!(" src {source}");
        }
        if route.scope == SCOPE_LINK {
            out += " scope link";
        }
        if let Some(metric) = route.metric {
            out += &format!(" metric {metric}");
        }
        out += &format!(" proto {} table {}", route.protocol, table_name(route.table));
        for hop in &route.multipath {
            out += " nexthop";
            if let Some(gateway) = hop.gateway {
                out += &format!(" via {gateway}");
            }
            out += &format!(" dev {} weight {}", self.interface(hop.interface), hop.weight);
        }
        out
    }

    /// The `ip` command that performs `verb` (add/del) on `route`.
    pub fn route_command(&self, verb: &str, route: &Route) -> String {
        format!("ip {} route {verb} {}", route.family().ip_flag(), self.route_args_with(route, false))
    }
}

/// `ip rule …` arguments after the verb.
pub fn rule_args(rule: &Rule) -> String {
    let mut out = String::new();
    match rule.source {
        Some(source) => out += &format!("from {}", host_or_prefix(source)),
        None => out += "from all",
    }
    if let Some(destination) = rule.destination {
        out += &format!(" to {}", host_or_prefix(destination));
    }
    out += &rule.selectors.args();
    out += &format!(" lookup {}", table_name(rule.table));
    if let Some(length) = rule.suppress_prefixlength {
        out += &format!(" suppress_prefixlength {length}");
    }
    out += &format!(" priority {} protocol {}", rule.priority, rule.protocol);
    out
}

pub fn rule_command(verb: &str, rule: &Rule) -> String {
    format!("ip {} rule {verb} {}", rule.family.ip_flag(), rule_args(rule))
}

fn host_or_prefix(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() { net.addr().to_string() } else { net.to_string() }
}

fn table_name(table: u32) -> String {
    match table {
        MAIN_TABLE => "main".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names(BTreeMap::from([(3, "ens4".to_owned())]))
    }

    #[test]
    fn routes_render_as_pasteable_ip_commands() {
        let connected = Route {
            table: 7101,
            destination: "10.0.4.0/24".parse().unwrap(),
            gateway: None,
            interface: Some(3),
            source: Some("10.0.4.10".parse().unwrap()),
            protocol: 210,
            scope: SCOPE_LINK,
            metric: None,
            onlink: false,
            multipath: Vec::new(),
            nexthop_group: None,
        };
        assert_eq!(
            names().route_command("add", &connected),
            "ip -4 route add 10.0.4.0/24 dev ens4 src 10.0.4.10 scope link proto 210 table 7101"
        );
        let default6 = Route {
            table: MAIN_TABLE,
            destination: Family::V6.default_route(),
            gateway: Some("fe80::1".parse().unwrap()),
            interface: Some(3),
            source: None,
            protocol: 16,
            scope: SCOPE_UNIVERSE,
            metric: Some(1024),
            onlink: false,
            multipath: Vec::new(),
            nexthop_group: None,
        };
        assert_eq!(
            names().route_command("del", &default6),
            "ip -6 route del default via fe80::1 dev ens4 metric 1024 proto 16 table main"
        );
    }

    #[test]
    fn multipath_routes_render_their_next_hops() {
        let names = Names(BTreeMap::from([(2, "ens3".to_owned()), (3, "ens4".to_owned())]));
        let route = Route {
            table: MAIN_TABLE,
            destination: Family::V4.default_route(),
            gateway: None,
            interface: None,
            source: None,
            protocol: 210,
            scope: SCOPE_UNIVERSE,
            metric: Some(50),
            onlink: false,
            multipath: vec![
                NextHop { gateway: Some("10.0.3.1".parse().unwrap()), interface: 2, weight: 1 },
                NextHop { gateway: Some("10.0.4.1".parse().unwrap()), interface: 3, weight: 3 },
            ],
            nexthop_group: None,
        };
        assert_eq!(
            names.route_command("add", &route),
            "ip -4 route add default metric 50 proto 210 table main nexthop via 10.0.3.1 dev ens3 weight 1 nexthop via 10.0.4.1 dev ens4 weight 3"
        );
        assert_eq!(route.next_hops().count(), 2);
        let grouped = Route { nexthop_group: Some(9), ..route };
        assert_eq!(
            names.route_command("replace", &grouped),
            "ip -4 route replace default nhid 9 proto 210 table main metric 50"
        );
        assert!(names.route_args(&grouped).ends_with("nexthop via 10.0.4.1 dev ens4 weight 3"));
    }

    #[test]
    fn rules_render_as_pasteable_ip_commands() {
        let rule = Rule {
            family: Family::V4,
            priority: 7103,
            table: 7101,
            source: Some("10.0.4.10/32".parse().unwrap()),
            destination: None,
            protocol: 210,
            suppress_prefixlength: None,
            selectors: Selectors::default(),
            other_selectors: false,
        };
        assert_eq!(
            rule_command("add", &rule),
            "ip -4 rule add from 10.0.4.10 lookup 7101 priority 7103 protocol 210"
        );
        let to = Rule {
            source: None,
            destination: Some("2001:db8::/64".parse().unwrap()),
            family: Family::V6,
            ..rule
        };
        assert_eq!(
            rule_command("del", &to),
            "ip -6 rule del from all to 2001:db8::/64 lookup 7101 priority 7103 protocol 210"
        );
    }
}
