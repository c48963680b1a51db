//! [`Kernel`]: the southbound on the real host. rtnetlink for routing,
//! ICMP sockets for probes, procfs for the sysctls routing needs.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use rtnetlink::Handle;

use super::{
    encode::{kernel_error, route_message, rule_message},
    nexthop, observe, route_lookup,
    subscribe::EventSocket,
};
use crate::{
    health::probe::{ProbePlan, ProbeResult, Prober},
    model::{Observed, Route},
    southbound::{
        Change, KernelError, Lookup, Notifications, ObserveError, RouteFilter, RouteScope, Southbound,
    },
};

/// rtnetlink connections in the calling thread's network namespace.
pub struct Kernel {
    handle: Handle,
    /// A second socket with strict dump checking, so that route dumps are
    /// filtered by the kernel (None on kernels before 4.20: full dumps).
    filtered: Option<Handle>,
    /// Probe sockets, kept between rounds.
    prober: tokio::sync::Mutex<Prober>,
}

impl Kernel {
    /// Opens the sockets (needs a tokio runtime).
    pub fn connect() -> std::io::Result<Self> {
        let (handle, filtered) = super::connect()?;
        Ok(Self { handle, filtered, prober: tokio::sync::Mutex::new(Prober::new()) })
    }
}

#[async_trait::async_trait]
impl Southbound for Kernel {
    async fn observe(&self, scope: Option<&RouteScope>) -> Result<Observed, ObserveError> {
        let scoped = match (scope, &self.filtered) {
            (Some(scope), Some(filtered)) => Some((filtered, scope)),
            _ => None,
        };
        observe::observe_scoped(&self.handle, scoped).await
    }

    async fn failed_neighbours(&self) -> Result<BTreeSet<(u32, IpAddr)>, ObserveError> {
        observe::failed_neighbours(&self.handle).await
    }

    async fn link_counters(
        &self,
        interfaces: &[u32],
    ) -> Result<std::collections::BTreeMap<u32, crate::health::passive::LinkCounters>, ObserveError> {
        observe::link_counters(&self.handle, interfaces).await
    }

    async fn change(&self, change: &Change) -> Result<(), KernelError> {
        let route = self.handle.route();
        let outcome = match change {
            Change::AddRoute(new) => route.add(route_message(new)).execute().await,
            Change::ReplaceRoute(new) => route.add(route_message(new)).replace().execute().await,
            Change::DeleteRoute(old) => route.del(route_message(old)).execute().await,
            Change::AddRule(rule) => {
                let mut request = self.handle.rule().add();
                *request.message_mut() = rule_message(rule);
                request.execute().await
            }
            Change::DeleteRule(rule) => self.handle.rule().del(rule_message(rule)).execute().await,
            Change::AddNexthop(nexthop) => return nexthop::change(nexthop::Verb::Add, nexthop),
            Change::ReplaceNexthop(nexthop) => return nexthop::change(nexthop::Verb::Replace, nexthop),
            Change::DeleteNexthop(nexthop) => return nexthop::change(nexthop::Verb::Delete, nexthop),
        };
        outcome.map_err(|err| kernel_error(&err))
    }

    async fn lookup(&self, lookup: Lookup) -> Result<Route, KernelError> {
        route_lookup(&self.handle, lookup.destination, lookup.source, lookup.iif, &lookup.flow).await
    }

    fn subscribe(
        &self,
        receive_buffer: usize,
        filter: RouteFilter,
    ) -> std::io::Result<Box<dyn Notifications>> {
        Ok(Box::new(EventSocket::open(receive_buffer)?.with_route_filter(filter)))
    }

    async fn probe(&self, plans: &[ProbePlan], timeout: Duration) -> Vec<ProbeResult> {
        self.prober.lock().await.round(plans, timeout).await
    }

    async fn keep_probes(&self, plans: &[ProbePlan]) {
        self.prober.lock().await.retain(plans);
    }

    fn set_multipath_hash(&self, hash: crate::config::BalanceHash) -> std::io::Result<()> {
        // Policy 3 hashes on the fields chosen (Linux 5.12); 0x0002 is the
        // destination address. Policy 1 is the L4 five-tuple.
        let settings: &[(&str, &str)] = match hash {
            crate::config::BalanceHash::Destination => {
                &[("fib_multipath_hash_fields", "0x0002"), ("fib_multipath_hash_policy", "3")]
            }
            crate::config::BalanceHash::Flow => &[("fib_multipath_hash_policy", "1")],
        };
        for family in ["ipv4", "ipv6"] {
            for (name, value) in settings {
                let path = format!("/proc/sys/net/{family}/{name}");
                if sysctl_number(&std::fs::read_to_string(&path)?) != sysctl_number(value) {
                    std::fs::write(&path, value)?;
                }
            }
        }
        Ok(())
    }

    fn flush_ipv6_route_cache(&self) -> std::io::Result<()> {
        std::fs::write("/proc/sys/net/ipv6/route/flush", "1")
    }

    fn connections(&self) -> std::io::Result<Vec<crate::model::Connection>> {
        super::sock_diag::established()
    }

    fn listening_ports(&self) -> std::io::Result<std::collections::BTreeSet<u16>> {
        super::sock_diag::listening_ports()
    }

    fn destroy_connection(&self, connection: &crate::model::Connection) -> std::io::Result<()> {
        super::sock_diag::destroy(connection)
    }

    fn load_guard(
        &self,
        pin_dir: &std::path::Path,
    ) -> Result<crate::guard::plane::LoadedGuard, crate::guard::GuardError> {
        crate::guard::Guard::load_with_flags(pin_dir)
    }

    fn remove_guard(&self, config: &crate::config::Config) -> Result<Vec<String>, crate::guard::GuardError> {
        crate::guard::Deployment::new(config).down()
    }

    fn guard_enforcement(
        &self,
        pin_dir: &std::path::Path,
    ) -> Result<Option<std::collections::BTreeMap<u32, crate::guard::Enforcement>>, crate::guard::GuardError>
    {
        crate::guard::GuardMaps::from_pins(pin_dir)?.map(|maps| maps.enforcement()).transpose()
    }

    fn set_guard_enforcement(
        &self,
        pin_dir: &std::path::Path,
        modes: &std::collections::BTreeMap<u32, crate::guard::Enforcement>,
    ) -> Result<bool, crate::guard::GuardError> {
        let Some(mut maps) = crate::guard::GuardMaps::from_pins(pin_dir)? else { return Ok(false) };
        maps.set_enforcement(modes)?;
        Ok(true)
    }

    /// The effective mode: the maximum of `all` and the interface's own.
    fn rp_filter(&self, interface: &str) -> Option<u8> {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"))
                .ok()?
                .trim()
                .parse::<u8>()
                .ok()
        };
        Some(read("all")?.max(read(interface)?))
    }
}

/// A sysctl's number, decimal or `0x` hexadecimal as the kernel writes
/// `fib_multipath_hash_fields`.
fn sysctl_number(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
