//! Balance on a kernel with nexthop objects: a resilient group that keeps
//! its healthy members' buckets when one leaves.

use super::*;
use crate::model::{GroupMember, Nexthop, NexthopKind, nexthop};

fn balance() -> Config {
    config(
        "policy = \"balance\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweight = 3\n[[uplink]]\ninterface = \"ens4\"\n",
    )
}

fn host_with_nexthops() -> Observed {
    Observed { nexthops: Some(Vec::new()), ..seed_host() }
}

fn group(desired: &Desired, family: Family) -> Nexthop {
    let id = nexthop::group_id(family);
    desired.nexthops.iter().find(|n| n.id == id).cloned().expect("balance's group")
}

#[test]
fn balance_installs_members_then_a_resilient_group_then_the_route_on_it() {
    let host = host_with_nexthops();
    let (desired, actions) = plan(&balance(), &host).unwrap();
    let v4 = main_defaults(&desired).into_iter().find(|r| r.family() == Family::V4).unwrap();
    assert_eq!(v4.nexthop_group, Some(nexthop::group_id(Family::V4)));
    assert_eq!(v4.multipath.len(), 2, "the route carries the group's next hops as the kernel reports them");
    let NexthopKind::Resilient { members, buckets, .. } = group(&desired, Family::V4).kind else {
        panic!("a resilient group")
    };
    assert_eq!(
        members,
        vec![
            GroupMember { id: nexthop::member_id(0, Family::V4), weight: 3 },
            GroupMember { id: nexthop::member_id(1, Family::V4), weight: 1 },
        ]
    );
    assert_eq!(buckets, nexthop::GROUP_BUCKETS);
    let position = |found: &dyn Fn(&Action) -> bool| actions.iter().position(found).unwrap();
    let group_added = position(&|a| matches!(a, Action::AddNexthop { nexthop } if nexthop.is_group()));
    let route_added = position(&|a| matches!(a, Action::AddRoute { route } if route.nexthop_group.is_some()));
    assert!(group_added < route_added);
    let applied = after(&host, &actions);
    assert_eq!(plan(&balance(), &applied).unwrap().1, vec![], "idempotent");
    let down = after(&applied, &teardown(&applied, MHR, &[]));
    assert_eq!(down.nexthops, Some(Vec::new()), "down removes every nexthop mhr made");
}

#[test]
fn losing_an_uplink_replaces_the_group_in_place_and_only_then_drops_its_member() {
    let host = host_with_nexthops();
    let applied = after(&host, &plan(&balance(), &host).unwrap().1);
    let one = judged(&balance(), &applied, &mut Unhealthy(vec![("ens3", Family::V4)]));
    let actions = diff(&one, &applied, MHR);
    let v4_group = nexthop::group_id(Family::V4);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::DeleteNexthop { nexthop } if nexthop.id == v4_group)),
        "the group stays: deleting it would reshuffle every bucket"
    );
    let replaced =
        actions.iter().position(|a| matches!(a, Action::ReplaceNexthop { new, .. } if new.id == v4_group));
    let dropped = actions.iter().position(
        |a| matches!(a, Action::DeleteNexthop { nexthop } if nexthop.id == nexthop::member_id(0, Family::V4)),
    );
    assert!(replaced.unwrap() < dropped.unwrap());
    assert_eq!(
        group(&one, Family::V4).members(),
        [GroupMember { id: nexthop::member_id(1, Family::V4), weight: 1 }]
    );
    let moved = after(&applied, &actions);
    let v4 = main_defaults(&one).into_iter().find(|r| r.family() == Family::V4).unwrap();
    assert_eq!((v4.interface, v4.multipath.len()), (Some(3), 0), "one member: reported as a plain path");
    assert_eq!(diff(&one, &moved, MHR), vec![]);
}

#[test]
fn an_id_someone_else_holds_leaves_balance_on_a_plain_multipath_route() {
    let mut host = host_with_nexthops();
    let foreign = Nexthop { id: nexthop::group_id(Family::V4), protocol: 11, kind: NexthopKind::Other };
    host.nexthops = Some(vec![foreign]);
    let (desired, _) = plan(&balance(), &host).unwrap();
    let v4 = main_defaults(&desired).into_iter().find(|r| r.family() == Family::V4).unwrap();
    assert_eq!((v4.nexthop_group, v4.multipath.len()), (None, 2));
    assert!(desired.notes.iter().any(|n| n.contains("taken by protocol 11")), "{:?}", desired.notes);
    let v6 = main_defaults(&desired).into_iter().find(|r| r.family() == Family::V6).unwrap();
    assert_eq!(v6.nexthop_group, Some(nexthop::group_id(Family::V6)), "the other family is unaffected");
}

#[test]
fn failover_makes_no_nexthop_objects() {
    let (desired, _) = plan(&seed_config(), &host_with_nexthops()).unwrap();
    assert!(desired.nexthops.is_empty());
    assert!(main_defaults(&desired).iter().all(|r| r.nexthop_group.is_none()));
}
