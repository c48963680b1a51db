//! The southbound: everything mhr asks of the kernel about routing, behind
//! one trait. Observe (links, addresses, routes, rules, neighbours), change
//! (routes and rules), look a route up the way the kernel's rule walk
//! does, subscribe to change notifications, send health probes, and tune
//! the two sysctls routing needs.
//!
//! Two implementations: [`crate::netlink::Kernel`] (rtnetlink, raw/ICMP
//! sockets, procfs: the real host) and [`model::KernelModel`] (in memory:
//! the engine's and daemon's decisions tested without root). The guard's
//! side (bpf(2), TC links) is [`crate::guard`]; nothing else touches
//! rtnetlink or aya.

pub mod model;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    ops::RangeInclusive,
    time::Duration,
};

use crate::{
    health::probe::{ProbePlan, ProbeResult},
    model::{Address, Nexthop, Observed, Route, Rule},
};

/// The kernel's answer to a request (data, like the objects it is about).
pub use crate::model::KernelError;

#[derive(Debug, thiserror::Error)]
#[error("reading {what} from the kernel failed")]
pub struct ObserveError {
    pub what: &'static str,
    pub source: KernelError,
}

/// One change to the kernel's routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddRoute(Route),
    /// Replaces the route with the same kernel key (`ip route replace`).
    ReplaceRoute(Route),
    DeleteRoute(Route),
    AddRule(Rule),
    DeleteRule(Rule),
    AddNexthop(Nexthop),
    /// Replaces the nexthop with the same id in place.
    ReplaceNexthop(Nexthop),
    DeleteNexthop(Nexthop),
}

/// Which routing tables mhr reads. A host may carry a BGP table or a
/// CNI's routes; mhr has no business dumping them on every reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteScope {
    /// mhr's protocol: its routes are found in any table.
    pub protocol: u8,
    /// mhr's table range.
    pub range: RangeInclusive<u32>,
    /// Tables uplinks hold (explicit or allocated earlier).
    pub claimed: BTreeSet<u32>,
    /// Uplinks that still need a table from the range.
    pub allocations: usize,
    /// Look for mhr's routes in every table (a walk of all of them in the
    /// kernel): when no record says which tables are mhr's.
    pub search_everywhere: bool,
}

/// A route lookup (`ip route get DESTINATION [from SOURCE] [iif IIF]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub destination: IpAddr,
    pub source: Option<IpAddr>,
    /// As if received on this interface (reverse-path checks).
    pub iif: Option<u32>,
    /// The packet's protocol, ports, uid and mark (steering rules).
    pub flow: crate::model::Flow,
}

/// Where a lookup says a packet goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub interface: Option<u32>,
    pub gateway: Option<IpAddr>,
}

/// Which way the kernel would send to `destination` (from `source`, as
/// if received on `iif`).
pub async fn path(
    kernel: &dyn Southbound,
    destination: IpAddr,
    source: Option<IpAddr>,
    iif: Option<u32>,
) -> Result<Path, KernelError> {
    let route = kernel.lookup(Lookup { destination, source, iif, flow: Default::default() }).await?;
    Ok(Path { interface: route.interface, gateway: route.gateway })
}

/// What a change notification says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Some link, address, route or rule changed; `added` are the global
    /// addresses among the changes that appeared; `removed_by` the netlink
    /// port ids of the sockets that asked to delete a rule or route (the
    /// kernel's own deletions, port 0, are not listed).
    Changed { added: Vec<Address>, removed_by: Vec<u32> },
    /// The kernel dropped notifications (ENOBUFS): only a full resync is safe.
    Overrun,
    /// Only routes mhr neither owns nor learns from changed (a BGP table,
    /// a CNI's routes): nothing to reconcile.
    Ignored,
}

/// Which route changes matter: those in main, in mhr's table range, and
/// default routes anywhere (gateways are learned from them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteFilter {
    pub tables: (u32, u32),
    /// Tables uplinks claim explicitly (`table = …`), maybe outside the range.
    pub explicit: Vec<u32>,
}

impl RouteFilter {
    pub fn for_config(config: &crate::config::Config) -> Self {
        let [first, last] = config.routing.table_range;
        let mut explicit: Vec<u32> = config.uplinks.iter().filter_map(|u| u.table).collect();
        explicit.push(config.routing.default_table());
        Self { tables: (first, last), explicit }
    }

    /// Whether a change of a route in `table` to `destination_prefix_length`
    /// bits concerns mhr.
    pub fn matters(&self, table: u32, destination_prefix_length: u8) -> bool {
        let (first, last) = self.tables;
        table == crate::model::MAIN_TABLE
            || (first..=last).contains(&table)
            || self.explicit.contains(&table)
            || destination_prefix_length == 0
    }
}

/// A subscription to change notifications.
#[async_trait::async_trait]
pub trait Notifications: Send {
    /// Waits for the next notification.
    async fn next(&mut self) -> std::io::Result<Event>;
    /// A new filter (the config was reloaded).
    fn set_route_filter(&mut self, filter: RouteFilter);
}

/// What mhr asks of the kernel about routing.
#[async_trait::async_trait]
pub trait Southbound: Send + Sync {
    /// Links, addresses, rules, neighbours, and routes: from the tables
    /// `scope` names, or every table without one.
    async fn observe(&self, scope: Option<&RouteScope>) -> Result<Observed, ObserveError>;

    /// Neighbours whose resolution failed (`FAILED`, or `INCOMPLETE`: asked
    /// and not yet answered): (ifindex, address).
    async fn failed_neighbours(&self) -> Result<BTreeSet<(u32, IpAddr)>, ObserveError>;

    /// Makes one change. Requests are handled in the order they are made,
    /// so up to a few dozen may be in flight at once (apply pipelines).
    async fn change(&self, change: &Change) -> Result<(), KernelError>;

    /// The route the kernel picks, as a route (`ip route get`).
    async fn lookup(&self, lookup: Lookup) -> Result<Route, KernelError>;

    /// Subscribes to link, address, route and rule changes; route changes
    /// outside `filter` come as [`Event::Ignored`]. `receive_buffer` sizes
    /// the kernel's queue (bytes).
    fn subscribe(
        &self,
        receive_buffer: usize,
        filter: RouteFilter,
    ) -> std::io::Result<Box<dyn Notifications>>;

    /// One probe round: every plan's targets at once, each waiting at most
    /// `timeout`, leaving by its uplink from its source address.
    async fn probe(&self, plans: &[ProbePlan], timeout: Duration) -> Vec<ProbeResult>;

    /// Keeps what probing needs (sockets) for `plans` only: the daemon's
    /// current plans, whether due this round or not.
    async fn keep_probes(&self, _plans: &[ProbePlan]) {}

    /// What multipath routes and groups hash packets on (balance):
    /// `fib_multipath_hash_policy` and `fib_multipath_hash_fields`.
    fn set_multipath_hash(&self, hash: crate::config::BalanceHash) -> std::io::Result<()>;

    /// Drops the IPv6 route cache (IPv4 has had none since Linux 3.6).
    fn flush_ipv6_route_cache(&self) -> std::io::Result<()>;

    /// `net.ipv4.conf.INTERFACE.rp_filter`, if readable.
    fn rp_filter(&self, interface: &str) -> Option<u8>;

    /// Every established TCP connection except loopback ones.
    fn connections(&self) -> std::io::Result<Vec<crate::model::Connection>>;

    /// The ports TCP sockets listen on (connections on them came in).
    fn listening_ports(&self) -> std::io::Result<std::collections::BTreeSet<u16>>;

    /// Closes an established TCP connection (the kernel resets it).
    fn destroy_connection(&self, connection: &crate::model::Connection) -> std::io::Result<()>;

    /// Loads the guard (adopting what is pinned under `pin_dir`).
    fn load_guard(
        &self,
        pin_dir: &std::path::Path,
    ) -> Result<crate::guard::plane::LoadedGuard, crate::guard::GuardError>;

    /// Detaches and unpins every guard of `config` (`down`, cleanup on exit).
    fn remove_guard(&self, config: &crate::config::Config) -> Result<Vec<String>, crate::guard::GuardError>;

    /// The installed guard's enforcement per ifindex, as its maps say (what
    /// a rollback restores); None: no guard is installed under `pin_dir`.
    fn guard_enforcement(
        &self,
        pin_dir: &std::path::Path,
    ) -> Result<Option<BTreeMap<u32, crate::guard::Enforcement>>, crate::guard::GuardError>;

    /// Puts the installed guard's enforcement back (a rollback); false: no
    /// guard is installed under `pin_dir`.
    fn set_guard_enforcement(
        &self,
        pin_dir: &std::path::Path,
        modes: &BTreeMap<u32, crate::guard::Enforcement>,
    ) -> Result<bool, crate::guard::GuardError>;

    /// Packets each interface sent and received (unicast), by ifindex, of
    /// the interfaces asked for: `[health] passive` samples them.
    async fn link_counters(
        &self,
        interfaces: &[u32],
    ) -> Result<BTreeMap<u32, crate::health::passive::LinkCounters>, ObserveError>;
}
