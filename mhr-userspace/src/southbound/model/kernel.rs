//! The kernel's own rules in the model: what a change may do, what a link
//! or an address takes with it, and who is told.

use ipnet::IpNet;

use super::{IPV6_PREFIX_METRIC, KERNEL, Notice, State};
use crate::{
    model::{Address, Family, MAIN_TABLE, Route, SCOPE_LINK, SCOPE_UNIVERSE},
    southbound::{Change, KernelError},
};

impl State {
    pub(super) fn notify(&mut self, notice: Notice) {
        self.subscribers.retain(|subscriber| subscriber.send(notice.clone()).is_ok());
    }

    pub(super) fn remove_routes(&mut self, gone: impl Fn(&Route) -> bool) {
        let (removed, kept): (Vec<Route>, Vec<Route>) = self.host.routes.drain(..).partition(|r| gone(r));
        self.host.routes = kept;
        for route in removed {
            self.notify(Notice::Route {
                table: route.table,
                prefix_len: route.destination.prefix_len(),
                removed_by: None,
            });
        }
    }

    pub(super) fn add_prefix_route(&mut self, address: &Address) {
        let v4 = address.family() == Family::V4;
        let route = Route {
            table: MAIN_TABLE,
            destination: address.network(),
            gateway: None,
            interface: Some(address.interface),
            source: v4.then_some(address.address),
            protocol: KERNEL,
            scope: if v4 { SCOPE_LINK } else { SCOPE_UNIVERSE },
            metric: (!v4).then_some(IPV6_PREFIX_METRIC),
            onlink: false,
            multipath: Vec::new(),
            nexthop_group: None,
        };
        if !self.host.routes.iter().any(|r| key(r) == key(&route)) {
            self.host.routes.push(route.clone());
            self.notify(Notice::Route {
                table: MAIN_TABLE,
                prefix_len: route.destination.prefix_len(),
                removed_by: None,
            });
        }
    }

    pub(super) fn apply(&mut self, change: &Change, port: u32) -> Result<(), KernelError> {
        if let Some((_, errno)) = self.refusals.iter().find(|(refused, _)| refused == change) {
            return Err(KernelError::Refused(*errno));
        }
        match change {
            Change::AddRoute(route) => {
                if self.host.routes.iter().any(|r| key(r) == key(route)) {
                    return Err(KernelError::Refused(libc::EEXIST));
                }
                let route = self.checked_route(route)?;
                self.host.routes.push(route.clone());
                self.route_notice(&route, None);
            }
            Change::ReplaceRoute(route) => {
                let route = self.checked_route(route)?;
                self.host.routes.retain(|r| key(r) != key(&route));
                self.host.routes.push(route.clone());
                self.route_notice(&route, None);
            }
            Change::AddNexthop(nexthop) => self.add_nexthop(nexthop, false)?,
            Change::ReplaceNexthop(nexthop) => self.add_nexthop(nexthop, true)?,
            Change::DeleteNexthop(nexthop) => self.delete_nexthop(nexthop.id)?,
            Change::DeleteRoute(route) => {
                let found = self.host.routes.iter().position(|r| deletes(route, r));
                let Some(slot) = found else { return Err(KernelError::Refused(libc::ESRCH)) };
                self.host.routes.remove(slot);
                self.route_notice(route, Some(port));
            }
            Change::AddRule(rule) => {
                if self.host.rules.contains(rule) {
                    return Err(KernelError::Refused(libc::EEXIST));
                }
                self.host.rules.push(rule.clone());
                self.notify(Notice::Rule { removed_by: None });
            }
            Change::DeleteRule(rule) => {
                let Some(slot) = self.host.rules.iter().position(|r| r == rule) else {
                    return Err(KernelError::Refused(libc::ENOENT));
                };
                self.host.rules.remove(slot);
                self.notify(Notice::Rule { removed_by: Some(port) });
            }
        }
        Ok(())
    }

    fn route_notice(&mut self, route: &Route, removed_by: Option<u32>) {
        self.notify(Notice::Route {
            table: route.table,
            prefix_len: route.destination.prefix_len(),
            removed_by,
        });
    }

    /// The route as the kernel keeps it, if it takes it: a route on a
    /// group needs the group (its nexthops were checked when added).
    fn checked_route(&self, route: &Route) -> Result<Route, KernelError> {
        if route.nexthop_group.is_some() {
            return self.expanded(route);
        }
        self.check_route(route)?;
        Ok(route.clone())
    }

    /// What the kernel checks before it adds an IPv4 route (IPv6 takes
    /// routes on links that are down, and gateways it cannot reach yet).
    fn check_route(&self, route: &Route) -> Result<(), KernelError> {
        for hop in route.next_hops() {
            let Some(link) = self.host.links.iter().find(|l| l.index == hop.interface) else {
                return Err(KernelError::Refused(libc::ENODEV));
            };
            if route.family() != Family::V4 {
                continue;
            }
            if !link.up {
                return Err(KernelError::Refused(libc::ENETDOWN));
            }
            let Some(gateway) = hop.gateway.filter(|_| !route.onlink) else { continue };
            let reachable = self.host.routes.iter().any(|r| {
                [route.table, MAIN_TABLE].contains(&r.table)
                    && r.scope == SCOPE_LINK
                    && r.interface == Some(hop.interface)
                    && r.destination.contains(&gateway)
            });
            if !reachable {
                return Err(KernelError::Refused(libc::ENETUNREACH));
            }
        }
        Ok(())
    }
}

/// The fields the kernel identifies a route by.
fn key(route: &Route) -> (Family, u32, IpNet, u32) {
    (route.family(), route.table, route.destination, route.metric.unwrap_or(0))
}

/// Whether a delete request for `asked` removes `route`: its key, and the
/// next hop and protocol where the request names them.
fn deletes(asked: &Route, route: &Route) -> bool {
    key(asked) == key(route)
        && asked.gateway.is_none_or(|g| route.gateway == Some(g))
        && asked.interface.is_none_or(|i| route.interface == Some(i))
        && (asked.protocol == 0 || asked.protocol == route.protocol)
}
