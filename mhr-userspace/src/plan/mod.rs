//! From config and observed kernel state to the desired state, and from
//! there to the actions that reach it. Pure functions: no kernel, no files.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    config::{Config, Policy, SourceRules, UplinkConfig},
    health::Fault,
    model::{
        Address, Family, Framing, IPV6_DEFAULT_METRIC, Link, MAIN_TABLE, MovedRoute, Names, NextHop,
        Observed, RememberedGateways, Route, Rule, SCOPE_LINK, SCOPE_UNIVERSE, rule_args,
    },
};

pub use crate::model::{Gateway, GatewaySource};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{path}: uplink `{interface}` does not exist on this host")]
    UnknownInterface { path: String, interface: String },
    #[error(
        "cannot learn the {family} gateway of `{interface}`: no default route via `{interface}` in any table; set `{key}` for this uplink in {path}"
    )]
    GatewayUnknown { path: String, interface: String, family: Family, key: &'static str },
    #[error("table {table} (for `{interface}`) is already used by a route mhr does not own: {object}")]
    TableHasForeignRoute { table: u32, interface: String, object: String },
    #[error("table {table} (for `{interface}`) is already used by a rule mhr does not own: {object}")]
    TableHasForeignRule { table: u32, interface: String, object: String },
    #[error("priority {priority} (for `{interface}`) is already used by a rule mhr does not own: {object}")]
    PriorityTaken { priority: u32, interface: String, object: String },
    #[error("no free table left in table_range {start}–{end} for `{interface}`")]
    TablesExhausted { start: u32, end: u32, interface: String },
}

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
}

/// Whether an uplink may carry main's default route in one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FamilyVerdict {
    pub family: Family,
    pub healthy: bool,
    pub fault: Option<Fault>,
}

/// Decides uplink health for the planner: the daemon's [`crate::health::HealthBook`]
/// (with hysteresis), or a one-shot view.
pub trait HealthJudge {
    /// `link_fault` is what the link itself says; `gateway_unreachable`
    /// whether the gateway's neighbour entry failed.
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        gateway_unreachable: bool,
    ) -> FamilyVerdict;
}

/// Judges by what is true this instant: any fault makes an uplink
/// unhealthy. `probes_failed` lists uplink families whose probes got no
/// answer (one round).
#[derive(Clone, Debug, Default)]
pub struct InstantJudge {
    pub probes_failed: BTreeSet<(String, Family)>,
}

impl HealthJudge for InstantJudge {
    fn judge(
        &mut self,
        interface: &str,
        family: Family,
        link_fault: Option<Fault>,
        gateway_unreachable: bool,
    ) -> FamilyVerdict {
        let probe = self.probes_failed.contains(&(interface.to_owned(), family));
        let sample = crate::health::RoundSample {
            gateway_unreachable,
            probe: probe.then_some(crate::health::ProbeOutcome { answered: false, rtt: None }),
        };
        let fault = crate::health::one_shot(link_fault, sample);
        FamilyVerdict { family, healthy: fault.is_none(), fault }
    }
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

/// What the link itself says about carrying a family: administratively
/// up, with carrier, an address and a gateway.
pub fn link_fault(up: bool, carrier: bool, has_address: bool, has_gateway: bool) -> Option<Fault> {
    if !up {
        Some(Fault::AdminDown)
    } else if !carrier {
        Some(Fault::NoCarrier)
    } else if !has_address {
        Some(Fault::NoAddress)
    } else if !has_gateway {
        Some(Fault::NoGateway)
    } else {
        None
    }
}

/// An uplink family that could carry main's default route.
struct Candidate<'a> {
    position: usize,
    uplink: &'a UplinkConfig,
    index: u32,
    family: Family,
    gateway: (Gateway, GatewaySource),
    /// The gateway sits in one of the uplink's prefixes (or is link-local).
    on_link: bool,
    healthy: bool,
}

impl Candidate<'_> {
    /// Failover order: the primary, then by `priority`, then config order.
    fn order(&self) -> (bool, u32, usize) {
        (!self.uplink.primary, self.uplink.priority.unwrap_or(u32::MAX), self.position)
    }

    fn next_hop(&self) -> NextHop {
        let gateway = match self.gateway.0 {
            Gateway::Via(via) => Some(via),
            Gateway::OnLink => None,
        };
        NextHop { gateway, interface: self.index, weight: self.uplink.weight() }
    }
}

fn gateway_on_link(gateway: (Gateway, GatewaySource), addresses: &[&Address]) -> bool {
    match gateway.0 {
        Gateway::Via(via) => is_link_local(via) || addresses.iter().any(|a| a.network().contains(&via)),
        Gateway::OnLink => true,
    }
}

/// The default route host traffic takes for `family`: the first healthy
/// uplink (failover) or all of them (balance), in mhr's default table,
/// reached by two rules after the uplinks' `from` rules: `lookup main
/// suppress_prefixlength 0` (main's specific routes keep winning) and a
/// lookup of the default table. Main's own defaults, at whatever metric
/// their writers gave them, are left alone and answer when mhr's rules are
/// gone. With nothing healthy the default mhr has is kept.
fn main_default(
    desired: &mut Desired,
    config: &Config,
    observed: &Observed,
    family: Family,
    mut candidates: Vec<&Candidate>,
    strictness: Strictness,
) -> Result<(), PlanError> {
    if candidates.is_empty() {
        return Ok(());
    }
    let routing = &config.routing;
    let (protocol, table) = (routing.protocol, routing.default_table());
    if let Some(clash) = default_clash(config, observed) {
        if strictness == Strictness::Strict {
            return Err(clash);
        }
        // Leave what mhr has there as it is: deleting it could leave the
        // host with a default it never chose.
        let (suppress, lookup) = routing.default_priorities();
        desired.rules.extend(
            observed
                .rules
                .iter()
                .filter(|r| r.protocol == protocol && r.family == family)
                .filter(|r| r.table == table || [suppress, lookup].contains(&r.priority))
                .cloned(),
        );
        desired
            .routes
            .extend(observed.routes.iter().filter(|r| r.protocol == protocol && r.table == table).cloned());
        desired.notes.push(format!("main's {family} default left as it is: {clash}"));
        if !desired.problems.contains(&clash) {
            desired.problems.push(clash);
        }
        return Ok(());
    }
    let names = observed.names();
    let rules = default_rules(config, family);
    let legacy = observed
        .routes
        .iter()
        .find(|r| r.table == MAIN_TABLE && r.is_default() && r.family() == family && r.protocol == protocol);
    if let Some(legacy) = legacy {
        desired.notes.push(format!(
            "upgrade: mhr's {family} default moves out of main ({}) into table {table}, looked up ahead of main's defaults whatever their metric",
            names.route_args(legacy)
        ));
    }
    candidates.sort_by_key(|c| c.order());
    let healthy: Vec<&Candidate> = candidates.iter().copied().filter(|c| c.healthy).collect();
    let chosen: Vec<&Candidate> = match (config.policy, healthy.first()) {
        (Policy::Failover, Some(first)) => vec![*first],
        (Policy::Balance, Some(_)) => healthy,
        (_, None) => {
            let kept = observed.routes.iter().find(|r| {
                r.table == table && r.is_default() && r.family() == family && r.protocol == protocol
            });
            if let Some(kept) = kept {
                desired.notes.push(format!(
                    "no healthy {family} uplink: keeping main's default ({})",
                    names.route_args(kept)
                ));
                desired
                    .active
                    .insert(family, kept.next_hops().map(|h| names.interface(h.interface)).collect());
                desired.routes.insert(kept.clone());
                desired.rules.extend(rules);
                return Ok(());
            }
            desired.notes.push(format!(
                "no healthy {family} uplink: using {} for main's default anyway",
                candidates[0].uplink.interface
            ));
            vec![candidates[0]]
        }
    };
    let mut route = Route {
        table,
        destination: family.default_route(),
        gateway: None,
        interface: None,
        source: None,
        protocol,
        scope: SCOPE_UNIVERSE,
        metric: (family == Family::V6).then_some(IPV6_DEFAULT_METRIC),
        onlink: false,
        multipath: Vec::new(),
    };
    if let [only] = chosen.as_slice() {
        let hop = only.next_hop();
        route.gateway = hop.gateway;
        route.interface = Some(hop.interface);
        route.onlink = !only.on_link;
        if hop.gateway.is_none() && family == Family::V4 {
            route.scope = SCOPE_LINK;
        }
    } else {
        route.multipath = chosen.iter().map(|c| c.next_hop()).collect();
    }
    desired.active.insert(family, chosen.iter().map(|c| c.uplink.interface.clone()).collect());
    desired.routes.insert(route);
    desired.rules.extend(rules);
    Ok(())
}

/// The two rules that send host traffic to mhr's default: main without
/// its default routes, then the default table.
pub fn default_rules(config: &Config, family: Family) -> [Rule; 2] {
    let routing = &config.routing;
    let (suppress, lookup) = routing.default_priorities();
    let rule = |priority, table, suppress_prefixlength| Rule {
        family,
        priority,
        table,
        source: None,
        destination: None,
        protocol: routing.protocol,
        suppress_prefixlength,
        other_selectors: false,
    };
    [rule(suppress, MAIN_TABLE, Some(0)), rule(lookup, routing.default_table(), None)]
}

/// A foreign object where mhr's default goes: a route in the default
/// table, a rule pointing at it, a rule at one of its priorities.
fn default_clash(config: &Config, observed: &Observed) -> Option<PlanError> {
    let routing = &config.routing;
    let (protocol, table) = (routing.protocol, routing.default_table());
    let interface = "the default".to_owned();
    if let Some(route) = observed.routes.iter().find(|r| r.table == table && r.protocol != protocol) {
        let object = observed.names().route_args(route);
        return Some(PlanError::TableHasForeignRoute { table, interface, object });
    }
    let mut foreign_rules = observed.rules.iter().filter(|r| r.protocol != protocol);
    if let Some(rule) = foreign_rules.clone().find(|r| r.table == table) {
        return Some(PlanError::TableHasForeignRule { table, interface, object: rule_args(rule) });
    }
    let (suppress, lookup) = routing.default_priorities();
    let rule = foreign_rules.find(|r| r.priority == suppress || r.priority == lookup)?;
    Some(PlanError::PriorityTaken { priority: rule.priority, interface, object: rule_args(rule) })
}

/// Default routes an earlier mhr moved out of main go back where their
/// owner put them once their link can take them (up, with an address of
/// the family) and nothing holds their kernel key.
fn restore_moved(desired: &mut Desired, observed: &Observed, moved: &[MovedRoute]) {
    let mut keys = BTreeSet::new();
    for record in moved {
        let Some(link) = observed.link(&record.interface).filter(|l| l.up) else { continue };
        let family = record.route.family();
        if !observed.addresses_of(link.index).any(|a| a.family() == family) {
            continue;
        }
        let route = Route { interface: Some(link.index), ..record.route.clone() };
        let key = route_key(&route);
        if observed.routes.iter().any(|r| route_key(r) == key) || !keys.insert(key) {
            continue;
        }
        desired.restore.push(MovedRoute { interface: record.interface.clone(), route });
    }
}

/// Tables per uplink (config order): explicit, else the one named in an
/// earlier run, else the lowest free id of `table_range`.
fn allocate_tables(
    config: &Config,
    observed: &Observed,
    registry: &BTreeMap<String, u32>,
) -> Result<Vec<u32>, PlanError> {
    let range = config.routing.tables();
    let protocol = config.routing.protocol;
    let foreign_tables: BTreeSet<u32> = observed
        .routes
        .iter()
        .filter(|r| r.protocol != protocol)
        .map(|r| r.table)
        .chain(observed.rules.iter().filter(|r| r.protocol != protocol).map(|r| r.table))
        .collect();
    // A remembered table is kept unless another uplink now claims it explicitly.
    let explicit: BTreeSet<u32> = config.uplinks.iter().filter_map(|u| u.table).collect();
    let kept = |uplink: &UplinkConfig| {
        uplink.table.or_else(|| {
            registry.get(&uplink.interface).copied().filter(|t| {
                range.contains(t) && !explicit.contains(t) && *t != config.routing.default_table()
            })
        })
    };
    // Tables spoken for: explicit ones, and every registry entry (also of
    // uplinks no longer configured, whose routes are about to go).
    let mut taken = explicit.clone();
    taken.extend(registry.values().copied());
    taken.insert(config.routing.default_table());
    let mut tables = Vec::with_capacity(config.uplinks.len());
    for uplink in &config.uplinks {
        let table = match kept(uplink) {
            Some(table) => table,
            None => {
                let free = range.clone().find(|t| !taken.contains(t) && !foreign_tables.contains(t));
                free.ok_or_else(|| PlanError::TablesExhausted {
                    start: *range.start(),
                    end: *range.end(),
                    interface: uplink.interface.clone(),
                })?
            }
        };
        taken.insert(table);
        tables.push(table);
    }
    Ok(tables)
}

/// Where an uplink's gateway comes from, first found wins: config, a
/// foreign default route in main, in another table, the DHCP client's
/// lease, mhr's own table, a route an earlier mhr moved, the remembered
/// one, point-to-point.
fn learn_gateway(
    config: &Config,
    uplink: &UplinkConfig,
    link: &Link,
    family: Family,
    table: u32,
    observed: &Observed,
    memory: &Memory,
) -> Option<(Gateway, GatewaySource)> {
    let index = link.index;
    let configured = match family {
        Family::V4 => uplink.gateway.map(IpAddr::V4),
        Family::V6 => uplink.gateway6.map(IpAddr::V6),
    };
    if let Some(gateway) = configured {
        return Some((Gateway::Via(gateway), GatewaySource::Config));
    }
    let protocol = config.routing.protocol;
    let defaults = || {
        observed.routes.iter().filter(move |r| {
            r.is_default() && r.family() == family && r.interface == Some(index) && r.gateway.is_some()
        })
    };
    let pick =
        |source, found: Option<&Route>| found.and_then(|r| r.gateway).map(|g| (Gateway::Via(g), source));
    pick(GatewaySource::MainTable, defaults().find(|r| r.table == MAIN_TABLE && r.protocol != protocol))
        .or_else(|| {
            pick(GatewaySource::OtherTable, defaults().find(|r| r.table != table && r.protocol != protocol))
        })
        .or_else(|| {
            // Only a router on one of the link's prefixes: a lease left
            // from another network names nothing here.
            let lease = memory.leases.get(&uplink.interface).filter(|_| family == Family::V4)?;
            let router = IpAddr::V4(lease.router);
            observed
                .addresses_of(index)
                .any(|a| a.network().contains(&router))
                .then_some((Gateway::Via(router), GatewaySource::Lease(lease.keeper)))
        })
        .or_else(|| {
            pick(GatewaySource::Owned, defaults().find(|r| r.table == table && r.protocol == protocol))
        })
        .or_else(|| {
            let recorded =
                memory.moved.iter().find(|m| m.interface == uplink.interface && m.route.family() == family);
            pick(GatewaySource::Moved, recorded.map(|m| &m.route))
        })
        .or_else(|| {
            let remembered = memory.gateways.get(&uplink.interface)?.get(&family)?;
            Some((Gateway::Via(remembered.gateway), GatewaySource::Remembered))
        })
        .or_else(|| link.point_to_point.then_some((Gateway::OnLink, GatewaySource::PointToPoint)))
}

/// The uplink's table: connected prefix routes (with `src` for IPv4), a host
/// route to a gateway outside every prefix, and the default route.
fn table_routes(
    routes: &mut BTreeSet<Route>,
    protocol: u8,
    table: u32,
    index: u32,
    addresses: &[&Address],
    gateway: Gateway,
) {
    let family = addresses[0].family();
    let metric = (family == Family::V6).then_some(IPV6_DEFAULT_METRIC);
    let route = |destination: IpNet, gateway: Option<IpAddr>, source: Option<IpAddr>, scope: u8| Route {
        table,
        destination,
        gateway,
        interface: Some(index),
        source,
        protocol,
        scope,
        metric,
        onlink: false,
        multipath: Vec::new(),
    };
    let source_for = |address: &Address| (family == Family::V4).then_some(address.address);
    let mut seen = BTreeSet::new();
    for address in addresses {
        let network = address.network();
        if network.prefix_len() == network.max_prefix_len() || !seen.insert(network) {
            continue;
        }
        let scope = if family == Family::V4 { SCOPE_LINK } else { SCOPE_UNIVERSE };
        routes.insert(route(network, None, source_for(address), scope));
    }
    match gateway {
        Gateway::Via(via) => {
            let on_link = seen.iter().any(|network| network.contains(&via)) || is_link_local(via);
            if !on_link {
                let scope = if family == Family::V4 { SCOPE_LINK } else { SCOPE_UNIVERSE };
                routes.insert(route(IpNet::from(via), None, source_for(addresses[0]), scope));
            }
            routes.insert(route(family.default_route(), Some(via), None, SCOPE_UNIVERSE));
        }
        Gateway::OnLink => {
            let scope = if family == Family::V4 { SCOPE_LINK } else { SCOPE_UNIVERSE };
            routes.insert(route(family.default_route(), None, None, scope));
        }
    }
}

fn is_link_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Uplinks whose table or priorities a foreign object already uses, with
/// the first such object: one-shot commands refuse before any change, the
/// daemon leaves those uplinks as they are ([`isolate`]).
fn clashes(config: &Config, observed: &Observed, desired: &Desired) -> Vec<(usize, PlanError)> {
    let protocol = config.routing.protocol;
    let names = observed.names();
    let foreign_rules = || observed.rules.iter().filter(|r| r.protocol != protocol);
    let clash = |uplink: &UplinkPlan| {
        let interface = uplink.interface.clone();
        if let Some(route) =
            observed.routes.iter().find(|r| r.table == uplink.table && r.protocol != protocol)
        {
            let object = names.route_args(route);
            return Some(PlanError::TableHasForeignRoute { table: uplink.table, interface, object });
        }
        if let Some(rule) = foreign_rules().find(|r| r.table == uplink.table) {
            let object = rule_args(rule);
            return Some(PlanError::TableHasForeignRule { table: uplink.table, interface, object });
        }
        [uplink.to_priority, uplink.from_priority].into_iter().find_map(|priority| {
            let rule = foreign_rules().find(|r| r.priority == priority)?;
            let (interface, object) = (interface.clone(), rule_args(rule));
            Some(PlanError::PriorityTaken { priority, interface, object })
        })
    };
    desired.uplinks.iter().enumerate().filter_map(|(index, uplink)| Some((index, clash(uplink)?))).collect()
}

/// Leaves uplink `index`'s table and rules exactly as they are (mhr's own
/// included: deleting them would break the uplink's replies) and says why.
fn isolate(desired: &mut Desired, observed: &Observed, protocol: u8, index: usize, clash: &PlanError) {
    let uplink = &mut desired.uplinks[index];
    let (table, priorities) = (uplink.table, [uplink.to_priority, uplink.from_priority]);
    let its_rule = |rule: &Rule| rule.table == table || priorities.contains(&rule.priority);
    desired.rules.retain(|rule| !its_rule(rule));
    desired.routes.retain(|route| route.table != table);
    desired.rules.extend(observed.rules.iter().filter(|r| r.protocol == protocol && its_rule(r)).cloned());
    desired
        .routes
        .extend(observed.routes.iter().filter(|r| r.protocol == protocol && r.table == table).cloned());
    uplink.blocked = Some(clash.to_string());
    desired.notes.push(format!("{}: left as it is: {clash}", uplink.interface));
}

/// One change to the kernel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    AddRoute {
        route: Route,
    },
    /// A route whose key stays but whose gateway, source or device changed.
    ReplaceRoute {
        old: Route,
        new: Route,
    },
    AddRule {
        rule: Rule,
    },
    DeleteRule {
        rule: Rule,
    },
    DeleteRoute {
        route: Route,
    },
    /// Move a foreign default route out of main, recording it for `down`.
    ReleaseDefault {
        route: Route,
        interface: String,
    },
    /// Put a recorded default route back into main.
    RestoreDefault {
        route: Route,
        interface: String,
    },
}

impl Action {
    /// The action that undoes this one.
    pub fn inverse(&self) -> Self {
        match self.clone() {
            Self::AddRoute { route } => Self::DeleteRoute { route },
            Self::ReplaceRoute { old, new } => Self::ReplaceRoute { old: new, new: old },
            Self::DeleteRoute { route } => Self::AddRoute { route },
            Self::AddRule { rule } => Self::DeleteRule { rule },
            Self::DeleteRule { rule } => Self::AddRule { rule },
            Self::ReleaseDefault { route, interface } => Self::RestoreDefault { route, interface },
            Self::RestoreDefault { route, interface } => Self::ReleaseDefault { route, interface },
        }
    }

    /// A short name for metrics (`mhr_drift_corrections_total{kind}`).
    /// Every value of [`Action::kind`], for metrics initialised at zero.
    pub const KINDS: [&'static str; 7] = [
        "route_added",
        "route_replaced",
        "route_deleted",
        "rule_added",
        "rule_deleted",
        "default_moved",
        "default_restored",
    ];

    /// Whether this action undoes drift (someone changed what mhr keeps)
    /// rather than following a change of the host (`before`: what mhr
    /// wanted at the previous reconcile).
    pub fn corrects_drift(&self, before: &Desired) -> bool {
        match self {
            Self::AddRoute { route } => before.routes.contains(route),
            Self::ReplaceRoute { new, .. } => before.routes.contains(new),
            Self::DeleteRoute { route } => !before.routes.contains(route),
            Self::AddRule { rule } => before.rules.contains(rule),
            Self::DeleteRule { rule } => !before.rules.contains(rule),
            Self::ReleaseDefault { .. } | Self::RestoreDefault { .. } => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::AddRoute { .. } => "route_added",
            Self::ReplaceRoute { .. } => "route_replaced",
            Self::DeleteRoute { .. } => "route_deleted",
            Self::AddRule { .. } => "rule_added",
            Self::DeleteRule { .. } => "rule_deleted",
            Self::ReleaseDefault { .. } => "default_moved",
            Self::RestoreDefault { .. } => "default_restored",
        }
    }

    /// The equivalent `ip` command.
    pub fn ip_command(&self, names: &Names) -> String {
        match self {
            Self::ReplaceRoute { new, .. } => names.route_command("replace", new),
            Self::AddRoute { route } | Self::RestoreDefault { route, .. } => {
                names.route_command("add", route)
            }
            Self::DeleteRoute { route } | Self::ReleaseDefault { route, .. } => {
                names.route_command("del", route)
            }
            Self::AddRule { rule } => crate::model::rule_command("add", rule),
            Self::DeleteRule { rule } => crate::model::rule_command("del", rule),
        }
    }

    /// A sentence for people.
    pub fn describe(&self, names: &Names) -> String {
        match self {
            Self::AddRoute { route } => format!("add route {}", names.route_args(route)),
            Self::ReplaceRoute { old, new } => {
                format!("replace route {} with {}", names.route_args(old), names.route_args(new))
            }
            Self::DeleteRoute { route } => format!("delete route {}", names.route_args(route)),
            Self::AddRule { rule } => format!("add rule {}", rule_args(rule)),
            Self::DeleteRule { rule } => format!("delete rule {}", rule_args(rule)),
            Self::ReleaseDefault { route, interface } => {
                format!(
                    "move {interface}'s default route out of main (restored by `mhr down`): {}",
                    names.route_args(route)
                )
            }
            Self::RestoreDefault { route, interface } => {
                format!("restore {interface}'s default route to main: {}", names.route_args(route))
            }
        }
    }
}

/// The fields the kernel identifies a route by (tos is always 0 here):
/// two routes with the same key cannot coexist, one replaces the other.
pub fn route_key(route: &Route) -> (u32, IpNet, u32) {
    (route.table, route.destination, route.metric.unwrap_or(0))
}

/// Actions taking the observed state to the desired one, in a safe order:
/// new routes before the rules that point at them (connected and host
/// routes before the defaults whose gateway they make reachable), a route
/// that changed (new gateway, new source) replaced in place, stale rules
/// before the routes they point at, and main's default (a replace when the
/// active uplink changes) last.
pub fn diff(desired: &Desired, observed: &Observed, protocol: u8) -> Vec<Action> {
    let owned_routes: BTreeSet<&Route> = observed.routes.iter().filter(|r| r.protocol == protocol).collect();
    let owned_rules: BTreeSet<&Rule> = observed.rules.iter().filter(|r| r.protocol == protocol).collect();
    let mut stale: Vec<&Route> =
        owned_routes.iter().copied().filter(|r| !desired.routes.contains(r)).collect();
    let mut route_changes = |routes: Vec<&Route>| -> Vec<Action> {
        routes
            .into_iter()
            .map(|route| match stale.iter().position(|old| route_key(old) == route_key(route)) {
                Some(index) => Action::ReplaceRoute { old: stale.remove(index).clone(), new: route.clone() },
                None => Action::AddRoute { route: route.clone() },
            })
            .collect()
    };
    let missing: Vec<&Route> = desired.routes.iter().filter(|r| !owned_routes.contains(r)).collect();
    let (main_adds, table_adds): (Vec<&Route>, Vec<&Route>) =
        missing.into_iter().partition(|r| r.table == MAIN_TABLE);
    let (defaults, specifics): (Vec<&Route>, Vec<&Route>) =
        table_adds.into_iter().partition(|r| r.is_default());
    let mut actions = route_changes(specifics);
    actions.extend(route_changes(defaults));
    let main_changes = route_changes(main_adds);
    actions.extend(
        desired
            .rules
            .iter()
            .filter(|r| !owned_rules.contains(r))
            .map(|rule| Action::AddRule { rule: rule.clone() }),
    );
    actions.extend(
        owned_rules
            .iter()
            .filter(|r| !desired.rules.contains(r))
            .map(|rule| Action::DeleteRule { rule: (*rule).clone() }),
    );
    actions.extend(stale.into_iter().map(|route| Action::DeleteRoute { route: route.clone() }));
    actions.extend(desired.restore.iter().map(|record| Action::RestoreDefault {
        route: record.route.clone(),
        interface: record.interface.clone(),
    }));
    actions.extend(main_changes);
    actions
}

/// Actions that remove everything mhr owns and put moved routes back.
pub fn teardown(observed: &Observed, protocol: u8, moved: &[MovedRoute]) -> Vec<Action> {
    let mut actions: Vec<Action> = observed
        .rules
        .iter()
        .filter(|r| r.protocol == protocol)
        .map(|rule| Action::DeleteRule { rule: rule.clone() })
        .collect();
    // Restore main's default routes before removing mhr's own routes, so the
    // host never lacks one. A default mhr added in main under the same
    // kernel key is replaced by the restored route; a foreign route that
    // took the key meanwhile (a DHCP client) wins. Records of interfaces
    // that are gone wait for a later `down`.
    let mut keys = BTreeSet::new();
    let mut replaced: Vec<&Route> = Vec::new();
    for record in moved {
        let Some(link) = observed.link(&record.interface) else {
            continue;
        };
        let route = Route { interface: Some(link.index), ..record.route.clone() };
        let key = route_key(&route);
        let holder = observed.routes.iter().find(|r| route_key(r) == key);
        if !keys.insert(key) || holder.is_some_and(|r| r.protocol != protocol) {
            continue;
        }
        match holder {
            Some(owned) => {
                replaced.push(owned);
                actions.push(Action::ReplaceRoute { old: owned.clone(), new: route });
            }
            None => actions.push(Action::RestoreDefault { route, interface: record.interface.clone() }),
        }
    }
    actions.extend(
        observed
            .routes
            .iter()
            .filter(|r| r.protocol == protocol && !replaced.contains(r))
            .map(|route| Action::DeleteRoute { route: route.clone() }),
    );
    actions
}

#[cfg(test)]
mod tests;
