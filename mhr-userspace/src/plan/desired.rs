//! The desired state: every uplink's table and rules, main's default, and
//! what mhr remembers between runs ([`desired`] computes it).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use serde::Serialize;

use super::{
    Gateway, GatewaySource, PlanError,
    clashes::{clashes, isolate},
    gateway::{gateway_on_link, learn_gateway},
    main_default::{Candidate, main_default, restore_moved},
    tables::{allocate_tables, table_routes},
};
use crate::{
    config::{Config, SourceRules},
    health::judge::{FamilyVerdict, HealthJudge, link_fault},
    model::{Address, Family, Framing, MovedRoute, Nexthop, Observed, RememberedGateways, Route, Rule},
};

/// The name of mhr's default table in rt_tables.d (`ip rule` shows it).
pub const DEFAULT_TABLE_NAME: &str = "mhr-default";

/// An uplink as mhr will route it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UplinkPlan {
    pub interface: String,
    pub index: u32,
    pub primary: bool,
    pub up: bool,
    pub carrier: bool,
    pub framing: Framing,
    pub table: u32,
    pub addresses: Vec<IpNet>,
    pub gateway4: Option<(Gateway, GatewaySource)>,
    pub gateway6: Option<(Gateway, GatewaySource)>,
    pub to_priority: u32,
    pub from_priority: u32,
    /// Health per family the uplink carries (has or had a gateway for).
    pub health: Vec<FamilyVerdict>,
    /// Why mhr leaves this uplink's table and rules as they are (a foreign
    /// object where they go; the daemon goes on with the other uplinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// Drained (`mhr drain`): no main default, balanced flows or steering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<crate::drain::Drain>,
    /// Every address the interface holds, routed or not (a link that is
    /// down keeps its addresses): whose source a packet carries.
    #[serde(skip)]
    pub held: Vec<IpAddr>,
}

/// What mhr remembers between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Interface → table, from rt_tables.d.
    pub registry: BTreeMap<String, u32>,
    /// Default routes an earlier mhr moved out of main (put back now).
    pub moved: Vec<MovedRoute>,
    /// The last gateway seen per uplink and family.
    pub gateways: RememberedGateways,
    /// The router each interface's DHCP lease names (IPv4).
    pub leases: BTreeMap<String, crate::leases::LeaseGateway>,
    /// Uplinks drained for maintenance (`mhr drain`), in force now.
    pub drained: crate::drain::Drains,
}

impl UplinkPlan {
    pub fn verdict(&self, family: Family) -> Option<&FamilyVerdict> {
        self.health.iter().find(|v| v.family == family)
    }

    pub fn gateway(&self, family: Family) -> Option<Gateway> {
        match family {
            Family::V4 => self.gateway4.map(|(g, _)| g),
            Family::V6 => self.gateway6.map(|(g, _)| g),
        }
    }
}

/// The state mhr wants: every route and rule it owns, and the default
/// routes an earlier mhr moved out of main that go back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub uplinks: Vec<UplinkPlan>,
    pub routes: BTreeSet<Route>,
    pub rules: BTreeSet<Rule>,
    /// Nexthop objects (balance's resilient group and its members).
    pub nexthops: BTreeSet<Nexthop>,
    pub restore: Vec<MovedRoute>,
    /// Per family, the uplinks holding main's default route (several under
    /// `policy = "balance"`).
    pub active: BTreeMap<Family, Vec<String>>,
    /// Uplinks that have nothing to route yet, defaults kept for want of a
    /// healthy uplink, …
    pub notes: Vec<String>,
    /// What a strict plan (`plan`, `apply`, `check`) refuses: a tolerant
    /// plan (the daemon, `status`) goes on past them and lists them here,
    /// so every command reports the same errors.
    pub problems: Vec<PlanError>,
    /// Where each steering rule sends each family it covers.
    pub steering: Vec<super::Steering>,
}

impl Desired {
    /// `table name` lines for rt_tables.d.
    pub fn table_names(&self, config: &Config) -> BTreeMap<u32, String> {
        let mut names: BTreeMap<u32, String> =
            self.uplinks.iter().map(|u| (u.table, u.interface.clone())).collect();
        if !self.active.is_empty() {
            names.insert(config.routing.default_table(), DEFAULT_TABLE_NAME.to_owned());
        }
        names
    }
}

/// How the planner treats an uplink it cannot route right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// A missing interface or an unlearnable gateway is an error (one-shot
    /// commands: bad input changes nothing).
    #[default]
    Strict,
    /// Skip what cannot be routed yet, with a note (the daemon: interfaces
    /// come and go, DHCP leases are renewed).
    Tolerant,
}

/// Computes the desired state: every uplink's table and rules, and main's
/// default route through the healthy uplink(s) `judge` picks. `memory`
/// keeps an uplink's table and gateway across runs.
pub fn desired(
    config: &Config,
    observed: &Observed,
    memory: &Memory,
    strictness: Strictness,
    judge: &mut dyn HealthJudge,
) -> Result<Desired, PlanError> {
    let tolerant = strictness == Strictness::Tolerant;
    let protocol = config.routing.protocol;
    let path = config.path.display().to_string();
    let tables = allocate_tables(config, observed, &memory.registry)?;
    let mut desired = Desired::default();
    let mut candidates = Vec::new();

    for (position, uplink) in config.uplinks.iter().enumerate() {
        let Some(link) = observed.link(&uplink.interface) else {
            let problem =
                PlanError::UnknownInterface { path: path.clone(), interface: uplink.interface.clone() };
            if uplink.optional {
                desired
                    .notes
                    .push(format!("{} (optional): no such interface, planned without it", uplink.interface));
                continue;
            }
            if tolerant {
                desired.notes.push(format!("{}: no such interface yet, nothing to route", uplink.interface));
                desired.problems.push(problem);
                continue;
            }
            return Err(problem);
        };
        let table = tables[position];
        let base = config.routing.priority_range[0] + 2 * position as u32;
        // A link that is administratively down takes no routes.
        let addresses: Vec<&Address> =
            if link.up { observed.addresses_of(link.index).collect() } else { Vec::new() };
        let mut plan = UplinkPlan {
            interface: uplink.interface.clone(),
            index: link.index,
            primary: uplink.primary,
            up: link.up,
            carrier: link.carrier,
            framing: link.framing,
            table,
            addresses: addresses.iter().filter_map(|a| IpNet::new(a.address, a.prefix_len).ok()).collect(),
            gateway4: None,
            gateway6: None,
            to_priority: base,
            from_priority: base + 1,
            health: Vec::new(),
            blocked: None,
            drained: memory.drained.get(&uplink.interface).copied(),
            held: observed.addresses_of(link.index).map(|a| a.address).collect(),
        };
        if !link.up {
            desired
                .notes
                .push(format!("{}: link is down, nothing to route until it is up", uplink.interface));
        } else if addresses.is_empty() {
            desired.notes.push(format!("{}: no global address yet, nothing to route", uplink.interface));
        }
        for family in [Family::V4, Family::V6] {
            let family_addresses: Vec<&Address> =
                addresses.iter().copied().filter(|a| a.family() == family).collect();
            let learned = learn_gateway(config, uplink, link, family, table, observed, memory);
            // Judge every family the uplink carries or carried (a gateway is
            // known), so a link that went down is reported, not forgotten.
            if !family_addresses.is_empty() || learned.is_some() {
                let fault =
                    link_fault(link.up, link.carrier, !family_addresses.is_empty(), learned.is_some());
                let unreachable = learned.is_some_and(|(g, _)| observed.neighbour_failed(link.index, g));
                let verdict = judge.judge(&uplink.interface, family, fault, unreachable);
                plan.health.push(verdict);
                if let (Some(gateway), false) = (learned, family_addresses.is_empty()) {
                    candidates.push(Candidate {
                        position,
                        uplink,
                        index: link.index,
                        family,
                        gateway,
                        on_link: gateway_on_link(gateway, &family_addresses),
                        healthy: verdict.healthy,
                        degraded: verdict.degraded,
                        drained: memory.drained.contains_key(&uplink.interface),
                    });
                }
            }
            if family_addresses.is_empty() {
                continue;
            }
            let Some(gateway) = learned else {
                let key = if family == Family::V4 { "gateway" } else { "gateway6" };
                let interface = uplink.interface.clone();
                let problem = PlanError::GatewayUnknown { path: path.clone(), interface, family, key };
                if tolerant || uplink.optional {
                    desired
                        .notes
                        .push(format!("{}: no {family} gateway known yet (set `{key}`)", uplink.interface));
                    if !uplink.optional {
                        desired.problems.push(problem);
                    }
                    continue;
                }
                return Err(problem);
            };
            match family {
                Family::V4 => plan.gateway4 = Some(gateway),
                Family::V6 => plan.gateway6 = Some(gateway),
            }
            table_routes(&mut desired.routes, protocol, table, link.index, &family_addresses, gateway.0);
            let rule = |priority, source, destination| Rule {
                family,
                priority,
                table,
                source,
                destination,
                protocol,
                suppress_prefixlength: None,
                selectors: Default::default(),
                other_selectors: false,
            };
            for source in rule_sources(config.routing.source_rules, observed, link.index, &family_addresses) {
                desired.rules.insert(rule(plan.from_priority, Some(source), None));
            }
            if config.routing.to_rules {
                for address in &family_addresses {
                    desired.rules.insert(rule(plan.to_priority, None, Some(IpNet::from(address.address))));
                }
            }
        }
        desired.uplinks.push(plan);
    }
    for family in [Family::V4, Family::V6] {
        let family_candidates: Vec<&Candidate> = candidates.iter().filter(|c| c.family == family).collect();
        main_default(&mut desired, config, observed, family, family_candidates, strictness)?;
    }
    super::steer::steer(&mut desired, config);
    restore_moved(&mut desired, observed, &memory.moved);
    for (index, clash) in clashes(config, observed, &desired) {
        if !tolerant {
            return Err(clash);
        }
        isolate(&mut desired, observed, protocol, index, &clash);
        desired.problems.push(clash);
    }
    Ok(desired)
}

/// What the uplink's `from` rules match: under [`SourceRules::Prefix`],
/// each connected prefix in which every address of the host belongs to
/// this uplink (`interface`); otherwise, and for a prefix another link
/// shares, each address on its own. A source prefix never covers another
/// link's address, so no packet can match the wrong uplink's rule.
pub fn rule_sources(
    layout: SourceRules,
    observed: &Observed,
    interface: u32,
    addresses: &[&Address],
) -> BTreeSet<IpNet> {
    let exclusive = |network: &IpNet| {
        layout == SourceRules::Prefix
            && network.prefix_len() > 0
            && observed
                .addresses
                .iter()
                .all(|other| other.interface == interface || !network.contains(&other.address))
    };
    addresses
        .iter()
        .map(|address| {
            let network = address.network();
            if exclusive(&network) { network } else { IpNet::from(address.address) }
        })
        .collect()
}
