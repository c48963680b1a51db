//! The planner on hand-made host states: the seed host, idempotence,
//! ownership, allocation and every refusal.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use ipnet::IpNet;

use super::*;
use crate::health::judge::{FamilyVerdict, HealthJudge, InstantJudge};
use crate::{
    config::{Config, SourceRules},
    health::Fault,
    model::SCOPE_LINK,
    model::{
        Address, Family, Framing, IPV6_DEFAULT_METRIC, Link, MAIN_TABLE, MovedRoute, NextHop, Observed,
        Route, Rule, SCOPE_UNIVERSE, rule_args,
    },
};

const MHR: u8 = 210;
const BOOT: u8 = 3;
const KERNEL: u8 = 2;
const STATIC: u8 = 4;

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("mhr.toml")).expect("valid config")
}

fn seed_config() -> Config {
    config("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n")
}

fn route(
    table: u32,
    destination: &str,
    gateway: Option<&str>,
    interface: u32,
    protocol: u8,
    metric: Option<u32>,
) -> Route {
    Route {
        table,
        destination: destination.parse().unwrap(),
        gateway: gateway.map(|g| g.parse().unwrap()),
        interface: Some(interface),
        source: None,
        protocol,
        scope: SCOPE_UNIVERSE,
        metric,
        onlink: false,
        multipath: Vec::new(),
        nexthop_group: None,
    }
}

fn kernel_rule(family: Family, priority: u32, table: u32) -> Rule {
    Rule {
        family,
        priority,
        table,
        source: None,
        destination: None,
        protocol: KERNEL,
        suppress_prefixlength: None,
        selectors: Default::default(),
        other_selectors: false,
    }
}

/// The seed lab's host before mhr: both uplinks' default routes in main.
fn seed_host() -> Observed {
    let link = |index, name: &str| Link {
        index,
        name: name.into(),
        up: true,
        carrier: true,
        point_to_point: false,
        framing: Framing::Ethernet,
    };
    let address = |interface, address: &str, prefix_len| Address {
        interface,
        address: address.parse().unwrap(),
        prefix_len,
    };
    let mut routes = vec![
        route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.3.1"), 2, BOOT, Some(100)),
        route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.4.1"), 3, BOOT, Some(200)),
        route(MAIN_TABLE, "::/0", Some("2001:db8:3::1"), 2, BOOT, Some(100)),
        route(MAIN_TABLE, "::/0", Some("2001:db8:4::1"), 3, BOOT, Some(200)),
    ];
    for (index, net) in [(2, "10.0.3.0/24"), (3, "10.0.4.0/24")] {
        routes.push(Route { scope: SCOPE_LINK, ..route(MAIN_TABLE, net, None, index, KERNEL, None) });
    }
    let rules = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|family| [kernel_rule(family, 0, 255), kernel_rule(family, 32766, 254)])
        .collect();
    Observed {
        links: vec![link(1, "lo"), link(2, "ens3"), link(3, "ens4")],
        addresses: vec![
            address(2, "10.0.3.10", 24),
            address(2, "2001:db8:3::10", 64),
            address(3, "10.0.4.10", 24),
            address(3, "2001:db8:4::10", 64),
        ],
        routes,
        rules,
        failed_neighbours: Default::default(),
        unpreferred: Default::default(),
        nexthops: None,
    }
}

/// The host after the kernel carried out `actions`, with the kernel's
/// rules: a route whose key (table, destination, metric) is taken cannot be
/// added, a route via an off-link gateway needs a link route to it first
/// (in its own table, or found by the full lookup the kernel falls back
/// to: main here), and a duplicate rule is refused.
fn after(observed: &Observed, actions: &[Action]) -> Observed {
    let key = |r: &Route| (r.table, r.destination, r.metric.unwrap_or(0));
    let mut next = observed.clone();
    for action in actions {
        match action {
            Action::AddRoute { route } | Action::RestoreDefault { route, .. } => {
                assert!(!next.routes.iter().any(|r| key(r) == key(route)), "EEXIST adding {route:?}");
                if let Some(gateway) = route.gateway.filter(|g| g.is_ipv4() && !route.onlink) {
                    let reachable = next.routes.iter().any(|r| {
                        [route.table, MAIN_TABLE].contains(&r.table)
                            && r.scope == SCOPE_LINK
                            && r.destination.contains(&gateway)
                    });
                    assert!(reachable, "invalid gateway adding {route:?}");
                }
                next.routes.push(route.clone());
            }
            Action::ReplaceRoute { old, new } => {
                assert_eq!(key(old), key(new));
                let slot = next.routes.iter().position(|r| r == old).expect("replacing a route that exists");
                next.routes[slot] = new.clone();
            }
            Action::DeleteRoute { route } | Action::ReleaseDefault { route, .. } => {
                next.routes.retain(|r| r != route)
            }
            Action::AddRule { rule } => {
                assert!(!next.rules.contains(rule), "EEXIST adding {rule:?}");
                next.rules.push(rule.clone());
            }
            Action::DeleteRule { rule } => next.rules.retain(|r| r != rule),
            Action::AddNexthop { nexthop } => {
                let list = next.nexthops.get_or_insert_default();
                assert!(!list.iter().any(|n| n.id == nexthop.id), "EEXIST adding {nexthop:?}");
                for member in nexthop.members() {
                    assert!(list.iter().any(|n| n.id == member.id), "a group before its member {member:?}");
                }
                list.push(nexthop.clone());
            }
            Action::ReplaceNexthop { old, new } => {
                let list = next.nexthops.get_or_insert_default();
                let slot = list.iter().position(|n| n == old).expect("replacing a nexthop that exists");
                list[slot] = new.clone();
            }
            Action::DeleteNexthop { nexthop } => {
                let used = next.routes.iter().any(|r| r.nexthop_group == Some(nexthop.id));
                assert!(!used, "deleting a group a route still uses: {nexthop:?}");
                next.nexthops.get_or_insert_default().retain(|n| n != nexthop);
            }
        }
    }
    next
}

fn memory(registry: &[(&str, u32)], moved: Vec<MovedRoute>) -> Memory {
    Memory {
        registry: registry.iter().map(|(name, table)| ((*name).to_owned(), *table)).collect(),
        moved,
        gateways: Default::default(),
        leases: Default::default(),
        drained: Default::default(),
    }
}

fn plan_with(
    config: &Config,
    observed: &Observed,
    memory: &Memory,
    strictness: Strictness,
) -> Result<Desired, PlanError> {
    desired(config, observed, memory, strictness, &mut InstantJudge::default())
}

fn plan(config: &Config, observed: &Observed) -> Result<(Desired, Vec<Action>), PlanError> {
    let desired = plan_with(config, observed, &Memory::default(), Strictness::Strict)?;
    let actions = diff(&desired, observed, MHR);
    Ok((desired, actions))
}

/// mhr's default table (the last of the default table range).
const DEFAULT: u32 = 7199;

/// mhr's default route through `gateway` on ifindex `interface`.
fn main_default(gateway: &str, interface: u32) -> Route {
    let v6 = gateway.contains(':');
    let destination = if v6 { "::/0" } else { "0.0.0.0/0" };
    route(DEFAULT, destination, Some(gateway), interface, MHR, v6.then_some(IPV6_DEFAULT_METRIC))
}

#[test]
fn seed_host_gets_a_table_rules_and_one_default_in_main() {
    let (desired, actions) = plan(&seed_config(), &seed_host()).unwrap();
    let [ens3, ens4] = &desired.uplinks[..] else { panic!("two uplinks") };
    assert_eq!((ens3.table, ens4.table), (7100, 7101));
    assert_eq!((ens4.to_priority, ens4.from_priority), (7102, 7103));
    assert_eq!(ens4.gateway4, Some((Gateway::Via("10.0.4.1".parse().unwrap()), GatewaySource::MainTable)));

    let table = |t| desired.routes.iter().filter(move |r| r.table == t).cloned().collect::<Vec<_>>();
    let connected = Route {
        source: Some("10.0.4.10".parse().unwrap()),
        scope: SCOPE_LINK,
        ..route(7101, "10.0.4.0/24", None, 3, MHR, None)
    };
    let ens4_table = table(7101);
    assert!(ens4_table.contains(&connected));
    assert!(ens4_table.contains(&route(7101, "0.0.0.0/0", Some("10.0.4.1"), 3, MHR, None)));
    assert!(ens4_table.contains(&route(7101, "::/0", Some("2001:db8:4::1"), 3, MHR, Some(1024))));
    assert!(ens4_table.contains(&route(7101, "2001:db8:4::/64", None, 3, MHR, Some(1024))));
    assert_eq!(ens4_table.len(), 4);
    assert_eq!(
        table(DEFAULT),
        vec![main_default("10.0.3.1", 2), main_default("2001:db8:3::1", 2)],
        "mhr's own default in its default table; main keeps what it had"
    );
    assert_eq!(table(MAIN_TABLE), vec![], "nothing of mhr's in main");
    assert_eq!(desired.active[&Family::V4], vec!["ens3".to_owned()]);

    let from = |source: &str, table, priority| Rule {
        family: Family::of(&source.parse::<IpNet>().unwrap().addr()),
        priority,
        table,
        source: Some(source.parse().unwrap()),
        destination: None,
        protocol: MHR,
        suppress_prefixlength: None,
        selectors: Default::default(),
        other_selectors: false,
    };
    assert!(desired.rules.contains(&from("10.0.4.0/24", 7101, 7103)));
    assert!(desired.rules.contains(&from("2001:db8:4::/64", 7101, 7103)));
    let [suppress, lookup] = default_rules(&seed_config(), Family::V6);
    assert!(desired.rules.contains(&suppress) && desired.rules.contains(&lookup));
    assert_eq!(
        desired.rules.len(),
        4 + 4,
        "one from rule per uplink prefix, no to rules, two to the default per family"
    );

    assert!(desired.restore.is_empty());
    assert_eq!(actions.len(), 8 + 2 + 4 + 4);
    assert!(matches!(actions.first(), Some(Action::AddRoute { .. })));
    let default_route =
        actions.iter().position(|a| *a == Action::AddRoute { route: main_default("2001:db8:3::1", 2) });
    let default_rule = actions.iter().position(|a| *a == Action::AddRule { rule: lookup.clone() });
    assert!(default_route < default_rule, "the default is in its table before the rule leads there");
    assert_eq!(actions.last(), Some(&Action::AddRule { rule: lookup }));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::DeleteRoute { route } if route.protocol != MHR)),
        "the DHCP defaults stay where their owner put them"
    );
}

#[test]
fn planning_again_after_applying_changes_nothing() {
    let config = seed_config();
    let host = seed_host();
    let (_, actions) = plan(&config, &host).unwrap();
    let applied = after(&host, &actions);
    let memory = memory(&[("ens3", 7100), ("ens4", 7101)], Vec::new());
    let desired = plan_with(&config, &applied, &memory, Strictness::Strict).unwrap();
    assert_eq!(
        desired.uplinks[1].gateway4.map(|g| g.1),
        Some(GatewaySource::MainTable),
        "the DHCP default stays in main and still names the gateway"
    );
    assert_eq!(diff(&desired, &applied, MHR), vec![]);
}

#[test]
fn teardown_returns_the_host_to_its_state_before_apply() {
    let config = seed_config();
    let host = seed_host();
    let (_, actions) = plan(&config, &host).unwrap();
    let applied = after(&host, &actions);
    let down = teardown(&applied, MHR, &[]);
    let restored = after(&applied, &down);
    let sorted = |o: &Observed| {
        let mut routes = o.routes.clone();
        routes.sort();
        let mut rules = o.rules.clone();
        rules.sort();
        (routes, rules)
    };
    assert_eq!(sorted(&restored), sorted(&host));
}

/// A host where an earlier mhr moved ens4's DHCP defaults out of main.
fn legacy_host() -> (Observed, Vec<MovedRoute>) {
    let mut host = seed_host();
    let moved: Vec<MovedRoute> = host
        .routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.is_default() && r.interface == Some(3))
        .map(|r| MovedRoute { interface: "ens4".into(), route: r.clone() })
        .collect();
    host.routes.retain(|r| !(r.table == MAIN_TABLE && r.is_default() && r.interface == Some(3)));
    (host, moved)
}

#[test]
fn routes_an_earlier_version_moved_out_of_main_go_back() {
    let (host, moved) = legacy_host();
    assert_eq!(moved.len(), 2);
    let desired = plan_with(&seed_config(), &host, &memory(&[], moved.clone()), Strictness::Strict).unwrap();
    assert_eq!(desired.restore, moved);
    let actions = diff(&desired, &host, MHR);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::RestoreDefault { .. })).count(), 2);
    let applied = after(&host, &actions);
    assert_eq!(after(&applied, &teardown(&applied, MHR, &[])).routes.len(), seed_host().routes.len());

    // A link that is down cannot take its route back yet; `down` keeps it
    // for later and still removes the rest.
    let mut down_link = host.clone();
    down_link.links[2].up = false;
    let desired = plan_with(&seed_config(), &down_link, &memory(&[], moved.clone()), Strictness::Strict);
    assert!(desired.unwrap().restore.is_empty());
}

#[test]
fn a_moved_route_goes_back_once_on_the_links_current_index_with_an_address_of_its_family_and_a_free_key() {
    let (host, moved) = legacy_host();
    let restore = |host: &Observed, moved: Vec<MovedRoute>| {
        plan_with(&seed_config(), host, &memory(&[], moved), Strictness::Tolerant).unwrap().restore
    };
    // Recorded under an old ifindex (the interface was re-created), twice.
    let mut old_index = moved.clone();
    old_index.iter_mut().for_each(|m| m.route.interface = Some(99));
    old_index.extend(old_index.clone());
    let back = restore(&host, old_index);
    assert_eq!(back.len(), 2, "once per route: {back:?}");
    assert!(back.iter().all(|m| m.route.interface == Some(3)), "{back:?}");
    // No IPv6 address on ens4: its IPv6 route waits.
    let mut no_v6 = host.clone();
    no_v6.addresses.retain(|a| !(a.interface == 3 && a.family() == Family::V6));
    let back = restore(&no_v6, moved.clone());
    assert_eq!(back.iter().map(|m| m.route.family()).collect::<Vec<_>>(), vec![Family::V4]);
    // Someone put the IPv4 one back already: its key is taken.
    let mut readded = host.clone();
    readded.routes.push(moved[0].route.clone());
    let back = restore(&readded, moved.clone());
    assert_eq!(back.len(), 1);
    assert_ne!(back[0].route.family(), moved[0].route.family());
}

#[test]
fn gateways_are_learned_from_the_first_source_that_has_one_and_never_from_mhrs_own_main_route() {
    let config = seed_config();
    let (_, actions) = plan(&config, &seed_host()).unwrap();
    let applied = after(&seed_host(), &actions);
    let source = |host: &Observed, memory: &Memory| {
        let desired = plan_with(&config, host, memory, Strictness::Tolerant).unwrap();
        desired.uplinks.iter().find(|u| u.interface == "ens4").and_then(|u| u.gateway4)
    };
    let via = |address: &str| Gateway::Via(address.parse().unwrap());
    let none = Memory::default();
    assert_eq!(source(&applied, &none), Some((via("10.0.4.1"), GatewaySource::MainTable)));

    // The DHCP default leaves main (mhr's own default in main never counts;
    // ens4 holds none now, but it would not count either).
    let mut owned = applied.clone();
    owned.routes.retain(|r| !(r.table == MAIN_TABLE && r.interface == Some(3) && r.protocol == BOOT));
    assert_eq!(source(&owned, &none), Some((via("10.0.4.1"), GatewaySource::Owned)));

    // A DHCP client's default in a table of its own wins over mhr's table.
    let mut other = owned.clone();
    other.routes.push(route(600, "0.0.0.0/0", Some("10.0.4.254"), 3, 16, None));
    assert_eq!(source(&other, &none), Some((via("10.0.4.254"), GatewaySource::OtherTable)));
    // Another interface's default or an IPv6 one there does not count.
    let mut elsewhere = owned.clone();
    elsewhere.routes.push(route(600, "0.0.0.0/0", Some("10.0.3.254"), 2, 16, None));
    elsewhere.routes.push(route(600, "::/0", Some("2001:db8:4::254"), 3, 16, None));
    assert_eq!(source(&elsewhere, &none), Some((via("10.0.4.1"), GatewaySource::Owned)));

    // A foreign default inside mhr's table is not mhr's: it is a foreign
    // object there (the daemon leaves the uplink as it is).
    let mut squatted = owned.clone();
    squatted.routes.retain(|r| !(r.table == 7101 && r.is_default() && r.family() == Family::V4));
    squatted.routes.push(route(7101, "0.0.0.0/0", Some("10.0.4.253"), 3, BOOT, None));
    let desired = plan_with(&config, &squatted, &none, Strictness::Tolerant).unwrap();
    let ens4 = desired.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    assert_ne!(ens4.gateway4.map(|(_, s)| s), Some(GatewaySource::Owned), "{ens4:?}");

    // Nothing in any table: the recorded moved route, then the remembered one.
    let mut bare = owned.clone();
    bare.routes.retain(|r| !(r.interface == Some(3) && r.is_default() && r.family() == Family::V4));
    let moved = vec![MovedRoute {
        interface: "ens4".into(),
        route: route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.4.9"), 3, BOOT, Some(200)),
    }];
    assert_eq!(source(&bare, &memory(&[], moved)), Some((via("10.0.4.9"), GatewaySource::Moved)));
}

#[test]
fn actions_read_as_ip_commands_sentences_and_metric_kinds() {
    let (desired, actions) = plan(&seed_config(), &seed_host()).unwrap();
    let names = seed_host().names();
    let rule = desired.rules.iter().find(|r| r.table == 7101 && r.family == Family::V4).unwrap().clone();
    let add = Action::AddRule { rule: rule.clone() };
    assert_eq!(
        add.ip_command(&names),
        "ip -4 rule add from 10.0.4.0/24 lookup 7101 priority 7103 protocol 210"
    );
    assert_eq!(add.describe(&names), "add rule from 10.0.4.0/24 lookup 7101 priority 7103 protocol 210");
    assert_eq!(add.kind(), "rule_added");
    let first = &actions[0];
    assert!(first.ip_command(&names).starts_with("ip -4 route add "), "{}", first.ip_command(&names));
    assert!(first.describe(&names).starts_with("add route "), "{}", first.describe(&names));
    assert_eq!(Action::DeleteRule { rule }.kind(), "rule_deleted");
    let kinds: BTreeSet<&str> = actions.iter().map(Action::kind).collect();
    assert!(kinds.contains("route_added") && kinds.contains("rule_added"), "{kinds:?}");
}

#[test]
fn a_deletion_is_drift_only_when_mhr_did_not_want_the_object_before() {
    let (desired, _) = plan(&seed_config(), &seed_host()).unwrap();
    let rule = desired.rules.iter().next().unwrap().clone();
    let route = desired.routes.iter().next().unwrap().clone();
    // Deleting what mhr wanted before follows a host change (an address
    // went); deleting what it never wanted undoes someone's addition.
    assert!(!Action::DeleteRule { rule: rule.clone() }.corrects_drift(&desired));
    assert!(!Action::DeleteRoute { route: route.clone() }.corrects_drift(&desired));
    let empty = Desired::default();
    assert!(Action::DeleteRule { rule }.corrects_drift(&empty));
    assert!(Action::DeleteRoute { route }.corrects_drift(&empty));
}

#[test]
fn down_restores_a_moved_route_on_the_current_index_once_and_yields_to_a_foreign_holder() {
    let (host, moved) = legacy_host();
    let mut records = moved.clone();
    records.iter_mut().for_each(|m| m.route.interface = Some(99));
    records.extend(records.clone());
    let restores = |host: &Observed, records: &[MovedRoute]| -> Vec<Route> {
        teardown(host, MHR, records)
            .into_iter()
            .filter_map(|a| match a {
                Action::RestoreDefault { route, .. } | Action::ReplaceRoute { new: route, .. } => Some(route),
                _ => None,
            })
            .collect()
    };
    assert_eq!(restores(&host, &moved).len(), 2, "each record restores its route");
    let back = restores(&host, &records);
    assert_eq!(back.len(), 2, "once each: {back:?}");
    assert!(back.iter().all(|r| r.interface == Some(3)), "{back:?}");
    // A DHCP client put the IPv4 one back already: it stays, not ours.
    let mut taken = host.clone();
    taken.routes.push(moved[0].route.clone());
    let back = restores(&taken, &records);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_ne!(back[0].family(), moved[0].route.family());
}

#[test]
fn foreign_objects_are_never_planned_for_deletion() {
    let mut host = seed_host();
    host.routes.push(route(500, "192.0.2.0/24", None, 2, BOOT, None));
    host.rules
        .push(Rule { source: Some("192.0.2.99/32".parse().unwrap()), ..kernel_rule(Family::V4, 500, 500) });
    let (_, actions) = plan(&seed_config(), &host).unwrap();
    for action in &actions {
        match action {
            Action::DeleteRoute { route } => assert_eq!(route.protocol, MHR),
            Action::DeleteRule { rule } => assert_eq!(rule.protocol, MHR),
            _ => {}
        }
    }
}

#[test]
fn stale_owned_objects_are_removed() {
    let mut host = seed_host();
    let stale = route(7150, "198.18.0.0/15", None, 2, MHR, None);
    host.routes.push(stale.clone());
    let (_, actions) = plan(&seed_config(), &host).unwrap();
    assert!(actions.contains(&Action::DeleteRoute { route: stale }));
}

#[test]
fn an_uplink_keeps_its_table_from_the_registry() {
    let memory = memory(&[("ens4", 7150), ("gone0", 7100)], Vec::new());
    let desired = plan_with(&seed_config(), &seed_host(), &memory, Strictness::Strict).unwrap();
    let tables: Vec<(String, u32)> = desired.uplinks.iter().map(|u| (u.interface.clone(), u.table)).collect();
    assert_eq!(
        tables,
        vec![("ens3".into(), 7101), ("ens4".into(), 7150)],
        "7100 is still spoken for by gone0"
    );
}

#[test]
fn allocation_skips_tables_used_by_foreign_objects() {
    let mut host = seed_host();
    host.routes.push(route(7100, "192.0.2.0/24", None, 2, BOOT, None));
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert_eq!(desired.uplinks[0].table, 7101);
    assert_eq!(desired.uplinks[1].table, 7102);
}

#[test]
fn an_explicit_table_with_foreign_routes_is_refused_naming_both() {
    let mut host = seed_host();
    host.routes.push(route(500, "192.0.2.0/24", None, 2, BOOT, None));
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\ntable = 500\n",
    );
    let err = plan(&config, &host).unwrap_err();
    assert!(
        matches!(err, PlanError::TableHasForeignRoute { table: 500, ref interface, .. } if interface == "ens4")
    );
    assert!(err.to_string().contains("192.0.2.0/24 dev ens3"), "{err}");
}

#[test]
fn a_foreign_rule_on_mhr_priorities_is_refused() {
    let mut host = seed_host();
    host.rules.push(kernel_rule(Family::V4, 7103, 100));
    let err = plan(&seed_config(), &host).unwrap_err();
    assert!(
        matches!(err, PlanError::PriorityTaken { priority: 7103, ref interface, .. } if interface == "ens4"),
        "{err:?}"
    );
}

#[test]
fn an_unknown_interface_is_named() {
    let config =
        config("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens9\"\n");
    let err = plan(&config, &seed_host()).unwrap_err();
    assert_eq!(err.to_string(), "mhr.toml: uplink `ens9` does not exist on this host");
}

#[test]
fn an_unlearnable_gateway_names_the_config_key() {
    let mut host = seed_host();
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(3) && r.family() == Family::V6));
    let err = plan(&seed_config(), &host).unwrap_err();
    assert!(
        matches!(err, PlanError::GatewayUnknown { key: "gateway6", ref interface, .. } if interface == "ens4")
    );
    assert!(err.to_string().contains("set `gateway6`"), "{err}");

    let configured = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\ngateway6 = \"fe80::1\"\n",
    );
    let (desired, _) = plan(&configured, &host).unwrap();
    assert_eq!(
        desired.uplinks[1].gateway6,
        Some((Gateway::Via("fe80::1".parse().unwrap()), GatewaySource::Config))
    );
    assert!(
        !desired.routes.iter().any(|r| r.destination == "fe80::1/128".parse().unwrap()),
        "a link-local gateway needs no host route"
    );
}

#[test]
fn a_point_to_point_uplink_gets_a_default_dev_route() {
    let mut host = seed_host();
    host.links[2].point_to_point = true;
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(3)));
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert_eq!(desired.uplinks[1].gateway4, Some((Gateway::OnLink, GatewaySource::PointToPoint)));
    let default = Route { scope: SCOPE_LINK, ..route(7101, "0.0.0.0/0", None, 3, MHR, None) };
    assert!(desired.routes.contains(&default));
}

#[test]
fn a_gateway_outside_every_prefix_gets_a_host_route() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"172.16.0.1\"\n",
    );
    let (desired, _) = plan(&config, &seed_host()).unwrap();
    let host_route = Route {
        source: Some("10.0.4.10".parse().unwrap()),
        scope: SCOPE_LINK,
        ..route(7101, "172.16.0.1/32", None, 3, MHR, None)
    };
    assert!(desired.routes.contains(&host_route));
}

#[test]
fn a_primary_without_a_default_in_main_gets_one() {
    let mut host = seed_host();
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(2) && r.family() == Family::V4));
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.0.3.1\"\n[[uplink]]\ninterface = \"ens4\"\n",
    );
    let (desired, _) = plan(&config, &host).unwrap();
    assert!(desired.routes.contains(&main_default("10.0.3.1", 2)));
}

#[test]
fn the_seed_layout_is_one_from_and_one_to_rule_per_address() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n[routing]\nto_rules = true\nsource_rules = \"address\"\n",
    );
    let mut host = seed_host();
    host.addresses.push(Address { interface: 3, address: "10.0.4.11".parse().unwrap(), prefix_len: 24 });
    let (desired, _) = plan(&config, &host).unwrap();
    let sources: Vec<String> = desired.rules.iter().filter_map(|r| r.source).map(|s| s.to_string()).collect();
    let destinations = desired.rules.iter().filter_map(|r| r.destination).count();
    assert_eq!(sources.len(), 5, "{sources:?}");
    assert!(sources.contains(&"10.0.4.11/32".to_owned()) && sources.contains(&"10.0.4.10/32".to_owned()));
    assert_eq!(destinations, 5, "a to rule per address");
    let ens4 = desired.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    assert!(desired.rules.iter().filter(|r| r.destination.is_some()).all(|r| r.priority % 2 == 0));
    assert_eq!(ens4.to_priority + 1, ens4.from_priority);
}

#[test]
fn moving_to_prefix_rules_adds_them_before_deleting_the_per_address_rules() {
    let seed_layout = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n[routing]\nto_rules = true\nsource_rules = \"address\"\n",
    );
    let (_, actions) = plan(&seed_layout, &seed_host()).unwrap();
    let upgraded = after(&seed_host(), &actions);
    let (_, actions) = plan(&seed_config(), &upgraded).unwrap();
    let first_delete = actions.iter().position(|a| matches!(a, Action::DeleteRule { .. })).unwrap();
    let last_add = actions.iter().rposition(|a| matches!(a, Action::AddRule { .. })).unwrap();
    assert!(last_add < first_delete, "replies keep a rule throughout: {actions:?}");
    assert_eq!(actions.len(), 4 + 8, "4 prefix rules in, 4 from and 4 to rules out: {actions:?}");
}

/// The sources of mhr's `from` rules for `table`.
fn from_sources(desired: &Desired, table: u32) -> Vec<String> {
    desired
        .rules
        .iter()
        .filter(|r| r.table == table)
        .filter_map(|r| r.source)
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn a_prefix_rule_covers_every_address_of_a_prefix_only_this_uplink_has() {
    let mut host = seed_host();
    for part in 11..=60 {
        host.addresses.push(Address {
            interface: 3,
            address: format!("10.0.4.{part}").parse().unwrap(),
            prefix_len: 24,
        });
    }
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert_eq!(from_sources(&desired, 7101), vec!["10.0.4.0/24", "2001:db8:4::/64"]);
    assert!(desired.rules.iter().all(|r| r.destination.is_none()), "no to rules unless asked for");
}

#[test]
fn uplinks_sharing_a_subnet_get_a_rule_per_address() {
    // Two cloud ENIs in one subnet: a prefix rule would send one's replies
    // through the other's table.
    let mut host = seed_host();
    host.addresses.retain(|a| a.address != "10.0.4.10".parse::<IpAddr>().unwrap());
    host.addresses.push(Address { interface: 3, address: "10.0.3.20".parse().unwrap(), prefix_len: 24 });
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert_eq!(from_sources(&desired, 7100), vec!["10.0.3.10/32", "2001:db8:3::/64"]);
    assert_eq!(from_sources(&desired, 7101), vec!["10.0.3.20/32", "2001:db8:4::/64"]);
}

#[test]
fn a_prefix_holding_another_links_address_is_not_claimed() {
    // A LAN bridge the host routes for, inside the uplink's wide prefix.
    let mut host = seed_host();
    host.links.push(Link {
        index: 9,
        name: "br-lan".into(),
        up: true,
        carrier: true,
        point_to_point: false,
        framing: Framing::Ethernet,
    });
    host.addresses.push(Address { interface: 9, address: "10.0.4.200".parse().unwrap(), prefix_len: 28 });
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert_eq!(from_sources(&desired, 7101), vec!["10.0.4.10/32", "2001:db8:4::/64"]);
    // A zero-length prefix would be a rule for every source, even on a
    // host with no other address.
    let lone = Address { interface: 3, address: "10.0.4.10".parse().unwrap(), prefix_len: 0 };
    let host = Observed { addresses: vec![lone], ..Observed::default() };
    let sources = rule_sources(SourceRules::Prefix, &host, 3, &[&lone]);
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), vec!["10.0.4.10/32".parse::<IpNet>().unwrap()]);
}

#[test]
fn adding_an_address_to_a_claimed_prefix_changes_no_rule_and_sharing_it_splits_the_rule() {
    let config = seed_config();
    let (_, actions) = plan(&config, &seed_host()).unwrap();
    let applied = after(&seed_host(), &actions);
    let mut grown = applied.clone();
    grown.addresses.push(Address { interface: 3, address: "10.0.4.11".parse().unwrap(), prefix_len: 24 });
    let (_, actions) = plan(&config, &grown).unwrap();
    assert!(actions.is_empty(), "{actions:?}");
    // ens3 gains an address in ens4's prefix: ens4's prefix rule becomes
    // per-address rules, and ens3 gets one for its new address.
    grown.addresses.push(Address { interface: 2, address: "10.0.4.12".parse().unwrap(), prefix_len: 24 });
    let (desired, _) = plan(&config, &grown).unwrap();
    assert_eq!(from_sources(&desired, 7101), vec!["10.0.4.10/32", "10.0.4.11/32", "2001:db8:4::/64"]);
    assert!(from_sources(&desired, 7100).contains(&"10.0.4.12/32".to_owned()));
}

#[test]
fn every_action_has_an_inverse_that_undoes_it() {
    let (_, actions) = plan(&seed_config(), &seed_host()).unwrap();
    for action in &actions {
        assert_eq!(&action.inverse().inverse(), action);
    }
    let host = seed_host();
    let undone =
        after(&after(&host, &actions), &actions.iter().rev().map(Action::inverse).collect::<Vec<_>>());
    let mut expected = host.routes.clone();
    expected.sort();
    let mut got = undone.routes.clone();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn tolerant_planning_skips_what_cannot_be_routed_yet() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n[[uplink]]\ninterface = \"ens9\"\n",
    );
    let mut host = seed_host();
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(3) && r.family() == Family::V6));
    assert!(matches!(
        plan_with(&config, &host, &Memory::default(), Strictness::Strict),
        Err(PlanError::GatewayUnknown { .. })
    ));
    let tolerant = plan_with(&config, &host, &Memory::default(), Strictness::Tolerant).unwrap();
    assert_eq!(tolerant.uplinks.len(), 2);
    assert!(
        tolerant.notes.iter().any(|n| n == "ens9: no such interface yet, nothing to route"),
        "{:?}",
        tolerant.notes
    );
    assert!(tolerant.notes.iter().any(|n| n.starts_with("ens4: no IPv6 gateway known yet")));
    assert_eq!(tolerant.uplinks[1].gateway6, None);
    assert!(tolerant.uplinks[1].gateway4.is_some(), "IPv4 is still routed");
}

#[test]
fn an_uplink_whose_link_is_down_takes_no_routes_or_rules() {
    let mut host = seed_host();
    host.links[2].up = false;
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert!(desired.routes.iter().all(|r| r.interface != Some(3)));
    assert!(desired.rules.iter().all(|r| r.table != desired.uplinks[1].table));
    assert!(desired.notes.iter().any(|n| n == "ens4: link is down, nothing to route until it is up"));
}

#[test]
fn a_changed_gateway_replaces_the_route_in_place() {
    let config = seed_config();
    let host = seed_host();
    let (_, actions) = plan(&config, &host).unwrap();
    let mut applied = after(&host, &actions);
    let memory = memory(&[("ens3", 7100), ("ens4", 7101)], Vec::new());
    // DHCP hands ens4 a new gateway: its default in main changes.
    for route in &mut applied.routes {
        if route.table == MAIN_TABLE
            && route.is_default()
            && route.interface == Some(3)
            && route.family() == Family::V4
        {
            route.gateway = Some("10.0.4.2".parse().unwrap());
        }
    }
    let desired = plan_with(&config, &applied, &memory, Strictness::Strict).unwrap();
    let changes = diff(&desired, &applied, MHR);
    let old = route(7101, "0.0.0.0/0", Some("10.0.4.1"), 3, MHR, None);
    let new = route(7101, "0.0.0.0/0", Some("10.0.4.2"), 3, MHR, None);
    assert_eq!(changes, vec![Action::ReplaceRoute { old, new }]);
    let converged = after(&applied, &changes);
    let again = plan_with(&config, &converged, &memory, Strictness::Strict).unwrap();
    assert_eq!(diff(&again, &converged, MHR), vec![]);
}

#[test]
fn a_foreign_default_at_metric_zero_stays_in_main_and_mhrs_choice_still_wins() {
    // networkd's `Gateway=`, ifupdown and dhclient-script: metric 0, on the backup.
    let mut host = seed_host();
    host.routes.push(route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.4.1"), 3, STATIC, None));
    let (desired, actions) = plan(&seed_config(), &host).unwrap();
    assert_eq!(desired.active[&Family::V4], vec!["ens3".to_owned()]);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::DeleteRoute { route } | Action::ReleaseDefault { route, .. } if route.table == MAIN_TABLE)),
        "main's own default is never touched: {actions:?}"
    );
    let [suppress, lookup] = default_rules(&seed_config(), Family::V4);
    assert_eq!(
        rule_args(&suppress),
        "from all lookup main suppress_prefixlength 0 priority 7298 protocol 210"
    );
    assert_eq!(rule_args(&lookup), "from all lookup 7199 priority 7299 protocol 210");
    assert!(desired.rules.contains(&suppress) && desired.rules.contains(&lookup));
    // Host traffic (no source) walks the rules: main without defaults, then mhr's table.
    let applied = after(&host, &actions);
    let chosen = lookup_default(&applied, Family::V4);
    assert_eq!(chosen.map(|r| (r.table, r.gateway)), Some((7199, Some("10.0.3.1".parse().unwrap()))));
    // With mhr's rules gone the host routes as its manager made it.
    let down = after(&applied, &teardown(&applied, MHR, &[]));
    let theirs = lookup_default(&down, Family::V4);
    assert_eq!(theirs.map(|r| (r.table, r.protocol)), Some((MAIN_TABLE, STATIC)));
}

/// The default route a packet without a source finds by the kernel's rule
/// walk (rules in priority order; `suppress_prefixlength 0` refuses defaults).
fn lookup_default(host: &Observed, family: Family) -> Option<Route> {
    let mut rules: Vec<&Rule> =
        host.rules.iter().filter(|r| r.family == family && r.source.is_none()).collect();
    rules.sort_by_key(|r| r.priority);
    let mut walk: Vec<(u32, Option<u32>)> =
        rules.iter().map(|r| (r.table, r.suppress_prefixlength)).collect();
    walk.push((MAIN_TABLE, None));
    walk.into_iter().find_map(|(table, suppress)| {
        host.routes
            .iter()
            .filter(|r| r.table == table && r.is_default() && r.family() == family)
            .filter(|r| suppress.is_none_or(|length| u32::from(r.destination.prefix_len()) > length))
            .min_by_key(|r| r.metric.unwrap_or(0))
            .cloned()
    })
}

#[test]
fn an_earlier_mhrs_default_in_main_moves_to_the_default_table_after_its_rules_are_in() {
    let mut host = seed_host();
    let legacy = route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.3.1"), 2, MHR, Some(50));
    host.routes.push(legacy.clone());
    let desired = plan_with(&seed_config(), &host, &Memory::default(), Strictness::Strict).unwrap();
    assert!(
        desired.notes.iter().any(|n| n.starts_with("upgrade: mhr's IPv4 default moves out of main")),
        "{:?}",
        desired.notes
    );
    let actions = diff(&desired, &host, MHR);
    let deleted = actions.iter().position(|a| *a == Action::DeleteRoute { route: legacy.clone() }).unwrap();
    let [_, lookup] = default_rules(&seed_config(), Family::V4);
    let ruled = actions.iter().position(|a| *a == Action::AddRule { rule: lookup.clone() }).unwrap();
    assert!(ruled < deleted, "the old default goes only once the new one is looked up");
    let applied = after(&host, &actions);
    assert_eq!(lookup_default(&applied, Family::V4).map(|r| r.table), Some(DEFAULT));
}

#[test]
fn a_foreign_object_where_the_default_goes_is_refused_naming_it() {
    let mut taken = seed_host();
    taken.rules.push(kernel_rule(Family::V4, 7299, 500));
    let err = plan(&seed_config(), &taken).unwrap_err();
    assert!(matches!(&err, PlanError::PriorityTaken { priority: 7299, .. }), "{err:?}");
    assert!(err.to_string().contains("lookup 500 priority 7299"), "{err}");
    let tolerant = plan_with(&seed_config(), &taken, &Memory::default(), Strictness::Tolerant).unwrap();
    assert!(tolerant.notes.iter().any(|n| n.contains("default left as it is")), "{:?}", tolerant.notes);
    assert!(!tolerant.rules.iter().any(|r| r.priority >= 7298), "nothing of mhr's goes there");

    let mut occupied = seed_host();
    occupied.routes.push(route(7199, "0.0.0.0/0", Some("10.0.3.1"), 2, BOOT, None));
    let err = plan(&seed_config(), &occupied).unwrap_err();
    assert!(matches!(err, PlanError::TableHasForeignRoute { table: 7199, .. }), "{err:?}");
}

/// Judges uplink families unhealthy by name, as the daemon's health book would.
struct Unhealthy(Vec<(&'static str, Family)>);

impl HealthJudge for Unhealthy {
    fn judge(&mut self, interface: &str, family: Family, link: Option<Fault>, _: bool) -> FamilyVerdict {
        let sick = self.0.iter().any(|(name, f)| *name == interface && *f == family);
        let fault = link.or(sick.then_some(Fault::ProbesFailing));
        FamilyVerdict { family, healthy: fault.is_none(), fault, degraded: false }
    }
}

fn judged(config: &Config, host: &Observed, judge: &mut dyn HealthJudge) -> Desired {
    desired(config, host, &Memory::default(), Strictness::Tolerant, judge).unwrap()
}

fn main_defaults(desired: &Desired) -> Vec<Route> {
    desired.routes.iter().filter(|r| r.table == DEFAULT).cloned().collect()
}

#[test]
fn main_default_fails_over_to_the_next_healthy_uplink_per_family() {
    let three = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n[[uplink]]\ninterface = \"ens5\"\npriority = 1\n",
    );
    let mut host = seed_host();
    host.links.push(Link { index: 4, name: "ens5".into(), ..host.links[1].clone() });
    host.addresses.push(Address { interface: 4, address: "10.0.5.10".parse().unwrap(), prefix_len: 24 });
    host.routes.push(route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.5.1"), 4, BOOT, Some(300)));

    let all_well = judged(&three, &host, &mut Unhealthy(vec![]));
    assert_eq!(all_well.active[&Family::V4], vec!["ens3".to_owned()]);

    let primary_sick = judged(&three, &host, &mut Unhealthy(vec![("ens3", Family::V4)]));
    assert_eq!(all_well.uplinks[0].verdict(Family::V4).map(|v| v.healthy), Some(true));
    assert_eq!(primary_sick.uplinks[0].verdict(Family::V4).and_then(|v| v.fault), Some(Fault::ProbesFailing));
    assert_eq!(
        primary_sick.active[&Family::V4],
        vec!["ens5".to_owned()],
        "priority 1 goes before config order"
    );
    assert!(main_defaults(&primary_sick).contains(&main_default("10.0.5.1", 4)));
    assert!(main_defaults(&primary_sick).contains(&main_default("2001:db8:3::1", 2)), "IPv6 stays on ens3");
    assert_eq!(primary_sick.active[&Family::V6], vec!["ens3".to_owned()]);
    assert!(
        primary_sick.rules.iter().any(|r| r.table == primary_sick.uplinks[0].table),
        "the unhealthy uplink keeps its table and rules: inbound traffic still answers"
    );

    // The kernel drops a downed link's routes; the move to ens4 replaces mhr's default in place.
    let applied = after(&host, &diff(&all_well, &host, MHR));
    let mut applied_down = applied.clone();
    applied_down.links[1].up = false;
    let failover = judged(&three, &applied_down, &mut Unhealthy(vec![("ens5", Family::V4)]));
    assert_eq!(failover.uplinks[0].verdict(Family::V6).and_then(|v| v.fault), Some(Fault::AdminDown));
    assert_eq!(failover.active[&Family::V4], vec!["ens4".to_owned()]);
    let changes = diff(&failover, &applied_down, MHR);
    assert!(
        changes.contains(&Action::ReplaceRoute {
            old: main_default("10.0.3.1", 2),
            new: main_default("10.0.4.1", 3)
        }),
        "{changes:?}"
    );
}

#[test]
fn a_downed_link_with_a_remembered_gateway_is_reported_unhealthy() {
    let mut host = seed_host();
    host.links[1].up = false;
    host.routes.retain(|r| r.interface != Some(2));
    let mut memory = Memory::default();
    memory.gateways.insert(
        "ens3".into(),
        BTreeMap::from([(
            Family::V4,
            crate::model::RememberedGateway {
                gateway: "10.0.3.1".parse().unwrap(),
                learned_from: GatewaySource::MainTable,
            },
        )]),
    );
    let down =
        desired(&seed_config(), &host, &memory, Strictness::Tolerant, &mut InstantJudge::default()).unwrap();
    let verdict = down.uplinks[0].verdict(Family::V4).copied();
    assert_eq!(verdict.and_then(|v| v.fault), Some(Fault::AdminDown));
    assert_eq!(down.active[&Family::V4], vec!["ens4".to_owned()]);

    // Back up with its address but no route anywhere: the remembered gateway serves.
    host.links[1].up = true;
    let back =
        desired(&seed_config(), &host, &memory, Strictness::Tolerant, &mut InstantJudge::default()).unwrap();
    assert_eq!(
        back.uplinks[0].gateway4,
        Some((Gateway::Via("10.0.3.1".parse().unwrap()), GatewaySource::Remembered))
    );
    assert!(back.routes.contains(&route(7100, "0.0.0.0/0", Some("10.0.3.1"), 2, MHR, None)));
}

#[test]
fn with_nothing_healthy_main_keeps_the_default_it_has() {
    let config = seed_config();
    let host = seed_host();
    let all_sick = vec![("ens3", Family::V4), ("ens4", Family::V4)];
    let fresh = judged(&config, &host, &mut Unhealthy(all_sick.clone()));
    assert!(main_defaults(&fresh).contains(&main_default("10.0.3.1", 2)), "the primary, rather than nothing");
    assert!(fresh.notes.iter().any(|n| n.contains("no healthy IPv4 uplink")), "{:?}", fresh.notes);

    let applied =
        after(&host, &diff(&judged(&config, &host, &mut Unhealthy(vec![("ens3", Family::V4)])), &host, MHR));
    let kept = judged(&config, &applied, &mut Unhealthy(all_sick));
    assert!(main_defaults(&kept).contains(&main_default("10.0.4.1", 3)), "the last default stays");
    assert_eq!(diff(&kept, &applied, MHR), vec![]);
    assert!(kept.notes.iter().any(|n| n.starts_with("no healthy IPv4 uplink: keeping")), "{:?}", kept.notes);
}

#[test]
fn neighbour_failure_of_the_gateway_makes_an_instant_judge_fail_the_uplink() {
    let mut host = seed_host();
    host.failed_neighbours.insert((2, "10.0.3.1".parse().unwrap()));
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    assert_eq!(desired.uplinks[0].verdict(Family::V4).and_then(|v| v.fault), Some(Fault::GatewayUnreachable));
    assert_eq!(desired.active[&Family::V4], vec!["ens4".to_owned()]);
    assert_eq!(desired.active[&Family::V6], vec!["ens3".to_owned()]);
}

#[test]
fn balance_spreads_main_over_the_healthy_uplinks_by_weight() {
    let config = config(
        "policy = \"balance\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweight = 3\n[[uplink]]\ninterface = \"ens4\"\n",
    );
    let host = seed_host();
    let both = judged(&config, &host, &mut Unhealthy(vec![]));
    let v4 = main_defaults(&both).into_iter().find(|r| r.family() == Family::V4).unwrap();
    assert_eq!(
        v4.multipath,
        vec![
            NextHop { gateway: Some("10.0.3.1".parse().unwrap()), interface: 2, weight: 3 },
            NextHop { gateway: Some("10.0.4.1".parse().unwrap()), interface: 3, weight: 1 },
        ]
    );
    assert_eq!((v4.gateway, v4.interface, v4.metric), (None, None, None));
    assert_eq!(both.active[&Family::V4], vec!["ens3".to_owned(), "ens4".to_owned()]);
    let one = judged(&config, &host, &mut Unhealthy(vec![("ens3", Family::V4)]));
    assert!(main_defaults(&one).contains(&main_default("10.0.4.1", 3)), "one healthy uplink: a plain route");
}

#[test]
fn a_main_default_via_an_off_link_gateway_is_onlink() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"172.16.0.1\"\n[[uplink]]\ninterface = \"ens4\"\n",
    );
    let (desired, actions) = plan(&config, &seed_host()).unwrap();
    let main = main_defaults(&desired).into_iter().find(|r| r.family() == Family::V4).unwrap();
    assert!(main.onlink, "{main:?}");
    after(&seed_host(), &actions);
}

#[test]
fn a_remembered_table_yields_to_an_explicit_claim() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ntable = 7100\n[[uplink]]\ninterface = \"ens4\"\n",
    );
    let desired =
        plan_with(&config, &seed_host(), &memory(&[("ens4", 7100)], Vec::new()), Strictness::Strict).unwrap();
    let tables: Vec<u32> = desired.uplinks.iter().map(|u| u.table).collect();
    assert_eq!(tables, vec![7100, 7101]);
}

#[test]
fn in_the_daemon_a_clash_blocks_only_its_uplink_and_keeps_what_mhr_has_there() {
    // Applied first, then a foreign rule takes one of ens4's priorities.
    let config = seed_config();
    let (_, actions) = plan(&config, &seed_host()).unwrap();
    let mut host = after(&seed_host(), &actions);
    host.rules.push(kernel_rule(Family::V4, 7103, 100));
    // And ens3 gains an address in a new prefix meanwhile.
    host.addresses.push(Address { interface: 2, address: "10.0.30.20".parse().unwrap(), prefix_len: 24 });
    let tolerant = plan_with(&config, &host, &Memory::default(), Strictness::Tolerant).unwrap();
    let actions = diff(&tolerant, &host, MHR);
    let ens4 = tolerant.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    assert!(ens4.blocked.as_deref().is_some_and(|why| why.contains("priority 7103")), "{ens4:?}");
    assert!(
        tolerant.notes.iter().any(|note| note.starts_with("ens4: left as it is")),
        "{:?}",
        tolerant.notes
    );
    // ens3 goes on (its new address gets its rules); ens4's objects stay.
    assert!(
        actions.iter().any(|a| matches!(a, Action::AddRule { rule } if rule.table == 7100)),
        "{actions:?}"
    );
    assert!(
        actions.iter().all(|a| match a {
            Action::AddRule { rule } | Action::DeleteRule { rule } => rule.table == 7100,
            Action::AddRoute { route } | Action::DeleteRoute { route } => route.table != 7101,
            _ => true,
        }),
        "nothing of ens4's changes: {actions:?}"
    );
    assert!(tolerant.uplinks.iter().find(|u| u.interface == "ens3").unwrap().blocked.is_none());
    // One-shot commands still refuse, before any change.
    assert!(matches!(plan(&config, &host), Err(PlanError::PriorityTaken { priority: 7103, .. })));
}

#[test]
fn drift_is_what_mhr_wanted_before_and_lost_host_changes_are_new_wants() {
    let config = seed_config();
    let (before, actions) = plan(&config, &seed_host()).unwrap();
    let applied = after(&seed_host(), &actions);
    // Someone deletes one of mhr's rules: putting it back corrects drift.
    let mut drifted = applied.clone();
    let lost = drifted.rules.iter().position(|r| r.protocol == MHR).unwrap();
    drifted.rules.remove(lost);
    let (now, actions) = plan(&config, &drifted).unwrap();
    assert_eq!(actions.len(), 1);
    assert!(actions[0].corrects_drift(&before), "{actions:?}");
    // An address in a new prefix appears: its rule follows the host.
    let mut renumbered = applied.clone();
    renumbered.addresses.push(Address {
        interface: 2,
        address: "10.0.30.20".parse().unwrap(),
        prefix_len: 24,
    });
    let (_, actions) = plan(&config, &renumbered).unwrap();
    assert!(!actions.is_empty() && actions.iter().all(|a| !a.corrects_drift(&now)), "{actions:?}");
}

#[test]
fn an_explicit_table_a_foreign_rule_points_at_is_refused() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ntable = 7150\n[[uplink]]\ninterface = \"ens4\"\n",
    );
    let mut host = seed_host();
    host.rules
        .push(Rule { source: Some("192.0.2.0/24".parse().unwrap()), ..kernel_rule(Family::V4, 500, 7150) });
    let err = plan(&config, &host).unwrap_err();
    let PlanError::TableHasForeignRule { table, interface, object } = &err else { panic!("{err:?}") };
    assert_eq!((*table, interface.as_str()), (7150, "ens3"));
    assert!(object.contains("from 192.0.2.0/24 lookup 7150"), "{object}");
}

#[test]
fn a_table_range_with_no_free_table_left_is_refused_not_reused() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n[routing]\ntable_range = [7100, 7101]\ndefault_table = 7000\n",
    );
    let mut host = seed_host();
    // Someone else's route takes one of the two tables.
    host.routes.push(route(7100, "198.51.100.0/24", None, 2, BOOT, None));
    let err = plan(&config, &host).unwrap_err();
    assert_eq!(
        err,
        PlanError::TablesExhausted { start: 7100, end: 7101, interface: "ens4".into() },
        "ens3 takes 7101; nothing is left for ens4"
    );
    assert_eq!(err.to_string(), "no free table left in table_range 7100–7101 for `ens4`");
}

#[test]
fn a_gateway_no_route_names_is_learned_from_the_lease_on_the_links_prefix() {
    // dhclient installed ens3's default only: ens4's failed at metric 0.
    let mut host = seed_host();
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(3) && r.family() == Family::V4));
    let lease = |router: &str| crate::leases::LeaseGateway {
        router: router.parse().unwrap(),
        keeper: crate::model::LeaseKeeper::Dhclient,
    };
    let mut memory = Memory::default();
    memory.leases.insert("ens4".into(), lease("10.0.4.1"));
    let desired = plan_with(&seed_config(), &host, &memory, Strictness::Strict).unwrap();
    let ens4 = desired.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    assert_eq!(
        ens4.gateway4,
        Some((
            Gateway::Via("10.0.4.1".parse().unwrap()),
            GatewaySource::Lease(crate::model::LeaseKeeper::Dhclient)
        ))
    );
    assert_eq!(ens4.gateway4.unwrap().1.to_string(), "dhclient's lease");
    // A lease from another network names nothing here.
    memory.leases.insert("ens4".into(), lease("192.168.1.1"));
    let err = plan_with(&seed_config(), &host, &memory, Strictness::Strict).unwrap_err();
    assert!(matches!(err, PlanError::GatewayUnknown { family: Family::V4, .. }), "{err:?}");
    // A route still wins over the lease.
    let desired = plan_with(&seed_config(), &seed_host(), &memory, Strictness::Strict).unwrap();
    let ens4 = desired.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    assert_eq!(ens4.gateway4.map(|g| g.1), Some(GatewaySource::MainTable));
}

#[test]
fn a_tolerant_plan_lists_what_a_strict_one_refuses_and_an_optional_uplink_is_no_problem() {
    let text = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens5\"\n";
    let strict = plan(&config(text), &seed_host()).unwrap_err();
    let tolerant = plan_with(&config(text), &seed_host(), &Memory::default(), Strictness::Tolerant).unwrap();
    assert_eq!(tolerant.problems, vec![strict]);
    let optional = config(&format!("{text}optional = true\n"));
    let desired = plan_with(&optional, &seed_host(), &Memory::default(), Strictness::Strict).unwrap();
    assert!(desired.problems.is_empty());
    assert!(desired.notes.iter().any(|n| n == "ens5 (optional): no such interface, planned without it"));
    // No gateway for an optional uplink: planned without its family, no error.
    let mut host = seed_host();
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(3) && r.family() == Family::V4));
    let ens4 = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\noptional = true\n",
    );
    let desired = plan_with(&ens4, &host, &Memory::default(), Strictness::Strict).unwrap();
    assert!(desired.problems.is_empty() && desired.uplinks.iter().any(|u| u.interface == "ens4"));
}

#[test]
fn gateways_and_where_they_came_from_read_as_status_prints_them() {
    assert_eq!(Gateway::Via("10.0.4.1".parse().unwrap()).to_string(), "10.0.4.1");
    assert_eq!(Gateway::OnLink.to_string(), "on-link (point-to-point)");
    let sources = [
        (GatewaySource::Config, "config"),
        (GatewaySource::MainTable, "main table"),
        (GatewaySource::OtherTable, "another table"),
        (GatewaySource::Owned, "mhr's table"),
        (GatewaySource::Moved, "the route an earlier mhr moved out of main"),
        (GatewaySource::Remembered, "remembered"),
        (GatewaySource::PointToPoint, "point-to-point link"),
    ];
    for (source, text) in sources {
        assert_eq!(source.to_string(), text);
    }
}

#[test]
fn the_plan_names_each_uplinks_table_and_gateway_per_family() {
    let config = seed_config();
    let (desired, _) = plan(&config, &seed_host()).unwrap();
    let names: Vec<(u32, String)> = desired.table_names(&config).into_iter().collect();
    assert_eq!(
        names,
        vec![(7100, "ens3".to_owned()), (7101, "ens4".to_owned()), (7199, "mhr-default".to_owned())]
    );
    let ens4 = desired.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    assert_eq!(ens4.gateway(Family::V4), Some(Gateway::Via("10.0.4.1".parse().unwrap())));
    assert_eq!(ens4.gateway(Family::V6), Some(Gateway::Via("2001:db8:4::1".parse().unwrap())));
}

#[test]
fn an_uplink_with_an_address_but_no_gateway_is_judged_not_forgotten() {
    let mut host = seed_host();
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(3) && r.family() == Family::V4));
    let desired = plan_with(&seed_config(), &host, &Memory::default(), Strictness::Tolerant).unwrap();
    let ens4 = desired.uplinks.iter().find(|u| u.interface == "ens4").unwrap();
    let verdict = ens4.verdict(Family::V4).expect("a verdict for IPv4");
    assert_eq!((verdict.fault, verdict.healthy), (Some(Fault::NoGateway), false));
}

#[test]
fn a_foreign_default_at_any_metric_leaves_mhrs_choice_alone() {
    for metric in [None, Some(0), Some(50), Some(1024)] {
        let mut host = seed_host();
        host.routes.push(route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.4.1"), 3, KERNEL, metric));
        for strictness in [Strictness::Strict, Strictness::Tolerant] {
            let desired = plan_with(&seed_config(), &host, &Memory::default(), strictness).unwrap();
            assert!(desired.routes.contains(&main_default("10.0.3.1", 2)), "metric {metric:?}");
            assert_eq!(desired.active[&Family::V4], vec!["ens3".to_owned()]);
        }
    }
}

#[test]
fn a_point_to_point_primary_gets_an_on_link_default_of_link_scope_in_ipv4() {
    let mut host = seed_host();
    host.links.iter_mut().filter(|l| l.name == "ens3").for_each(|l| l.point_to_point = true);
    host.routes.retain(|r| !(r.is_default() && r.interface == Some(2)));
    let (desired, _) = plan(&seed_config(), &host).unwrap();
    let main_defaults: Vec<&Route> =
        desired.routes.iter().filter(|r| r.table == DEFAULT && r.is_default()).collect();
    let v4 = main_defaults.iter().find(|r| r.family() == Family::V4).unwrap();
    assert_eq!((v4.gateway, v4.interface, v4.scope), (None, Some(2), SCOPE_LINK), "{v4:?}");
    let v6 = main_defaults.iter().find(|r| r.family() == Family::V6).unwrap();
    assert_eq!((v6.gateway, v6.scope), (None, SCOPE_UNIVERSE), "{v6:?}");
}

/// Generated hosts: the planner's promises hold for any of them.
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One uplink: IPv4 host parts in 10.<i>.0.0/24, maybe an IPv6
    /// address, the metric of its DHCP-style default route.
    #[derive(Clone, Debug)]
    struct GeneratedUplink {
        hosts: Vec<u8>,
        ipv6: bool,
        metric: u32,
        /// A further address in up0's subnet (shared prefix, as two cloud
        /// ENIs in one subnet).
        shared: bool,
    }

    fn uplink() -> impl Strategy<Value = GeneratedUplink> {
        (proptest::collection::btree_set(2u8..240, 1..4), any::<bool>(), 1u32..1000, any::<bool>()).prop_map(
            |(hosts, ipv6, metric, shared)| GeneratedUplink {
                hosts: hosts.into_iter().collect(),
                ipv6,
                metric: metric + 100,
                shared,
            },
        )
    }

    /// The table the kernel's rule walk picks for `source` sending to a
    /// remote address (first match by priority, past the local table;
    /// ties in insertion order do not arise among mhr's).
    fn table_for(rules: &[Rule], source: IpAddr) -> Option<u32> {
        let mut sorted: Vec<&Rule> = rules.iter().collect();
        sorted.sort_by_key(|r| r.priority);
        sorted
            .into_iter()
            .filter(|r| r.family == Family::of(&source) && r.destination.is_none() && r.table != 255)
            .find(|r| r.source.is_none_or(|s| s.contains(&source)))
            .map(|r| r.table)
    }

    fn host_and_config(uplinks: &[GeneratedUplink], to_rules: bool, layout: &str) -> (Observed, Config) {
        let mut host = Observed {
            rules: [Family::V4, Family::V6]
                .into_iter()
                .flat_map(|family| [kernel_rule(family, 0, 255), kernel_rule(family, 32766, 254)])
                .collect(),
            ..Observed::default()
        };
        host.links.push(Link {
            index: 1,
            name: "lo".into(),
            up: true,
            carrier: true,
            point_to_point: false,
            framing: Framing::Other,
        });
        // Someone else's routing, which mhr must never touch.
        host.routes.push(route(100, "192.0.2.0/24", Some("10.0.0.1"), 2, BOOT, None));
        let mut text = String::new();
        for (i, generated) in uplinks.iter().enumerate() {
            let index = u32::try_from(i).unwrap() + 2;
            let name = format!("up{i}");
            host.links.push(Link {
                index,
                name: name.clone(),
                up: true,
                carrier: true,
                point_to_point: false,
                framing: Framing::Ethernet,
            });
            for part in &generated.hosts {
                host.addresses.push(Address {
                    interface: index,
                    address: format!("10.{i}.0.{part}").parse().unwrap(),
                    prefix_len: 24,
                });
            }
            if generated.shared && i > 0 {
                host.addresses.push(Address {
                    interface: index,
                    address: format!("10.0.0.{}", 240 + i).parse().unwrap(),
                    prefix_len: 24,
                });
            }
            let link_route = route(MAIN_TABLE, &format!("10.{i}.0.0/24"), None, index, KERNEL, None);
            host.routes.push(Route { scope: SCOPE_LINK, ..link_route });
            let gateway = format!("10.{i}.0.1");
            host.routes.push(route(
                MAIN_TABLE,
                "0.0.0.0/0",
                Some(&gateway),
                index,
                BOOT,
                Some(generated.metric + u32::try_from(i).unwrap()),
            ));
            if generated.ipv6 {
                host.addresses.push(Address {
                    interface: index,
                    address: format!("2001:db8:{i}::10").parse().unwrap(),
                    prefix_len: 64,
                });
                let gateway6 = format!("2001:db8:{i}::1");
                host.routes.push(route(
                    MAIN_TABLE,
                    "::/0",
                    Some(&gateway6),
                    index,
                    BOOT,
                    Some(generated.metric),
                ));
            }
            let primary = if i == 0 { "primary = true\n" } else { "" };
            text += &format!("[[uplink]]\ninterface = \"{name}\"\n{primary}");
        }
        text += &format!("[routing]\nto_rules = {to_rules}\nsource_rules = \"{layout}\"\n");
        (host, config(&text))
    }

    fn sorted(observed: &Observed) -> (Vec<Route>, Vec<Rule>) {
        let mut routes = observed.routes.clone();
        routes.sort();
        let mut rules = observed.rules.clone();
        rules.sort();
        (routes, rules)
    }

    fn owned_only(actions: &[Action]) -> bool {
        actions.iter().all(|action| match action {
            Action::AddRoute { route } | Action::DeleteRoute { route } => route.protocol == MHR,
            Action::ReplaceRoute { old, new } => old.protocol == MHR && new.protocol == MHR,
            Action::AddRule { rule } | Action::DeleteRule { rule } => rule.protocol == MHR,
            Action::ReleaseDefault { .. } | Action::RestoreDefault { .. } => false,
            Action::AddNexthop { nexthop } | Action::DeleteNexthop { nexthop } => nexthop.protocol == MHR,
            Action::ReplaceNexthop { old, new } => old.protocol == MHR && new.protocol == MHR,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn apply_converges_touches_only_its_own_and_teardown_restores_exactly(
            uplinks in proptest::collection::vec(uplink(), 1..5),
            to_rules in any::<bool>(),
            layout in prop_oneof![Just("prefix"), Just("address")],
        ) {
            let (host, config) = host_and_config(&uplinks, to_rules, layout);
            let (desired, actions) = plan(&config, &host).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(owned_only(&actions), "{actions:?}");
            let applied = after(&host, &actions);
            // Every address's replies look up its own uplink's table.
            for address in &host.addresses {
                let Some(uplink) = desired.uplinks.iter().find(|u| u.index == address.interface) else { continue };
                prop_assert_eq!(table_for(&applied.rules, address.address), Some(uplink.table), "{}", address.address);
            }
            let (_, again) = plan(&config, &applied).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(again.is_empty(), "a second plan changes nothing: {again:?}");
            let down = teardown(&applied, MHR, &[]);
            prop_assert!(owned_only(&down), "{down:?}");
            prop_assert_eq!(sorted(&after(&applied, &down)), sorted(&host));
        }
    }
}

mod balance;
