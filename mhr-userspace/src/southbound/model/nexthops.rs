//! Nexthop objects in the model, with the kernel's rules for them: an id
//! holds one (EEXIST), a group's members must exist (EINVAL), a route on
//! a group reports the group's next hops, a link going down takes its
//! nexthops out of every group (a group left empty goes, with the routes
//! on it), and deleting a group deletes the routes on it. Also their text
//! form (`ip nexthop add …` lines).

use super::State;
use crate::{
    model::{Family, GroupMember, MAIN_TABLE, NextHop, Nexthop, NexthopKind, Observed, Route, SCOPE_LINK},
    southbound::KernelError,
};

impl State {
    fn nexthops(&self) -> &[Nexthop] {
        self.host.nexthops.as_deref().unwrap_or_default()
    }

    pub(super) fn add_nexthop(&mut self, nexthop: &Nexthop, replace: bool) -> Result<(), KernelError> {
        let Some(present) = &self.host.nexthops else { return Err(KernelError::Refused(libc::EOPNOTSUPP)) };
        let exists = present.iter().any(|n| n.id == nexthop.id);
        if exists && !replace {
            return Err(KernelError::Refused(libc::EEXIST));
        }
        self.check_nexthop(nexthop)?;
        let list = self.host.nexthops.get_or_insert_default();
        list.retain(|n| n.id != nexthop.id);
        list.push(nexthop.clone());
        self.expand_routes();
        Ok(())
    }

    pub(super) fn delete_nexthop(&mut self, id: u32) -> Result<(), KernelError> {
        if !self.nexthops().iter().any(|n| n.id == id) {
            return Err(KernelError::Refused(libc::ENOENT));
        }
        self.drop_nexthops(|n| n.id == id);
        Ok(())
    }

    /// A link going down or away takes the nexthops on it.
    pub(super) fn nexthops_gone_with_link(&mut self, index: u32) {
        self.drop_nexthops(|n| matches!(n.kind, NexthopKind::Via { interface, .. } if interface == index));
    }

    /// Removes the nexthops `gone` picks, out of every group too; groups
    /// left empty go, and routes on a group that went.
    fn drop_nexthops(&mut self, gone: impl Fn(&Nexthop) -> bool) {
        let Some(list) = self.host.nexthops.as_mut() else { return };
        let removed: Vec<u32> = list.iter().filter(|n| gone(n)).map(|n| n.id).collect();
        list.retain(|n| !removed.contains(&n.id));
        for group in list.iter_mut() {
            if let NexthopKind::Resilient { members, .. } = &mut group.kind {
                members.retain(|m| !removed.contains(&m.id));
            }
        }
        let emptied: Vec<u32> =
            list.iter().filter(|n| n.is_group() && n.members().is_empty()).map(|n| n.id).collect();
        list.retain(|n| !emptied.contains(&n.id));
        let orphaned: Vec<u32> = removed.into_iter().chain(emptied).collect();
        self.remove_routes(|r| r.nexthop_group.is_some_and(|id| orphaned.contains(&id)));
        self.expand_routes();
    }

    fn check_nexthop(&self, nexthop: &Nexthop) -> Result<(), KernelError> {
        match &nexthop.kind {
            NexthopKind::Via { family, gateway, interface, onlink } => {
                let Some(link) = self.host.links.iter().find(|l| l.index == *interface) else {
                    return Err(KernelError::Refused(libc::ENODEV));
                };
                if !link.up {
                    return Err(KernelError::Refused(libc::ENETDOWN));
                }
                let Some(gateway) = gateway.filter(|_| !onlink && *family == Family::V4) else {
                    return Ok(());
                };
                let reachable = self.host.routes.iter().any(|r| {
                    r.table == MAIN_TABLE
                        && r.scope == SCOPE_LINK
                        && r.interface == Some(*interface)
                        && r.destination.contains(&gateway)
                });
                if reachable { Ok(()) } else { Err(KernelError::Refused(libc::ENETUNREACH)) }
            }
            NexthopKind::Resilient { members, .. } => {
                let single = |m: &GroupMember| self.nexthops().iter().any(|n| n.id == m.id && !n.is_group());
                if members.is_empty() || !members.iter().all(single) {
                    return Err(KernelError::Refused(libc::EINVAL));
                }
                Ok(())
            }
            NexthopKind::Other => Err(KernelError::Refused(libc::EINVAL)),
        }
    }

    /// `route` as the kernel reports it: a route on a group carries the
    /// group's next hops. EINVAL when the group does not exist.
    pub(super) fn expanded(&self, route: &Route) -> Result<Route, KernelError> {
        let Some(id) = route.nexthop_group else { return Ok(route.clone()) };
        expand(self.nexthops(), route, id).ok_or(KernelError::Refused(libc::EINVAL))
    }

    fn expand_routes(&mut self) {
        let nexthops = self.nexthops().to_vec();
        for route in &mut self.host.routes {
            if let Some(id) = route.nexthop_group
                && let Some(expanded) = expand(&nexthops, route, id)
            {
                *route = expanded;
            }
        }
    }
}

fn expand(nexthops: &[Nexthop], route: &Route, id: u32) -> Option<Route> {
    let group = nexthops.iter().find(|n| n.id == id)?;
    let via = |member: GroupMember| {
        nexthops.iter().find(|n| n.id == member.id).and_then(|n| match n.kind {
            NexthopKind::Via { gateway, interface, .. } => {
                Some(NextHop { gateway, interface, weight: member.weight })
            }
            _ => None,
        })
    };
    let hops: Vec<NextHop> = match &group.kind {
        NexthopKind::Resilient { members, .. } => members.iter().copied().filter_map(via).collect(),
        NexthopKind::Via { .. } => via(GroupMember { id, weight: 1 }).into_iter().collect(),
        NexthopKind::Other => Vec::new(),
    };
    let mut route = Route { gateway: None, interface: None, onlink: false, multipath: hops, ..route.clone() };
    if let [only] = route.multipath.as_slice() {
        route.gateway = only.gateway;
        route.interface = Some(only.interface);
        route.multipath.clear();
    }
    Some(route)
}

/// After parsing: the routes on groups report the groups' next hops.
pub(super) fn expand_parsed(host: &mut Observed) {
    let nexthops = host.nexthops.clone().unwrap_or_default();
    for route in &mut host.routes {
        if let Some(id) = route.nexthop_group
            && let Some(expanded) = expand(&nexthops, route, id)
        {
            *route = expanded;
        }
    }
}

/// An `ip [-4|-6] nexthop add id N …` line's arguments after `add`.
pub(super) fn parse(
    family: Option<Family>,
    args: &[&str],
    index_of: impl Fn(&str) -> Result<u32, String>,
) -> Result<Nexthop, String> {
    let mut words = args.iter().copied();
    let mut next = |what: &str| words.next().ok_or_else(|| format!("{what} needs a value"));
    let ["id", ..] = args else { return Err("a nexthop starts with id N".to_owned()) };
    next("id")?;
    let id = next("id")?.parse().map_err(|_| "bad nexthop id".to_owned())?;
    let (mut gateway, mut interface, mut onlink, mut protocol) = (None, None, false, 0);
    let mut group: Option<Vec<GroupMember>> = None;
    let (mut buckets, mut idle_timer, mut unbalanced_timer) = (128, 120, 0);
    while let Ok(word) = next("") {
        match word {
            "via" => gateway = Some(next("via")?.parse().map_err(|_| "bad gateway".to_owned())?),
            "dev" => interface = Some(index_of(next("dev")?)?),
            "onlink" => onlink = true,
            "proto" => protocol = next("proto")?.parse().map_err(|_| "bad proto".to_owned())?,
            "group" => group = Some(members(next("group")?)?),
            "type" if next("type")? == "resilient" => {}
            "buckets" => buckets = next("buckets")?.parse().map_err(|_| "bad buckets".to_owned())?,
            "idle_timer" => {
                idle_timer = next("idle_timer")?.parse().map_err(|_| "bad idle_timer".to_owned())?
            }
            "unbalanced_timer" => {
                unbalanced_timer =
                    next("unbalanced_timer")?.parse().map_err(|_| "bad unbalanced_timer".to_owned())?
            }
            other => return Err(format!("unknown nexthop word {other}")),
        }
    }
    let kind = match (group, interface) {
        (Some(members), _) => NexthopKind::Resilient { members, buckets, idle_timer, unbalanced_timer },
        (None, Some(interface)) => {
            let family =
                gateway.map(|g| Family::of(&g)).or(family).ok_or("a nexthop without via needs -4 or -6")?;
            NexthopKind::Via { family, gateway, interface, onlink }
        }
        (None, None) => return Err("a nexthop needs dev or group".to_owned()),
    };
    Ok(Nexthop { id, protocol, kind })
}

/// `1/2,3`: ids with optional weights.
fn members(word: &str) -> Result<Vec<GroupMember>, String> {
    word.split('/')
        .map(|member| {
            let (id, weight) = member.split_once(',').unwrap_or((member, "1"));
            Ok(GroupMember {
                id: id.parse().map_err(|_| format!("bad group member {member}"))?,
                weight: weight.parse().map_err(|_| format!("bad group weight {member}"))?,
            })
        })
        .collect()
}

/// The nexthop lines of `host`, members before groups.
pub(super) fn render(host: &Observed) -> String {
    let names = host.names();
    let mut nexthops = host.nexthops.clone().unwrap_or_default();
    nexthops.sort_by_key(|n| (n.is_group(), n.id));
    nexthops.iter().map(|n| n.command("add", &names) + "\n").collect()
}
