//! Semantic validation of a parsed config: reserved tables and protocols,
//! limits, and every check that needs more than one key.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use mhr_common::guard::MAX_ALLOW;

use super::{Config, ConfigError, MetricsConfig, check::Loc};

/// Tables the kernel owns (unspec, default, main, local).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];
/// Protocols other writers of routes use (iproute2's rt_protos): unspec,
/// redirect, kernel, boot, static, gated, ra, mrt, zebra, bird, dnrouted,
/// xorp, ntk, dhcp, mrouted, keepalived, babel, openr, bgp, isis, ospf,
/// rip, eigrp. Claiming one would make mhr delete their routes as its own.
const RESERVED_PROTOCOLS: [(u8, &str); 23] = [
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];

/// The name iproute2 gives a route protocol number (`dhcp`, `ra`, …), or the number.
pub fn route_protocol_name(protocol: u8) -> String {
    RESERVED_PROTOCOLS
        .iter()
        .find(|(number, _)| *number == protocol)
        .map_or_else(|| format!("proto {protocol}"), |(_, name)| (*name).to_owned())
}

const MAX_INTERFACE_NAME: usize = 15;
/// Larger config files are refused before parsing (a config is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Probe targets per uplink: probes are rate-bounded by design.
pub const MAX_PROBES_PER_UPLINK: usize = 8;
/// A multipath next hop's weight is one byte in the kernel (weight − 1).
pub(super) const MAX_WEIGHT: u32 = 256;

pub const MAX_TOP_OFFENDERS: usize = 10;

impl Config {
    /// Every semantic problem, each with the key it is about.
    pub(super) fn validate(&self) -> Vec<(Loc, ConfigError)> {
        let mut problems = Vec::new();
        if self.uplinks.is_empty() {
            problems.push((Loc::Start, ConfigError::NoUplinks));
        }
        let max = mhr_common::guard::MAX_UPLINKS;
        if self.uplinks.len() > max as usize {
            problems.push((
                Loc::Uplink(max as usize, "interface"),
                ConfigError::TooManyUplinks { count: self.uplinks.len(), max },
            ));
        }
        let mut seen = BTreeSet::new();
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let at = Loc::Uplink(index, "interface");
            if let Err(reason) = check_interface_name(&uplink.interface) {
                problems.push((
                    at,
                    ConfigError::BadInterfaceName { interface: uplink.interface.clone(), reason },
                ));
            }
            if !seen.insert(uplink.interface.as_str()) {
                problems.push((at, ConfigError::DuplicateUplink { interface: uplink.interface.clone() }));
            }
        }
        let primaries: Vec<usize> = (0..self.uplinks.len()).filter(|&i| self.uplinks[i].primary).collect();
        match primaries[..] {
            [] if !self.uplinks.is_empty() => {
                problems.push((Loc::Uplink(0, "primary"), ConfigError::NoPrimary))
            }
            [first, second, ..] => problems.push((
                Loc::Uplink(second, "primary"),
                ConfigError::SeveralPrimaries {
                    first: self.uplinks[first].interface.clone(),
                    second: self.uplinks[second].interface.clone(),
                },
            )),
            _ => {}
        }
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let Some(table) = uplink.table else { continue };
            let at = Loc::Uplink(index, "table");
            if RESERVED_TABLES.contains(&table) {
                problems
                    .push((at, ConfigError::ReservedTable { interface: uplink.interface.clone(), table }));
            }
            if let Some(other) = self.uplinks[..index].iter().find(|u| u.table == Some(table)) {
                problems.push((
                    at,
                    ConfigError::SharedTable {
                        table,
                        first: other.interface.clone(),
                        second: uplink.interface.clone(),
                    },
                ));
            }
        }
        let routing = &self.routing;
        let mut ranges_ok = true;
        for (key, [start, end]) in
            [("table_range", routing.table_range), ("priority_range", routing.priority_range)]
        {
            let reason = if start > end {
                Some("start is after end")
            } else if start == 0 {
                Some("0 is reserved")
            } else if key == "table_range" && RESERVED_TABLES.iter().any(|t| (start..=end).contains(t)) {
                Some("it includes the kernel's tables 253–255")
            } else if key == "priority_range" && end >= 32766 {
                Some("rules must sit before the main rule (32766)")
            } else {
                None
            };
            if let Some(reason) = reason {
                ranges_ok = false;
                problems
                    .push((Loc::Section("routing", key), ConfigError::BadRange { key, start, end, reason }));
            }
        }
        if ranges_ok {
            let have = u64::from(routing.priority_range[1] - routing.priority_range[0]) + 1;
            // Two per uplink, two for the rules to main's default, and a
            // block for steering rules when there are any.
            let steering = if self.rules.is_empty() { 0 } else { super::MAX_RULES };
            let needed = self.uplinks.len() * 2 + 2 + steering;
            if have < needed as u64 {
                problems.push((
                    Loc::Section("routing", "priority_range"),
                    ConfigError::PriorityRangeTooSmall { needed, have },
                ));
            }
        }
        if let Some((protocol, owner)) = RESERVED_PROTOCOLS.iter().find(|(p, _)| *p == routing.protocol) {
            if !routing.force_protocol {
                problems.push((
                    Loc::Section("routing", "protocol"),
                    ConfigError::ReservedProtocol { protocol: *protocol, owner },
                ));
            } else {
                tracing::warn!(
                    protocol,
                    owner,
                    "[routing] protocol is reserved; used because force_protocol = true"
                );
            }
        }
        for family in [crate::model::Family::V4, crate::model::Family::V6] {
            let count = self
                .uplinks
                .iter()
                .flat_map(|u| &u.allow)
                .filter(|p| crate::model::Family::of(&p.addr()) == family)
                .count();
            if count > MAX_ALLOW as usize {
                let index = self.uplinks.iter().position(|u| !u.allow.is_empty()).unwrap_or(0);
                problems.push((Loc::Uplink(index, "allow"), ConfigError::TooManyAllow { family, count }));
            }
        }
        if ranges_ok {
            let default_table = routing.default_table();
            let at = Loc::Section(
                "routing",
                if routing.default_table.is_some() { "default_table" } else { "table_range" },
            );
            if RESERVED_TABLES.contains(&default_table) {
                problems.push((at, ConfigError::ReservedDefaultTable { table: default_table }));
            }
            if let Some(index) = self.uplinks.iter().position(|u| u.table == Some(default_table)) {
                problems.push((
                    Loc::Uplink(index, "table"),
                    ConfigError::UplinkOnDefaultTable {
                        interface: self.uplinks[index].interface.clone(),
                        table: default_table,
                    },
                ));
            }
            if let Some(metric) = routing.main_metric {
                tracing::warn!(
                    metric,
                    "[routing] main_metric is no longer used: mhr keeps its default in table {default_table}, ahead of main's defaults whatever their metric"
                );
            }
        }
        self.validate_health(&mut problems);
        super::steering::validate(self, &mut problems);
        super::hooks::validate(self, &mut problems);
        if self.metrics.top_offenders > MAX_TOP_OFFENDERS {
            problems.push((
                Loc::Section("metrics", "top_offenders"),
                ConfigError::TooManyTopOffenders { value: self.metrics.top_offenders },
            ));
        }
        if let Err((key, reason)) = validate_metrics(&self.metrics) {
            problems.push((Loc::Section("metrics", key), ConfigError::BadMetrics { key, reason }));
        }
        problems
    }
}

pub(super) fn is_unicast(address: &IpAddr) -> bool {
    !(address.is_unspecified() || address.is_multicast() || address.is_loopback())
        && *address != IpAddr::V4(Ipv4Addr::BROADCAST)
}

/// Why the kernel would refuse `name` as an interface name.
fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("cannot be empty")
    } else if name.len() > MAX_INTERFACE_NAME {
        Err("have at most 15 characters (Linux's IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Err("cannot be `.` or `..`")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        Err("cannot hold `/`, `:`, spaces or control characters")
    } else {
        Ok(())
    }
}

/// Checks `[metrics]` TLS and basic-auth keys when the config is loaded;
/// `Err` names the key and the problem.
fn validate_metrics(metrics: &MetricsConfig) -> Result<(), (&'static str, String)> {
    if metrics.tls_cert.is_some() != metrics.tls_key.is_some() {
        return Err(("tls_cert", "tls_cert and tls_key go together".to_owned()));
    }
    for (user, hash) in &metrics.basic_auth_users {
        if user.is_empty() || user.contains(':') {
            return Err(("basic_auth_users", format!("user name {user:?} is empty or holds ':'")));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err((
                "basic_auth_users",
                format!("{user}: not a bcrypt hash (`htpasswd -nBC 10 {user}` makes one)"),
            ));
        }
    }
    Ok(())
}
