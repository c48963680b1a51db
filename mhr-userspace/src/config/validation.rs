//! Semantic validation of a parsed config: reserved tables and protocols,
//! limits, and every check that needs more than one key.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
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
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// A window holds enough TCP segments to judge a ratio only from about a second.
const MIN_RETRANSMIT_WINDOW: Duration = Duration::from_secs(1);
const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_STREAK: u32 = 100;
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

impl Config {
    fn validate_health(&self, problems: &mut Vec<(Loc, ConfigError)>) {
        let every = self.health.interval;
        let interval_ok = (MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&every);
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let interface = || uplink.interface.clone();
            if uplink.probe.len() > MAX_PROBES_PER_UPLINK {
                problems.push((
                    Loc::Uplink(index, "probe"),
                    ConfigError::TooManyProbes { interface: interface(), count: uplink.probe.len() },
                ));
            }
            for (item, target) in uplink.probe.iter().enumerate().filter(|(_, t)| !is_unicast(&t.address())) {
                problems.push((
                    Loc::UplinkItem(index, "probe", item),
                    ConfigError::BadProbe { interface: interface(), target: target.to_string() },
                ));
            }
            if let Some(quorum) = uplink.quorum.filter(|&q| q == 0 || q as usize > uplink.probe.len()) {
                problems.push((
                    Loc::Uplink(index, "quorum"),
                    ConfigError::BadQuorum { interface: interface(), quorum, targets: uplink.probe.len() },
                ));
            }
            // Against an interval that is itself refused, only the upper bound.
            let lowest = if interval_ok { every } else { Duration::ZERO };
            if let Some(value) = uplink.probe_interval.filter(|d| !(lowest..=MAX_HEALTH_INTERVAL).contains(d))
            {
                problems.push((
                    Loc::Uplink(index, "probe_interval"),
                    ConfigError::BadProbeInterval {
                        interface: interface(),
                        interval: humantime::format_duration(every).to_string(),
                        value: humantime::format_duration(value).to_string(),
                    },
                ));
            }
            if let Some(weight) = uplink.weight.filter(|w| !(1..=MAX_WEIGHT).contains(w)) {
                problems.push((
                    Loc::Uplink(index, "weight"),
                    ConfigError::BadWeight { interface: interface(), weight },
                ));
            }
        }
        let health = &self.health;
        let mut bad = |key, reason: String| {
            problems.push((Loc::Section("health", key), ConfigError::BadHealth { key, reason }));
        };
        if !(MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&health.interval) {
            bad(
                "interval",
                format!("must be from 100ms to 1h, not {}", humantime::format_duration(health.interval)),
            );
        }
        // Against an interval that is itself refused, only a zero timeout is news.
        if health.timeout.is_zero() || (interval_ok && health.timeout > health.interval) {
            bad(
                "timeout",
                format!(
                    "must be more than 0 and at most `interval` ({}), not {}",
                    humantime::format_duration(health.interval),
                    humantime::format_duration(health.timeout)
                ),
            );
        }
        if interval_ok && !(health.interval..=MAX_HEALTH_INTERVAL).contains(&health.window) {
            bad(
                "window",
                format!(
                    "must be from `interval` ({}) to 1h, not {}",
                    humantime::format_duration(health.interval),
                    humantime::format_duration(health.window)
                ),
            );
        }
        if !(MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&health.rx_silence) {
            let silence = humantime::format_duration(health.rx_silence);
            bad("rx_silence", format!("must be from 100ms to 1h, not {silence}"));
        }
        if !(MIN_RETRANSMIT_WINDOW..=MAX_HEALTH_INTERVAL).contains(&health.retransmit_window) {
            let window = humantime::format_duration(health.retransmit_window);
            bad("retransmit_window", format!("must be from 1s to 1h, not {window}"));
        }
        if health.retransmit_percent > 100 {
            let percent = health.retransmit_percent;
            bad("retransmit_percent", format!("must be a whole percentage from 0 to 100, not {percent}"));
        }
        if health.probe_when_idle && !health.passive {
            bad(
                "probe_when_idle",
                "needs `passive = true` (traffic must be judged while probes are not sent)".to_owned(),
            );
        }
        let format = |d: Duration| humantime::format_duration(d).to_string();
        match (health.latency_high, health.latency_low) {
            (Some(high), Some(low)) if low > high => bad(
                "latency_low",
                format!("must be at most latency_high ({}), not {}", format(high), format(low)),
            ),
            (Some(high), _) if high.is_zero() || high > MAX_HEALTH_INTERVAL => {
                bad("latency_high", format!("must be more than 0 and at most 1h, not {}", format(high)))
            }
            (Some(_), None) => {
                bad("latency_low", "must go with latency_high (the mark to recover under)".to_owned())
            }
            (None, Some(_)) => {
                bad("latency_high", "must go with latency_low (the mark to degrade over)".to_owned())
            }
            _ => {}
        }
        for (key, value) in [("loss_high", health.loss_high), ("loss_low", health.loss_low)] {
            if let Some(value) = value.filter(|v| *v > 100) {
                bad(key, format!("must be a whole percentage from 0 to 100, not {value}"));
            }
        }
        match (health.loss_high, health.loss_low) {
            (Some(high), Some(low)) if low > high && high <= 100 => {
                bad("loss_low", format!("must be at most loss_high ({high}), not {low}"))
            }
            (Some(_), None) => {
                bad("loss_low", "must go with loss_high (the mark to recover under)".to_owned())
            }
            (None, Some(_)) => {
                bad("loss_high", "must go with loss_low (the mark to degrade over)".to_owned())
            }
            _ => {}
        }
        if !(1..=MAX_PROBES_PER_UPLINK as u32).contains(&health.quorum) {
            bad(
                "quorum",
                format!("must be a whole number from 1 to {MAX_PROBES_PER_UPLINK}, not {}", health.quorum),
            );
        }
        for (key, value) in [("down_after", health.down_after), ("up_after", health.up_after)] {
            if !(1..=MAX_STREAK).contains(&value) {
                bad(key, format!("must be a whole number from 1 to {MAX_STREAK}, not {value}"));
            }
        }
    }
}

fn is_unicast(address: &IpAddr) -> bool {
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
