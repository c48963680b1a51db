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
mod kernel;
mod lookup;
mod nexthops;
mod southbound;
pub mod text;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Change, KernelError};
use crate::model::{Address, Link, Observed};

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
    /// Probe targets that answer nobody (a dead server, a filter).
    silent_targets: BTreeSet<std::net::IpAddr>,
    /// Round trips through an uplink's upstream (default 1 ms).
    rtt: BTreeMap<String, std::time::Duration>,
    /// Established TCP connections, and the ports sockets listen on.
    connections: Vec<crate::model::Connection>,
    listening: BTreeSet<u16>,
    /// Changes the kernel refuses, with the errno.
    refusals: Vec<(Change, i32)>,
    /// mhr's changes, as `ip` commands, since the last [`KernelModel::take_changes`].
    made: Vec<String>,
    subscribers: Vec<mpsc::UnboundedSender<Notice>>,
    rp_filter: BTreeMap<String, u8>,
    multipath_hash: Option<crate::config::BalanceHash>,
    ipv6_flushes: usize,
    /// Probes sent out of each interface (one per target per round).
    probes_sent: BTreeMap<String, usize>,
    /// Interfaces a live stream leaves by, and every interface's packets
    /// sent and received (a stream sends on every sample; its upstream,
    /// unless silent, answers).
    streams: BTreeSet<String>,
    counters: BTreeMap<String, crate::health::passive::LinkCounters>,
    /// Percent of a stream's TCP segments retransmitted, by interface.
    tcp_loss: BTreeMap<String, u32>,
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

    /// What balance asked multipath routes to hash on, if it did.
    pub fn multipath_hash(&self) -> Option<crate::config::BalanceHash> {
        self.state().multipath_hash
    }

    /// Probes sent out of `interface` so far (one per target per round).
    pub fn probes_sent(&self, interface: &str) -> usize {
        self.state().probes_sent.get(interface).copied().unwrap_or(0)
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
            let pin = crate::guard::link_pin(interface, uplink.ifindex);
            state.removed.push(pin);
        }
    }

    /// The kernel refuses (or takes again) the guard's attachment to
    /// `interface`.
    pub fn refuse_guard(&self, interface: &str, refused: bool) {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match refused {
            true => state.refused.insert(interface.to_owned()),
            false => state.refused.remove(interface),
        };
    }

    /// Loading the guard fails (or works again).
    pub fn refuse_guard_load(&self, refused: bool) {
        self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).load_refused = refused;
    }

    /// The uplink's upstream stops (or resumes) answering probes.
    pub fn silence(&self, interface: &str, silent: bool) {
        let mut state = self.state();
        match silent {
            true => state.silent.insert(interface.to_owned()),
            false => state.silent.remove(interface),
        };
    }

    /// A live stream leaves by `interface` (or stops).
    pub fn stream(&self, interface: &str, on: bool) {
        let mut state = self.state();
        match on {
            true => state.streams.insert(interface.to_owned()),
            false => state.streams.remove(interface),
        };
    }

    /// `percent` of the TCP segments a stream sends by `interface` are
    /// retransmissions from now on (the guard's TCP counters, while its
    /// tracepoints are attached, count 100 segments per sample).
    pub fn tcp_loss(&self, interface: &str, percent: u32) {
        self.state().tcp_loss.insert(interface.to_owned(), percent);
    }

    /// Probes through `interface` take `rtt` to answer from now on (longer
    /// than the probe timeout: unanswered).
    pub fn set_rtt(&self, interface: &str, rtt: std::time::Duration) {
        self.state().rtt.insert(interface.to_owned(), rtt);
    }

    /// An established TCP connection appears (an application connected, or
    /// a peer connected to a listening port).
    pub fn connect(&self, local: std::net::SocketAddr, remote: std::net::SocketAddr) {
        self.state().connections.push(crate::model::Connection { local, remote });
    }

    /// A socket listens on `port` (any address).
    pub fn listen(&self, port: u16) {
        self.state().listening.insert(port);
    }

    /// The established connections now.
    pub fn open_connections(&self) -> Vec<crate::model::Connection> {
        self.state().connections.clone()
    }

    /// One probe target stops (or resumes) answering, through any uplink.
    pub fn silence_target(&self, target: std::net::IpAddr, silent: bool) {
        let mut state = self.state();
        match silent {
            true => state.silent_targets.insert(target),
            false => state.silent_targets.remove(&target),
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
            state.nexthops_gone_with_link(index);
            state.remove_routes(|r| {
                r.nexthop_group.is_none() && r.next_hops().any(|hop| hop.interface == index)
            });
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
        state.nexthops_gone_with_link(index);
        state.remove_routes(|r| r.nexthop_group.is_none() && r.next_hops().any(|hop| hop.interface == index));
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
