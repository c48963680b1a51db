//! An in-memory kernel behind [`Southbound`]: the engine, the daemon,
//! confirm, check and status run against it without root.
//!
//! It keeps the kernel's rules that mhr's correctness leans on: a route
//! key (table, destination, metric) holds one route (EEXIST); an IPv4
//! route needs its link up (ENETDOWN) and a gateway reachable through a
//! link route (ENETUNREACH) unless `onlink`; deleting what is not there is
//! ESRCH/ENOENT; a link going down takes its routes, an address takes its
//! prefix route and the routes using it as source; lookups walk the rules
//! ([`lookup`]). Every change notifies subscribers, with the writer's port
//! for deletions. Probes are answered unless the uplink's upstream is
//! silenced or its path does not leave by it.

pub mod guard;
mod lookup;
pub mod text;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{
    Change, Event, KernelError, Lookup, Notifications, ObserveError, RouteFilter, RouteScope, Southbound,
};
use crate::{
    health::ProbeOutcome,
    health::probe::{ProbePlan, ProbeResult},
    model::{Address, Family, Link, MAIN_TABLE, Observed, Route, SCOPE_LINK, SCOPE_UNIVERSE, rule_command},
};

const KERNEL: u8 = 2;
const IPV6_PREFIX_METRIC: u32 = 256;
/// The netlink port mhr's own changes carry in notifications.
pub const MHR_PORT: u32 = 1000;

/// What a subscriber is told, before its route filter looks at it.
#[derive(Clone, Debug)]
enum Notice {
    Link,
    Address(Option<Address>),
    Route { table: u32, prefix_len: u8, removed_by: Option<u32> },
    Rule { removed_by: Option<u32> },
}

#[derive(Default)]
struct State {
    host: Observed,
    /// Uplinks whose upstream answers no probe.
    silent: BTreeSet<String>,
    /// Changes the kernel refuses, with the errno.
    refusals: Vec<(Change, i32)>,
    /// mhr's changes, as `ip` commands, since the last [`KernelModel::take_changes`].
    made: Vec<String>,
    subscribers: Vec<mpsc::UnboundedSender<Notice>>,
    rp_filter: BTreeMap<String, u8>,
    multipath_hash_by_flow: bool,
    ipv6_flushes: usize,
}

/// The in-memory kernel. Cheap to share: `Arc<KernelModel>`.
#[derive(Default)]
pub struct KernelModel {
    state: Mutex<State>,
    guard: Arc<Mutex<guard::GuardState>>,
}

impl KernelModel {
    pub fn new(host: Observed) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State { host, ..State::default() }), guard: Arc::default() })
    }

    /// A model of the host `text` describes (see [`text`]).
    pub fn from_text(text: &str) -> Result<Arc<Self>, text::TextError> {
        Ok(Self::new(text::parse(text)?))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the host from the others.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn host(&self) -> Observed {
        self.state().host.clone()
    }

    /// The host as text (see [`text::render`]).
    pub fn render(&self) -> String {
        text::render(&self.state().host)
    }

    /// The changes mhr made since the last call, in order, as `ip` commands.
    pub fn take_changes(&self) -> Vec<String> {
        std::mem::take(&mut self.state().made)
    }

    pub fn multipath_hash_by_flow(&self) -> bool {
        self.state().multipath_hash_by_flow
    }

    /// Times the IPv6 route cache was flushed.
    pub fn ipv6_flushes(&self) -> usize {
        self.state().ipv6_flushes
    }

    /// The guard as the kernel runs it.
    pub fn guard(&self) -> guard::GuardState {
        self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Someone detaches the guard from `interface` (`tc filter del`, a
    /// removed pin).
    pub fn detach_guard(&self, interface: &str) {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.attached.remove(interface)
            && let Some(uplink) = state.uplinks.iter().find(|u| u.interface == interface)
        {
            let pin = format!("{}{}", crate::guard::pin_prefix(interface), uplink.ifindex);
            state.removed.push(pin);
        }
    }

    /// The uplink's upstream stops (or resumes) answering probes.
    pub fn silence(&self, interface: &str, silent: bool) {
        let mut state = self.state();
        match silent {
            true => state.silent.insert(interface.to_owned()),
            false => state.silent.remove(interface),
        };
    }

    /// The kernel refuses `change` with `errno` from now on.
    pub fn refuse(&self, change: Change, errno: i32) {
        self.state().refusals.push((change, errno));
    }

    /// The kernel takes every change again.
    pub fn clear_refusals(&self) {
        self.state().refusals.clear();
    }

    pub fn set_rp_filter(&self, interface: &str, mode: u8) {
        self.state().rp_filter.insert(interface.to_owned(), mode);
    }

    /// Administrative state and carrier of a link, as `ip link set` and a
    /// cable would change them. Going down takes the link's routes;
    /// coming up brings back its prefix routes.
    pub fn set_link(&self, name: &str, up: bool, carrier: bool) {
        let mut state = self.state();
        let Some(link) = state.host.links.iter_mut().find(|l| l.name == name) else { return };
        let (index, was_up) = (link.index, link.up);
        link.up = up;
        link.carrier = carrier;
        state.notify(Notice::Link);
        if was_up && !up {
            state.remove_routes(|r| r.next_hops().any(|hop| hop.interface == index));
        }
        if !was_up && up {
            let addresses: Vec<Address> = state.host.addresses_of(index).copied().collect();
            for address in addresses {
                state.add_prefix_route(&address);
            }
        }
    }

    /// A new link (a modem plugged in, an interface re-created), up.
    pub fn add_link(&self, name: &str, index: u32) {
        let mut state = self.state();
        state.host.links.push(Link {
            index,
            name: name.to_owned(),
            up: true,
            carrier: true,
            point_to_point: false,
            framing: crate::model::Framing::Ethernet,
        });
        state.notify(Notice::Link);
    }

    /// A link disappears with its addresses and routes.
    pub fn remove_link(&self, name: &str) {
        let mut state = self.state();
        let Some(index) = state.host.link(name).map(|l| l.index) else { return };
        state.remove_routes(|r| r.next_hops().any(|hop| hop.interface == index));
        state.host.addresses.retain(|a| a.interface != index);
        state.host.links.retain(|l| l.index != index);
        state.notify(Notice::Link);
    }

    /// An address appears on a link (DHCP, `ip addr add`), with its prefix route.
    pub fn add_address(&self, name: &str, address: IpNet) {
        let mut state = self.state();
        let Some(interface) = state.host.link(name).map(|l| l.index) else { return };
        let address = Address { interface, address: address.addr(), prefix_len: address.prefix_len() };
        state.host.addresses.push(address);
        state.notify(Notice::Address(Some(address)));
        state.add_prefix_route(&address);
    }

    /// An address goes, with its prefix route and the routes it was the source of.
    pub fn remove_address(&self, name: &str, address: IpAddr) {
        let mut state = self.state();
        let Some(interface) = state.host.link(name).map(|l| l.index) else { return };
        state.host.addresses.retain(|a| !(a.interface == interface && a.address == address));
        state.notify(Notice::Address(None));
        state.remove_routes(|r| {
            r.source == Some(address)
                || (r.protocol == KERNEL
                    && r.interface == Some(interface)
                    && r.destination.contains(&address))
        });
    }

    /// The gateway's neighbour entry fails (or recovers).
    pub fn fail_neighbour(&self, name: &str, gateway: IpAddr, failed: bool) {
        let mut state = self.state();
        let Some(interface) = state.host.link(name).map(|l| l.index) else { return };
        match failed {
            true => state.host.failed_neighbours.insert((interface, gateway)),
            false => state.host.failed_neighbours.remove(&(interface, gateway)),
        };
    }

    /// Another writer (a network manager, an operator) changes the
    /// kernel; its notifications carry `port`.
    pub fn foreign_change(&self, change: &Change, port: u32) -> Result<(), KernelError> {
        self.state().apply(change, port)
    }
}

impl State {
    fn notify(&mut self, notice: Notice) {
        self.subscribers.retain(|subscriber| subscriber.send(notice.clone()).is_ok());
    }

    fn remove_routes(&mut self, gone: impl Fn(&Route) -> bool) {
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

    fn add_prefix_route(&mut self, address: &Address) {
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

    fn apply(&mut self, change: &Change, port: u32) -> Result<(), KernelError> {
        if let Some((_, errno)) = self.refusals.iter().find(|(refused, _)| refused == change) {
            return Err(KernelError::Refused(*errno));
        }
        match change {
            Change::AddRoute(route) => {
                if self.host.routes.iter().any(|r| key(r) == key(route)) {
                    return Err(KernelError::Refused(libc::EEXIST));
                }
                self.check_route(route)?;
                self.host.routes.push(route.clone());
                self.route_notice(route, None);
            }
            Change::ReplaceRoute(route) => {
                self.check_route(route)?;
                self.host.routes.retain(|r| key(r) != key(route));
                self.host.routes.push(route.clone());
                self.route_notice(route, None);
            }
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

struct ModelNotifications {
    receiver: mpsc::UnboundedReceiver<Notice>,
    filter: RouteFilter,
}

#[async_trait::async_trait]
impl Notifications for ModelNotifications {
    async fn next(&mut self) -> std::io::Result<Event> {
        let Some(notice) = self.receiver.recv().await else {
            return std::future::pending().await;
        };
        Ok(match notice {
            Notice::Route { table, prefix_len, .. } if !self.filter.matters(table, prefix_len) => {
                Event::Ignored
            }
            Notice::Route { removed_by, .. } | Notice::Rule { removed_by } => Event::Changed {
                added: Vec::new(),
                removed_by: removed_by.into_iter().filter(|port| *port != 0).collect(),
            },
            Notice::Address(added) => {
                Event::Changed { added: added.into_iter().collect(), removed_by: Vec::new() }
            }
            Notice::Link => Event::Changed { added: Vec::new(), removed_by: Vec::new() },
        })
    }

    fn set_route_filter(&mut self, filter: RouteFilter) {
        self.filter = filter;
    }
}

#[async_trait::async_trait]
impl Southbound for KernelModel {
    async fn observe(&self, _scope: Option<&RouteScope>) -> Result<Observed, ObserveError> {
        Ok(self.host())
    }

    async fn failed_neighbours(&self) -> Result<BTreeSet<(u32, IpAddr)>, ObserveError> {
        Ok(self.state().host.failed_neighbours.clone())
    }

    async fn change(&self, change: &Change) -> Result<(), KernelError> {
        let mut state = self.state();
        state.apply(change, MHR_PORT)?;
        let names = state.host.names();
        let made = match change {
            Change::AddRoute(route) => names.route_command("add", route),
            Change::ReplaceRoute(route) => names.route_command("replace", route),
            Change::DeleteRoute(route) => names.route_command("del", route),
            Change::AddRule(rule) => rule_command("add", rule),
            Change::DeleteRule(rule) => rule_command("del", rule),
        };
        state.made.push(made);
        Ok(())
    }

    async fn lookup(&self, query: Lookup) -> Result<Route, KernelError> {
        let state = self.state();
        let iif_name =
            query.iif.and_then(|i| state.host.links.iter().find(|l| l.index == i)).map(|l| &l.name);
        let rp_filter = iif_name.and_then(|name| state.rp_filter.get(name)).copied().unwrap_or(0);
        lookup::answer(&state.host, query, rp_filter)
    }

    fn subscribe(
        &self,
        _receive_buffer: usize,
        filter: RouteFilter,
    ) -> std::io::Result<Box<dyn Notifications>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.state().subscribers.push(sender);
        Ok(Box::new(ModelNotifications { receiver, filter }))
    }

    /// Answered when the uplink is up with carrier, not silenced, and a
    /// route through it (probe sockets are bound to their uplink) reaches
    /// the target.
    async fn probe(&self, plans: &[ProbePlan], _timeout: Duration) -> Vec<ProbeResult> {
        let state = self.state();
        plans
            .iter()
            .map(|plan| {
                let link = state.host.link(&plan.interface);
                let alive =
                    link.is_some_and(|l| l.up && l.carrier) && !state.silent.contains(&plan.interface);
                let index = link.map(|l| l.index);
                let leaves = |target: &IpAddr| {
                    lookup::route_via(&state.host, *target, Some(plan.source), index).is_some()
                };
                let answered = alive && plan.targets.iter().any(leaves);
                let outcome = ProbeOutcome { answered, rtt: answered.then(|| Duration::from_millis(1)) };
                ProbeResult { interface: plan.interface.clone(), family: plan.family, outcome }
            })
            .collect()
    }

    fn hash_multipath_by_flow(&self) -> std::io::Result<()> {
        self.state().multipath_hash_by_flow = true;
        Ok(())
    }

    fn flush_ipv6_route_cache(&self) -> std::io::Result<()> {
        self.state().ipv6_flushes += 1;
        Ok(())
    }

    /// The model carries no sockets.
    fn connections(&self) -> std::io::Result<Vec<crate::model::Connection>> {
        Ok(Vec::new())
    }

    fn load_guard(
        &self,
        _pin_dir: &std::path::Path,
    ) -> Result<crate::guard::plane::LoadedGuard, crate::guard::GuardError> {
        self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).loads += 1;
        let plane = Box::new(guard::ModelGuard(Arc::clone(&self.guard)));
        Ok(crate::guard::plane::LoadedGuard { plane, flags: None })
    }

    fn remove_guard(&self, _config: &crate::config::Config) -> Result<Vec<String>, crate::guard::GuardError> {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let removed = std::mem::take(&mut state.attached).into_iter().collect();
        state.uplinks.clear();
        Ok(removed)
    }

    fn rp_filter(&self, interface: &str) -> Option<u8> {
        Some(self.state().rp_filter.get(interface).copied().unwrap_or(0))
    }
}
