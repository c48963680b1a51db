//! `mhr init`: the uplinks this host already has, as a config. An uplink is
//! an interface with a global address and a default route in main (or a
//! DHCP lease); the one with the lowest-metric default is the primary.

use std::fmt::Write as _;

use crate::{
    model::Observed,
    model::{Family, MAIN_TABLE},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub interface: String,
    pub addresses: Vec<String>,
    /// `via 10.0.3.1 (dhcp, metric 100)` per default route, best first.
    pub defaults: Vec<String>,
    /// Lowest default-route metric (IPv4 first), for the order.
    pub best_metric: Option<(Family, u32)>,
    pub lease: bool,
}

/// The uplinks of `observed`, best default route first. `has_lease` says
/// whether an interface (name, index) has a DHCP lease on disk.
pub fn discover(observed: &Observed, has_lease: impl Fn(&str, u32) -> bool) -> Vec<Found> {
    let mut found: Vec<Found> = observed
        .links
        .iter()
        .filter_map(|link| {
            let addresses: Vec<String> = observed
                .addresses
                .iter()
                .filter(|a| a.interface == link.index)
                .map(|a| format!("{}/{}", a.address, a.prefix_len))
                .collect();
            if addresses.is_empty() {
                return None;
            }
            let mut defaults: Vec<(Family, u32, String)> = observed
                .routes
                .iter()
                // mhr's own default (a running mhr, maybe failed over) says
                // nothing about which uplink the host prefers.
                .filter(|r| r.protocol != crate::config::DEFAULT_PROTOCOL)
                .filter(|r| r.table == MAIN_TABLE && r.is_default() && r.interface == Some(link.index))
                .map(|r| {
                    let metric = r.metric.unwrap_or(0);
                    let via = r.gateway.map_or_else(|| "on-link".to_owned(), |g| format!("via {g}"));
                    let protocol = crate::config::route_protocol_name(r.protocol);
                    (r.family(), metric, format!("{via} ({protocol}, metric {metric})"))
                })
                .collect();
            defaults.sort_by_key(|(family, metric, _)| (*family != Family::V4, *metric));
            let lease = has_lease(&link.name, link.index);
            if defaults.is_empty() && !lease {
                return None;
            }
            Some(Found {
                interface: link.name.clone(),
                addresses,
                best_metric: defaults.first().map(|(family, metric, _)| (*family, *metric)),
                defaults: defaults.into_iter().map(|(_, _, text)| text).collect(),
                lease,
            })
        })
        .collect();
    // IPv4 defaults before IPv6-only ones, then by metric; leases last.
    found.sort_by_key(|f| match f.best_metric {
        Some((family, metric)) => (0, family != Family::V4, metric),
        None => (1, false, 0),
    });
    found
}

/// The config for `found`, with a comment per line, and what to set in
/// the network managers beside mhr (`neighbours`).
pub fn render(found: &[Found], neighbours: &[crate::neighbours::Neighbour]) -> String {
    let mut text = String::from(
        "# Written by `mhr init` from the uplinks this host has: interfaces with a\n\
         # global address and a default route (or a DHCP lease). Every key is in\n\
         # docs/configuration.md.\n\n\
         # The source guard counts and flags; \"enforce\" would also drop spoofed packets.\n\
         mode = \"monitor\"\n\
         # Gateways are learned from the default routes (DHCP, RA); `gateway = \"…\"` pins one.\n",
    );
    if !neighbours.is_empty() {
        text += "#\n# Beside this host's network managers:\n";
        for neighbour in neighbours {
            let _ =
                writeln!(text, "# - {} ({}): {}", neighbour.manager, neighbour.evidence, neighbour.advice);
            if let Some(warning) = &neighbour.warning {
                let _ = writeln!(text, "#   NOW: {warning}");
            }
        }
    }
    for (position, uplink) in found.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[uplink]]\ninterface = \"{}\"   # {}",
            uplink.interface,
            uplink.addresses.join(", ")
        );
        match uplink.defaults.first() {
            Some(best) => {
                let _ = writeln!(text, "; default {best}");
            }
            None => text += "; a DHCP lease, no default route yet\n",
        }
        if position == 0 {
            text += "primary = true   # the lowest-metric default: main's default goes here while it is healthy\n";
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::Route,
        model::{Address, Framing, Link},
    };

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.to_owned(),
            up: true,
            carrier: true,
            point_to_point: false,
            framing: Framing::Ethernet,
        }
    }

    fn default_route(interface: u32, gateway: &str, metric: u32, protocol: u8) -> Route {
        let gateway: std::net::IpAddr = gateway.parse().unwrap();
        Route {
            table: MAIN_TABLE,
            destination: if gateway.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.parse().unwrap(),
            gateway: Some(gateway),
            interface: Some(interface),
            source: None,
            protocol,
            scope: 0,
            metric: Some(metric),
            onlink: false,
            multipath: Vec::new(),
            nexthop_group: None,
        }
    }

    fn host() -> Observed {
        let address = |interface, address: &str, prefix_len| Address {
            interface,
            address: address.parse().unwrap(),
            prefix_len,
        };
        Observed {
            links: vec![
                link(1, "lo"),
                link(2, "ens3"),
                link(3, "ens4"),
                link(4, "docker0"),
                link(5, "wwan0"),
            ],
            addresses: vec![
                address(2, "10.0.3.10", 24),
                address(3, "10.0.4.10", 24),
                address(3, "2001:db8:4::10", 64),
                address(4, "172.17.0.1", 16),
                address(5, "100.64.0.7", 10),
            ],
            routes: vec![
                // A failed-over mhr: its own default (proto 210) on ens3.
                default_route(2, "10.0.3.1", 50, 210),
                default_route(3, "10.0.4.1", 100, 16),
                default_route(2, "10.0.3.1", 200, 16),
                default_route(3, "fe80::1", 1024, 9),
            ],
            ..Observed::default()
        }
    }

    #[test]
    fn uplinks_are_interfaces_with_an_address_and_a_default_lowest_metric_first() {
        let found = discover(&host(), |name, _| name == "wwan0");
        let names: Vec<&str> = found.iter().map(|f| f.interface.as_str()).collect();
        assert_eq!(names, ["ens4", "ens3", "wwan0"], "docker0 has no default route, lo no global address");
        assert_eq!(found[0].defaults, ["via 10.0.4.1 (dhcp, metric 100)", "via fe80::1 (ra, metric 1024)"]);
        assert!(found[2].lease && found[2].defaults.is_empty());
    }

    #[test]
    fn the_rendered_config_is_valid_and_names_the_primary() {
        let found = discover(&host(), |name, _| name == "wwan0");
        let neighbours = [crate::neighbours::Neighbour {
            manager: crate::neighbours::Manager::Networkd,
            evidence: "running (pid 9)".into(),
            advice: "set this",
            warning: Some("it deletes".into()),
        }];
        let text = render(&found, &neighbours);
        assert!(
            text.contains("# - systemd-networkd (running (pid 9)): set this\n#   NOW: it deletes\n"),
            "{text}"
        );
        let config = crate::config::Config::parse(&text, std::path::Path::new("init.toml")).unwrap();
        let primary: Vec<&str> =
            config.uplinks.iter().filter(|u| u.primary).map(|u| u.interface.as_str()).collect();
        assert_eq!(primary, ["ens4"]);
        assert_eq!(config.uplinks.len(), 3);
        assert!(text.contains("interface = \"ens4\"   # 10.0.4.10/24, 2001:db8:4::10/64; default via 10.0.4.1 (dhcp, metric 100)"), "{text}");
        assert!(
            text.lines().filter(|l| l.contains(" = ")).all(|l| l.contains('#') || l.starts_with("mode")),
            "{text}"
        );
    }

    #[test]
    fn nothing_found_renders_nothing_to_route() {
        assert!(discover(&Observed::default(), |_, _| false).is_empty());
    }
}
