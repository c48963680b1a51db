//! The planner on hand-made host states: the seed host, idempotence,
//! ownership, allocation and every refusal.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use super::*;
use crate::{config::Config, model::SCOPE_LINK, observe::Link};

const MHR: u8 = 210;
const BOOT: u8 = 3;
const KERNEL: u8 = 2;

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
        ethernet: true,
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
    }
}

/// The host after the kernel carried out `actions`, with the kernel's
/// rules: a route whose key (table, destination, metric) is taken cannot be
/// added, a route via an off-link gateway needs a link route to it first,
/// and a duplicate rule is refused.
fn after(observed: &Observed, actions: &[Action]) -> Observed {
    let key = |r: &Route| (r.table, r.destination, r.metric.unwrap_or(0));
    let mut next = observed.clone();
    for action in actions {
        match action {
            Action::AddRoute { route } | Action::RestoreDefault { route, .. } => {
                assert!(!next.routes.iter().any(|r| key(r) == key(route)), "EEXIST adding {route:?}");
                if let Some(gateway) = route.gateway.filter(|g| g.is_ipv4()) {
                    let reachable = next.routes.iter().any(|r| {
                        r.table == route.table && r.scope == SCOPE_LINK && r.destination.contains(&gateway)
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
        }
    }
    next
}

fn moved_records(actions: &[Action]) -> Vec<MovedRoute> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::ReleaseDefault { route, interface } => {
                Some(MovedRoute { interface: interface.clone(), route: route.clone() })
            }
            _ => None,
        })
        .collect()
}

fn plan(config: &Config, observed: &Observed) -> Result<(Desired, Vec<Action>), PlanError> {
    let desired = desired(config, observed, &BTreeMap::new(), &[], Strictness::Strict)?;
    let actions = diff(&desired, observed, MHR);
    Ok((desired, actions))
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
    assert!(table(MAIN_TABLE).is_empty(), "the primary's default is already in main");

    let from = |address: &str, table, priority| Rule {
        family: Family::of(&address.parse::<IpAddr>().unwrap()),
        priority,
        table,
        source: Some(IpNet::from(address.parse::<IpAddr>().unwrap())),
        destination: None,
        protocol: MHR,
        other_selectors: false,
    };
    assert!(desired.rules.contains(&from("10.0.4.10", 7101, 7103)));
    assert!(desired.rules.contains(&from("2001:db8:4::10", 7101, 7103)));
    assert_eq!(desired.rules.len(), 8, "from and to rules for four addresses");

    let released: Vec<&Route> = desired.release.iter().collect();
    assert_eq!(released.len(), 2, "ens4's v4 and v6 defaults leave main");
    assert!(released.iter().all(|r| r.interface == Some(3) && r.table == MAIN_TABLE));

    assert_eq!(actions.len(), 8 + 8 + 2);
    assert!(matches!(actions.first(), Some(Action::AddRoute { .. })));
    assert!(matches!(actions.last(), Some(Action::ReleaseDefault { interface, .. }) if interface == "ens4"));
}

#[test]
fn planning_again_after_applying_changes_nothing() {
    let config = seed_config();
    let host = seed_host();
    let (_, actions) = plan(&config, &host).unwrap();
    let applied = after(&host, &actions);
    let moved = moved_records(&actions);
    let registry = BTreeMap::from([("ens3".into(), 7100), ("ens4".into(), 7101)]);
    let desired = desired(&config, &applied, &registry, &moved, Strictness::Strict).unwrap();
    assert_eq!(
        desired.uplinks[1].gateway4.map(|g| g.1),
        Some(GatewaySource::Owned),
        "learned from mhr's own table now"
    );
    assert_eq!(diff(&desired, &applied, MHR), vec![]);
}

#[test]
fn teardown_returns_the_host_to_its_state_before_apply() {
    let config = seed_config();
    let host = seed_host();
    let (_, actions) = plan(&config, &host).unwrap();
    let applied = after(&host, &actions);
    let down = teardown(&applied, MHR, &moved_records(&actions));
    let restored = after(&applied, &down);
    let sorted = |o: &Observed| {
        let mut routes = o.routes.clone();
        routes.sort();
        let mut rules = o.rules.clone();
        rules.sort();
        (routes, rules)
    };
    assert_eq!(sorted(&restored), sorted(&host));
    let first_delete = down.iter().position(|a| matches!(a, Action::DeleteRoute { .. })).unwrap();
    let last_restore = down.iter().rposition(|a| matches!(a, Action::RestoreDefault { .. })).unwrap();
    assert!(last_restore < first_delete, "main gets its routes back before mhr's copies go");
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
    let registry = BTreeMap::from([("ens4".into(), 7150), ("gone0".into(), 7100)]);
    let desired = desired(&seed_config(), &seed_host(), &registry, &[], Strictness::Strict).unwrap();
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
    assert!(desired.routes.contains(&route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.3.1"), 2, MHR, None)));
}

#[test]
fn without_to_rules_only_from_rules_are_planned() {
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n[routing]\nto_rules = false\n",
    );
    let (desired, _) = plan(&config, &seed_host()).unwrap();
    assert_eq!(desired.rules.len(), 4);
    assert!(desired.rules.iter().all(|r| r.destination.is_none()));
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
        desired(&config, &host, &BTreeMap::new(), &[], Strictness::Strict),
        Err(PlanError::GatewayUnknown { .. })
    ));
    let tolerant = desired(&config, &host, &BTreeMap::new(), &[], Strictness::Tolerant).unwrap();
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
    let registry = BTreeMap::from([("ens3".into(), 7100), ("ens4".into(), 7101)]);
    // DHCP hands ens4 a new gateway: a new default route appears in main.
    applied.routes.push(route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.4.2"), 3, 16, Some(200)));
    let desired =
        desired(&config, &applied, &registry, &moved_records(&actions), Strictness::Strict).unwrap();
    let changes = diff(&desired, &applied, MHR);
    let old = route(7101, "0.0.0.0/0", Some("10.0.4.1"), 3, MHR, None);
    let new = route(7101, "0.0.0.0/0", Some("10.0.4.2"), 3, MHR, None);
    assert!(changes.contains(&Action::ReplaceRoute { old, new }), "{changes:?}");
    let converged = after(&applied, &changes);
    let mut moved = moved_records(&actions);
    moved.extend(moved_records(&changes));
    let again = desired_state(&config, &converged, &registry, &moved);
    assert_eq!(diff(&again, &converged, MHR), vec![]);
}

fn desired_state(
    config: &Config,
    observed: &Observed,
    registry: &BTreeMap<String, u32>,
    moved: &[MovedRoute],
) -> Desired {
    desired(config, observed, registry, moved, Strictness::Strict).unwrap()
}

#[test]
fn the_primary_default_is_added_after_main_is_cleared_and_host_routes_before_defaults() {
    let mut host = seed_host();
    // Both DHCP defaults at metric 0, and the primary's missing from main.
    host.routes.retain(|r| !(r.is_default() && r.family() == Family::V4));
    host.routes.push(route(MAIN_TABLE, "0.0.0.0/0", Some("10.0.4.1"), 3, BOOT, None));
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.0.3.1\"\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"172.16.0.1\"\n",
    );
    let (_, actions) = plan(&config, &host).unwrap();
    // `after` panics on EEXIST and on a gateway without a link route.
    let applied = after(&host, &actions);
    let defaults: Vec<&Route> = applied
        .routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.is_default() && r.family() == Family::V4)
        .collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0].interface, Some(2));

    // And back: mhr's default in main gives its key back to the moved one.
    let down = teardown(&applied, MHR, &moved_records(&actions));
    let restored = after(&applied, &down);
    let sorted = |o: &Observed| {
        let mut routes = o.routes.clone();
        routes.sort();
        routes
    };
    assert_eq!(sorted(&restored), sorted(&host));
}

#[test]
fn a_remembered_table_yields_to_an_explicit_claim() {
    let registry = BTreeMap::from([("ens4".into(), 7100)]);
    let config = config(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ntable = 7100\n[[uplink]]\ninterface = \"ens4\"\n",
    );
    let desired = desired_state(&config, &seed_host(), &registry, &[]);
    let tables: Vec<u32> = desired.uplinks.iter().map(|u| u.table).collect();
    assert_eq!(tables, vec![7100, 7101]);
}
