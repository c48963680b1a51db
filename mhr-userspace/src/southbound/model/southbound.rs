//! The model behind the [`Southbound`] trait, and its notifications.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{KernelModel, MHR_PORT, Notice, guard, lookup};
use crate::{
    health::probe::{ProbePlan, ProbeResult, TargetAnswer},
    model::{Observed, Route, rule_command},
    southbound::{
        Change, Event, KernelError, Lookup, Notifications, ObserveError, RouteFilter, RouteScope, Southbound,
    },
};

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

    async fn link_counters(
        &self,
        interfaces: &[u32],
    ) -> Result<std::collections::BTreeMap<u32, crate::health::passive::LinkCounters>, ObserveError> {
        let mut state = self.state();
        let mut counters = std::collections::BTreeMap::new();
        for index in interfaces {
            let Some(name) = state.host.links.iter().find(|l| l.index == *index).map(|l| l.name.clone())
            else {
                continue;
            };
            let (streaming, silent) = (state.streams.contains(&name), state.silent.contains(&name));
            let loss = state.tcp_loss.get(&name).copied().unwrap_or_default();
            if streaming {
                let mut guard = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if guard.tcp_watch {
                    let tcp = guard.tcp.entry(name.clone()).or_default();
                    tcp.segments_sent += 100;
                    tcp.retransmits += u64::from(if silent { 100 } else { loss });
                }
            }
            let entry = state.counters.entry(name).or_default();
            if streaming {
                entry.tx_packets += 10;
                if !silent {
                    entry.rx_packets += 10;
                }
            }
            counters.insert(*index, *entry);
        }
        Ok(counters)
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
            Change::AddNexthop(nexthop) => nexthop.command("add", &names),
            Change::ReplaceNexthop(nexthop) => nexthop.command("replace", &names),
            Change::DeleteNexthop(nexthop) => format!("ip nexthop del id {}", nexthop.id),
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

    /// A target answers when the uplink is up with carrier, neither it nor
    /// the target is silenced, and a route through the uplink (probe
    /// sockets are bound to it) reaches the target; in the uplink's round
    /// trip ([`KernelModel::set_rtt`], 1 ms unless set) within the timeout.
    async fn probe(&self, plans: &[ProbePlan], timeout: Duration) -> Vec<ProbeResult> {
        let mut state = self.state();
        for plan in plans {
            *state.probes_sent.entry(plan.interface.clone()).or_default() += plan.targets.len();
            // Probes are traffic too: sent, and answered unless silent.
            let silent = state.silent.contains(&plan.interface);
            let counters = state.counters.entry(plan.interface.clone()).or_default();
            counters.tx_packets += plan.targets.len() as u64;
            if !silent {
                counters.rx_packets += plan.targets.len() as u64;
            }
        }
        plans
            .iter()
            .map(|plan| {
                let link = state.host.link(&plan.interface);
                let alive =
                    link.is_some_and(|l| l.up && l.carrier) && !state.silent.contains(&plan.interface);
                let index = link.map(|l| l.index);
                let rtt = state.rtt.get(&plan.interface).copied().unwrap_or(Duration::from_millis(1));
                let answers = |target: IpAddr| {
                    rtt <= timeout
                        && alive
                        && !state.silent_targets.contains(&target)
                        && lookup::route_via(&state.host, target, Some(plan.source), index).is_some()
                };
                let targets = plan
                    .targets
                    .iter()
                    .map(|target| TargetAnswer {
                        target: target.clone(),
                        rtt: answers(target.address()).then_some(rtt),
                    })
                    .collect();
                ProbeResult::judged(plan, targets)
            })
            .collect()
    }

    fn set_multipath_hash(&self, hash: crate::config::BalanceHash) -> std::io::Result<()> {
        self.state().multipath_hash = Some(hash);
        Ok(())
    }

    fn flush_ipv6_route_cache(&self) -> std::io::Result<()> {
        self.state().ipv6_flushes += 1;
        Ok(())
    }

    /// The connections the test opened ([`KernelModel::connect`]).
    fn connections(&self) -> std::io::Result<Vec<crate::model::Connection>> {
        Ok(self.state().connections.clone())
    }

    fn listening_ports(&self) -> std::io::Result<BTreeSet<u16>> {
        Ok(self.state().listening.clone())
    }

    /// Removes the connection and records it as `ss -K` would name it.
    fn destroy_connection(&self, connection: &crate::model::Connection) -> std::io::Result<()> {
        let mut state = self.state();
        let before = state.connections.len();
        state.connections.retain(|c| c != connection);
        if state.connections.len() == before {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        }
        state.made.push(format!("ss -K src {} dst {}", connection.local, connection.remote));
        Ok(())
    }

    fn load_guard(
        &self,
        pin_dir: &std::path::Path,
    ) -> Result<crate::guard::plane::LoadedGuard, crate::guard::GuardError> {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.load_refused {
            return Err(crate::guard::GuardError::NotBpffs { path: pin_dir.to_owned(), found: "/".into() });
        }
        state.loads += 1;
        drop(state);
        let plane = Box::new(guard::ModelGuard(Arc::clone(&self.guard)));
        Ok(crate::guard::plane::LoadedGuard { plane, flags: None })
    }

    fn remove_guard(&self, _config: &crate::config::Config) -> Result<Vec<String>, crate::guard::GuardError> {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let removed = std::mem::take(&mut state.attached).into_iter().collect();
        state.uplinks.clear();
        state.enforcement = None;
        Ok(removed)
    }

    fn guard_enforcement(
        &self,
        _pin_dir: &std::path::Path,
    ) -> Result<Option<std::collections::BTreeMap<u32, crate::guard::Enforcement>>, crate::guard::GuardError>
    {
        Ok(self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).enforcement.clone())
    }

    fn set_guard_enforcement(
        &self,
        _pin_dir: &std::path::Path,
        modes: &std::collections::BTreeMap<u32, crate::guard::Enforcement>,
    ) -> Result<bool, crate::guard::GuardError> {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(installed) = &mut state.enforcement else { return Ok(false) };
        installed.clone_from(modes);
        Ok(true)
    }

    fn rp_filter(&self, interface: &str) -> Option<u8> {
        Some(self.state().rp_filter.get(interface).copied().unwrap_or(0))
    }
}
