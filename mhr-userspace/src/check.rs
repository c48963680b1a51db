//! `mhr check`: the seed's verification, asked of the kernel. For every
//! uplink address, a route lookup from that source must leave by its own
//! uplink via its gateway; the main default must be the primary's; and the
//! reverse-path check (rp_filter) must accept traffic to each address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    engine::{Engine, EngineError},
    health::judge::FamilyVerdict,
    model::Observed,
    model::{Family, Names, rule_args},
    plan::{Desired, Gateway, UplinkPlan},
    southbound::{Path, Southbound, path as lookup},
};

/// Off-link destinations for the lookups (documentation ranges: nothing is
/// sent, the kernel only answers "which way would it go").
pub const PROBE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const PROBE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub ok: bool,
    pub check: String,
    /// What the kernel said.
    pub observed: String,
    /// What is wrong and how to fix it (empty when ok).
    pub advice: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

impl Engine {
    /// `connections`: also that every established TCP connection leaves by
    /// the uplink that owns its local address.
    pub async fn check(&self, connections: bool) -> Result<CheckReport, EngineError> {
        let planned = self.plan().await?;
        let (observed, desired, names) = (&planned.observed, &planned.desired, &planned.names);
        let mut findings = Vec::new();
        for uplink in &desired.uplinks {
            for address in &uplink.addresses {
                findings.push(
                    source_lookup(self.kernel().as_ref(), observed, desired, uplink, address, names).await,
                );
                if address.addr().is_ipv4() {
                    findings.push(reverse_path(self.kernel().as_ref(), uplink, address.addr()).await);
                }
            }
        }
        let probes = crate::health::probe::probe_plans(self.config(), observed);
        for uplink in &desired.uplinks {
            for verdict in &uplink.health {
                let every = self.config().health.interval;
                let probe = probes
                    .iter()
                    .find(|p| p.interface == uplink.interface && p.family == verdict.family)
                    .map(|p| (p.source, (p.interval != every).then_some(p.interval)));
                findings.push(health_finding(uplink, verdict, desired, probe));
            }
        }
        for (family, active) in &desired.active {
            let holders: Vec<&UplinkPlan> =
                desired.uplinks.iter().filter(|u| active.contains(&u.interface)).collect();
            if !holders.is_empty() {
                let uid = neutral_uid(self.config());
                findings.push(main_default(self.kernel().as_ref(), &holders, *family, names, uid).await);
            }
        }
        for steering in &desired.steering {
            findings.push(
                steering_finding(self.kernel().as_ref(), self.config(), desired, steering, names).await,
            );
        }
        for neighbour in self.neighbours() {
            if let Some(warning) = neighbour.warning {
                findings.push(Finding {
                    ok: false,
                    check: format!("{} leaves mhr's rules and routes alone", neighbour.manager),
                    observed: warning,
                    advice: neighbour.advice.to_owned(),
                });
            }
        }
        if connections {
            let paths = crate::connections::paths(self.kernel().as_ref(), desired, names)
                .await
                .map_err(|source| EngineError::Connections { source })?;
            findings.extend(paths.iter().filter(|path| path.owner.is_some()).map(connection_finding));
        }
        Ok(CheckReport { findings })
    }
}

fn probe(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(PROBE_V4),
        Family::V6 => IpAddr::V6(PROBE_V6),
    }
}

fn expected_path(uplink: &UplinkPlan, family: Family) -> Path {
    let gateway = match uplink.gateway(family) {
        Some(Gateway::Via(via)) => Some(via),
        _ => None,
    };
    Path { interface: Some(uplink.index), gateway }
}

fn show(path: &Path, names: &Names) -> String {
    let interface = path.interface.map_or_else(|| "nowhere".to_owned(), |i| names.interface(i));
    match path.gateway {
        Some(gateway) => format!("{interface} via {gateway}"),
        None => format!("{interface} (on-link)"),
    }
}

async fn source_lookup(
    kernel: &dyn Southbound,
    observed: &Observed,
    desired: &Desired,
    uplink: &UplinkPlan,
    address: &IpNet,
    names: &Names,
) -> Finding {
    let family = Family::of(&address.addr());
    let check =
        format!("replies from {} ({}) leave by {}", address.addr(), uplink.interface, uplink.interface);
    let expected = expected_path(uplink, family);
    match lookup(kernel, probe(family), Some(address.addr()), None).await {
        Ok(path) if path == expected => {
            Finding { ok: true, check, observed: show(&path, names), advice: String::new() }
        }
        Ok(path) => {
            let missing_rule = desired.rules.iter().find(|rule| {
                rule.table == uplink.table
                    && rule.source.is_some_and(|source| source.contains(&address.addr()))
                    && !observed.rules.contains(rule)
            });
            let missing_routes = desired
                .routes
                .iter()
                .filter(|r| r.table == uplink.table && !observed.routes.contains(r))
                .count();
            let advice = match (missing_rule, missing_routes) {
                (Some(rule), _) => {
                    format!("the rule `{}` is missing; run `mhr apply`", rule_args(rule))
                }
                (None, n) if n > 0 => {
                    format!("{n} route(s) of table {} are missing; run `mhr apply`", uplink.table)
                }
                _ => format!(
                    "expected {}; a rule before mhr's (priority {}) or a route elsewhere wins: inspect `ip rule` and `ip route get {} from {}`",
                    show(&expected, names),
                    uplink.to_priority,
                    probe(family),
                    address.addr()
                ),
            };
            Finding { ok: false, check, observed: show(&path, names), advice }
        }
        Err(reason) => Finding {
            ok: false,
            check,
            observed: reason.to_string(),
            advice: "no route for this source at all; run `mhr apply`".to_owned(),
        },
    }
}

/// `probe`: the address the uplink's probes leave from, if it has any,
/// and its own `probe_interval` where that is not `[health] interval`.
fn health_finding(
    uplink: &UplinkPlan,
    verdict: &FamilyVerdict,
    desired: &Desired,
    probe: Option<(IpAddr, Option<std::time::Duration>)>,
) -> Finding {
    let check = format!("{} is healthy for {}", uplink.interface, verdict.family);
    let mut observed = match verdict.fault {
        None if verdict.healthy => "healthy".to_owned(),
        None => "recovering".to_owned(),
        Some(fault) => fault.to_string(),
    };
    match probe {
        Some((source, None)) => observed += &format!(" (probes from {source})"),
        Some((source, Some(every))) => {
            observed += &format!(" (probes from {source} every {})", humantime::format_duration(every))
        }
        None => {}
    }
    let advice = if verdict.healthy {
        String::new()
    } else {
        let holder = desired.active.get(&verdict.family).map_or("none".to_owned(), |a| a.join(" + "));
        format!(
            "main's {} default is on {holder} meanwhile; repair the uplink or its upstream",
            verdict.family
        )
    };
    Finding { ok: verdict.healthy, check, observed, advice }
}

/// A uid no steering rule selects, for lookups that stand for traffic in
/// general: this process runs as root (uid 0), which a rule for
/// `uid = "0-999"` would catch.
fn neutral_uid(config: &crate::config::Config) -> Option<u32> {
    let ranges: Vec<(u32, u32)> =
        config.rules.iter().filter_map(|r| r.selectors().ok().and_then(|s| s.uid)).collect();
    if ranges.is_empty() {
        return None;
    }
    [65534, 4_294_967_294, 99_999, 1]
        .into_iter()
        .find(|uid| !ranges.iter().any(|(a, b)| (a..=b).contains(&uid)))
}

async fn main_default(
    kernel: &dyn Southbound,
    holders: &[&UplinkPlan],
    family: Family,
    names: &Names,
    uid: Option<u32>,
) -> Finding {
    let expected: Vec<String> = holders.iter().map(|u| u.interface.clone()).collect();
    let check = format!("main's {family} default route leaves by {}", expected.join(" or "));
    let flow = crate::model::Flow { uid, ..Default::default() };
    let found = kernel
        .lookup(crate::southbound::Lookup { destination: probe(family), source: None, iif: None, flow })
        .await
        .map(|route| Path { interface: route.interface, gateway: route.gateway });
    match found {
        Ok(path) if holders.iter().any(|u| path.interface == Some(u.index)) => {
            Finding { ok: true, check, observed: show(&path, names), advice: String::new() }
        }
        Ok(path) => Finding {
            ok: false,
            check,
            observed: show(&path, names),
            advice: "a rule ahead of mhr's default rules, or a more specific route in main, wins: inspect `ip rule` and `ip route get`; run `mhr apply`".to_owned(),
        },
        Err(reason) => Finding {
            ok: false,
            check,
            observed: reason.to_string(),
            advice: "no default route answers; run `mhr apply`".to_owned(),
        },
    }
}

/// A steering rule, checked with the kernel's own lookup of a packet it
/// selects (`ip route get 203.0.113.1 ipproto tcp dport 443 uid 1000`): it
/// leaves by the uplink the rule took.
async fn steering_finding(
    kernel: &dyn Southbound,
    config: &crate::config::Config,
    desired: &Desired,
    steering: &crate::plan::Steering,
    names: &Names,
) -> Finding {
    let Some(rule) = config.rules.get(steering.rule - 1) else {
        return Finding {
            ok: true,
            check: format!("rule #{}", steering.rule),
            observed: String::new(),
            advice: String::new(),
        };
    };
    let selectors = rule.selectors().unwrap_or_default();
    let family = steering.family;
    let destination = rule
        .to
        .iter()
        .find(|p| Family::of(&p.addr()) == family)
        .map_or_else(|| probe(family), |p| p.network());
    let flow = crate::model::Flow {
        ipproto: selectors.ipproto,
        sport: selectors.sport.map(|(first, _)| first),
        dport: selectors.dport.map(|(first, _)| first),
        uid: selectors.uid.map(|(first, _)| first).or_else(|| neutral_uid(config)),
        mark: selectors.fwmark.map(|(mark, _)| mark),
    };
    // What `ip route get` is asked: the first port, uid and mark of each range.
    let mut packet = destination.to_string();
    if let Some(number) = flow.ipproto {
        packet += &format!(" ipproto {}", crate::model::selectors::ipproto_name(number));
    }
    for (word, value) in [("sport", flow.sport.map(u32::from)), ("dport", flow.dport.map(u32::from))] {
        if let Some(value) = value {
            packet += &format!(" {word} {value}");
        }
    }
    if let Some(uid) = selectors.uid.map(|(first, _)| first) {
        packet += &format!(" uid {uid}");
    }
    if let Some(mark) = flow.mark {
        packet += &format!(" mark {mark:#x}");
    }
    let Some(uplink) = &steering.uplink else {
        return Finding {
            ok: true,
            check: format!("rule #{} ({family}): withdrawn, no usable uplink", steering.rule),
            observed: format!("{packet} takes main's default"),
            advice: String::new(),
        };
    };
    let check = format!("rule #{} sends {packet} by {uplink}", steering.rule);
    let expected = desired.uplinks.iter().find(|u| &u.interface == uplink).map(|u| u.index);
    let lookup = crate::southbound::Lookup { destination, source: None, iif: None, flow };
    match kernel.lookup(lookup).await {
        Ok(route) if route.interface.is_some() && route.interface == expected => {
            let path = Path { interface: route.interface, gateway: route.gateway };
            Finding { ok: true, check, observed: show(&path, names), advice: String::new() }
        }
        Ok(route) => Finding {
            ok: false,
            check,
            observed: show(&Path { interface: route.interface, gateway: route.gateway }, names),
            advice: "a rule ahead of mhr's steering rules wins, or the rule is missing: inspect `ip rule`; run `mhr apply`".to_owned(),
        },
        Err(reason) => Finding {
            ok: false,
            check,
            observed: reason.to_string(),
            advice: "the kernel finds no route for it; run `mhr apply`".to_owned(),
        },
    }
}

fn rp_filter_name(mode: u8) -> &'static str {
    match mode {
        0 => "off",
        1 => "strict",
        _ => "loose",
    }
}

async fn reverse_path(kernel: &dyn Southbound, uplink: &UplinkPlan, address: IpAddr) -> Finding {
    let mode = kernel.rp_filter(&uplink.interface);
    let mode_name = mode.map_or("unknown", rp_filter_name);
    let check =
        format!("rp_filter ({mode_name}) accepts traffic to {address} arriving on {}", uplink.interface);
    // An input lookup on the uplink runs the kernel's source validation.
    match lookup(kernel, address, Some(IpAddr::V4(PROBE_V4)), Some(uplink.index)).await {
        Ok(_) => Finding { ok: true, check, observed: "accepted".to_owned(), advice: String::new() },
        Err(reason) => Finding {
            ok: false,
            check,
            observed: reason.to_string(),
            advice: format!(
                "the reverse path of {address} does not leave by {}; run `mhr apply`, or set rp_filter to loose (2)",
                uplink.interface
            ),
        },
    }
}

fn connection_finding(path: &crate::connections::ConnectionPath) -> Finding {
    let owner = path.owner.clone().unwrap_or_default();
    let now = path.now.clone().unwrap_or_else(|| "nowhere".to_owned());
    let ok = !path.asymmetric_now();
    Finding {
        ok,
        check: format!("{} leaves by {owner}, whose address it uses", path.connection.describe()),
        observed: format!("leaves by {now}"),
        advice: if ok {
            String::new()
        } else {
            format!(
                "its replies leave by {now} with {owner}'s address (an upstream that filters sources drops them); `mhr apply` installs the rule that keeps them on {owner}"
            )
        },
    }
}
