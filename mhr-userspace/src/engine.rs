//! The routing engine: observe, plan, apply, tear down. Ties the pure
//! planner to the kernel (through the southbound) and to mhr's files.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    apply::{self, ActionError, ApplyError},
    config::{Config, ConfigError},
    guard::GuardError,
    health::judge::{HealthJudge, InstantJudge, SnapshotJudge},
    health::probe::{ProbePlan, has_path, probe_plans},
    health::snapshot::HealthSnapshot,
    model::{Family, MovedRoute, Names, Observed, RememberedGateway},
    plan::{self, Action, Desired, GatewaySource, Memory, PlanError, Strictness},
    southbound::{ObserveError, RouteScope, Southbound},
    state::{self, StateError},
};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening a netlink socket failed")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("listing the established connections (sock_diag) failed")]
    Connections {
        #[source]
        source: std::io::Error,
    },
}

/// What `apply` would do, and everything it was computed from.
#[derive(Clone, Debug)]
pub struct Planned {
    pub observed: Observed,
    pub desired: Desired,
    pub actions: Vec<Action>,
    pub names: Names,
    /// The rt_tables.d content after applying.
    pub tables: BTreeMap<u32, String>,
}

/// The outcome of `apply` or `down`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub actions: Vec<String>,
    pub changed: usize,
    /// What `down` could not do (it goes on past failures); empty for apply.
    pub failed: Vec<String>,
    /// Why the records beside the kernel (table names, gateways) could not
    /// be written after the kernel changes were made: the routing is in
    /// place regardless, and the next apply or reconcile writes them.
    pub unrecorded: Option<String>,
}

pub struct Engine {
    config: Config,
    kernel: Arc<dyn Southbound>,
    strictness: Strictness,
    /// Where the host's own files are read (network managers, DHCP
    /// leases); None: the machine's (`MHR_HOST_ROOT` for the managers).
    host_root: Option<std::path::PathBuf>,
}

impl Engine {
    /// Opens the netlink sockets in the calling thread's network namespace.
    /// Needs a tokio runtime.
    pub fn connect(config: Config) -> Result<Self, EngineError> {
        let kernel = crate::netlink::Kernel::connect().map_err(EngineError::Connect)?;
        Ok(Self::new(config, Arc::new(kernel)))
    }

    /// An engine on any southbound (the in-memory kernel model in tests).
    pub fn new(config: Config, kernel: Arc<dyn Southbound>) -> Self {
        Self { config, kernel, strictness: Strictness::Strict, host_root: None }
    }

    /// Reads the host's files (network managers, DHCP leases) under `root`
    /// instead of the machine's: a scenario's host is not this machine.
    pub fn with_host_root(mut self, root: std::path::PathBuf) -> Self {
        self.host_root = Some(root);
        self
    }

    /// The network managers beside mhr on this host.
    pub fn neighbours(&self) -> Vec<crate::neighbours::Neighbour> {
        let root = self.host_root.clone().unwrap_or_else(crate::neighbours::host_root);
        crate::neighbours::detect(&root)
    }

    /// The routing tables mhr reads: main, the tables uplinks hold or
    /// held, the next free ones of the range, and where gateways are learned.
    pub fn route_scope(&self) -> Result<RouteScope, EngineError> {
        let routing = &self.config.routing;
        let registry = state::read_tables(&routing.rt_tables_dir)?;
        let mut claimed: std::collections::BTreeSet<u32> = registry.values().copied().collect();
        claimed.extend(self.config.uplinks.iter().filter_map(|u| u.table));
        claimed.insert(routing.default_table());
        let allocations = self
            .config
            .uplinks
            .iter()
            .filter(|u| {
                u.table.is_none() && !registry.get(&u.interface).is_some_and(|t| routing.tables().contains(t))
            })
            .count();
        Ok(RouteScope {
            protocol: routing.protocol,
            range: routing.tables(),
            claimed,
            allocations,
            search_everywhere: registry.is_empty(),
        })
    }

    /// Plans that skip uplinks that cannot be routed yet instead of failing
    /// (the daemon).
    pub fn tolerant(mut self) -> Self {
        self.strictness = Strictness::Tolerant;
        self
    }

    pub fn strictness(&self) -> Strictness {
        self.strictness
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new config (the daemon's reload); the netlink socket stays.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// What the engine asks of the kernel through.
    pub fn kernel(&self) -> &Arc<dyn Southbound> {
        &self.kernel
    }

    pub async fn observe(&self) -> Result<Observed, EngineError> {
        let scope = self.route_scope()?;
        Ok(self.kernel.observe(Some(&scope)).await?)
    }

    fn moved(&self) -> Result<Vec<MovedRoute>, StateError> {
        state::read_moved(&self.config.routing.state_dir)
    }

    /// The tables, moved routes and gateways earlier runs left on disk.
    pub fn memory(&self) -> Result<Memory, EngineError> {
        let routing = &self.config.routing;
        Ok(Memory {
            registry: state::read_tables(&routing.rt_tables_dir)?,
            moved: self.moved()?,
            gateways: state::read_gateways(&routing.state_dir)?,
            leases: BTreeMap::new(),
            drained: crate::drain::read(&routing.state_dir, crate::clock::unix_seconds())?,
        })
    }

    /// Computes the actions `apply` would take, judging uplink health by
    /// what is true now (link state, one round of probes). Changes nothing.
    pub async fn plan(&self) -> Result<Planned, EngineError> {
        self.plan_as(self.strictness).await
    }

    /// [`Engine::plan`] with the given strictness (`status` is tolerant:
    /// it reports an uplink it cannot route instead of failing).
    pub async fn plan_as(&self, strictness: Strictness) -> Result<Planned, EngineError> {
        let observed = self.observe().await?;
        // A running daemon's view (with hysteresis) wins: a one-shot
        // command must not undo its choice.
        if let Some(snapshot) = self.daemon_health() {
            let mut judge = SnapshotJudge(snapshot);
            return self.plan_observed(observed, &mut judge, strictness);
        }
        // Before mhr's tables exist a probe may have no way out of its
        // uplink (a host whose only default is on another one): such a
        // probe would fail for want of a route, not of an upstream.
        let plans: Vec<ProbePlan> =
            probe_plans(&self.config, &observed).into_iter().filter(|p| has_path(&observed, p)).collect();
        let mut judge = InstantJudge::default();
        if !plans.is_empty() {
            let results = self.kernel.probe(&plans, self.config.health.timeout).await;
            judge.probes_failed = results
                .into_iter()
                .filter(|r| !r.outcome.answered)
                .map(|r| (r.interface, r.family))
                .collect();
        }
        self.plan_observed(observed, &mut judge, strictness)
    }

    /// The health view of a running `mhr run` (written every health
    /// round), or None when there is none or it is stale.
    pub fn daemon_health(&self) -> Option<HealthSnapshot> {
        let snapshot: HealthSnapshot = state::read_health(&self.config.routing.state_dir).ok()?;
        let now = crate::clock::unix_seconds();
        let fresh = self.config.health.interval.as_secs() * 3 + 3;
        (snapshot.written + fresh >= now && snapshot.written > 0).then_some(snapshot)
    }

    /// Plans from an observation already made, with the given health judge.
    pub fn plan_observed(
        &self,
        observed: Observed,
        judge: &mut dyn HealthJudge,
        strictness: Strictness,
    ) -> Result<Planned, EngineError> {
        let mut memory = self.memory()?;
        let explicit: BTreeMap<String, std::path::PathBuf> = self
            .config
            .uplinks
            .iter()
            .filter_map(|u| Some((u.interface.clone(), u.dhcp_lease.clone()?)))
            .collect();
        let root = self.host_root.as_deref().unwrap_or(std::path::Path::new("/"));
        memory.leases = crate::leases::gateways(root, &observed.links, &explicit);
        let desired = plan::desired(&self.config, &observed, &memory, strictness, judge)?;
        let actions = plan::diff(&desired, &observed, self.config.routing.protocol);
        Ok(Planned {
            names: observed.names(),
            tables: desired.table_names(&self.config),
            observed,
            desired,
            actions,
        })
    }

    /// Executes a plan: all of it, or (after undoing) none of it. Then
    /// records table names and the uplinks' gateways: a record that cannot
    /// be written (a full disk) never holds the routing back; it is
    /// reported in [`Applied::unrecorded`].
    pub async fn apply(&self, planned: &Planned) -> Result<Applied, EngineError> {
        let routing = &self.config.routing;
        let changed =
            apply::execute(self.kernel.as_ref(), &planned.actions, &planned.names, &routing.state_dir)
                .await?;
        Ok(self.applied(planned, changed))
    }

    /// After routing went in: records table names and gateways, sets the
    /// multipath hash, flushes the IPv6 route cache if anything changed.
    fn applied(&self, planned: &Planned, changed: usize) -> Applied {
        let routing = &self.config.routing;
        let recorded = state::write_tables(&routing.rt_tables_dir, &planned.tables)
            .map_err(EngineError::from)
            .and_then(|()| self.remember_gateways(&planned.desired));
        if self.config.policy == crate::config::Policy::Balance
            && let Err(err) = self.kernel.set_multipath_hash(self.config.balance_hash)
        {
            let hash = self.config.balance_hash;
            tracing::warn!(error = %crate::Chain(&err), ?hash, "setting fib_multipath_hash_policy failed; the kernel's hash stays");
        }
        if changed > 0 {
            self.flush_ipv6_cache();
        }
        Applied {
            actions: describe(&planned.actions, &planned.names),
            changed,
            failed: Vec::new(),
            unrecorded: recorded.err().map(|err| crate::error_chain(&err)),
        }
    }

    /// [`Engine::apply`] that, when the kernel refuses one uplink's object,
    /// undoes only that uplink's changes and leaves it as it was (like a
    /// clash), keeping every other change: one uplink's trouble never holds
    /// back, or churns, the others (the daemon). Any other failure undoes
    /// everything, as `apply` does. `planned` ends as what was applied
    /// (observed again after a refusal); its blocked uplinks say why.
    pub async fn apply_isolating(&self, planned: &mut Planned) -> Result<Applied, EngineError> {
        let routing = &self.config.routing;
        let mut kept = 0;
        // The host before this apply: an isolated uplink is left as it was
        // then, even if a change of its made in an earlier round stayed.
        let mut before: Option<Observed> = None;
        loop {
            let desired = &planned.desired;
            let isolated = |failed: &Action, why: &ActionError| {
                matches!(why, ActionError::Kernel(_))
                    .then(|| plan::owner_of(desired, failed))
                    .flatten()
                    .filter(|index| desired.uplinks[*index].blocked.is_none())
            };
            let undo = |failed: &Action, why: &ActionError, done: &Action| match isolated(failed, why) {
                Some(owner) => plan::owner_of(desired, done) == Some(owner),
                None => true,
            };
            let outcome = apply::execute_undoing(
                self.kernel.as_ref(),
                &planned.actions,
                &planned.names,
                &routing.state_dir,
                &undo,
            )
            .await;
            let failure = match outcome {
                Ok(changed) => return Ok(self.applied(planned, kept + changed)),
                Err(failure) => failure,
            };
            let ApplyError::Action { action, failed, error: ActionError::Kernel(error), .. } = &failure.error
            else {
                return Err(failure.error.into());
            };
            let Some(index) = isolated(failed, &ActionError::Kernel(error.clone())) else {
                return Err(failure.error.into());
            };
            kept += failure.kept;
            let interface = planned.desired.uplinks[index].interface.clone();
            let problem = PlanError::Refused { interface, action: action.clone(), error: error.clone() };
            // The others' changes stayed: plan the rest from the host as it is now.
            let before = before.get_or_insert_with(|| planned.observed.clone());
            let observed = self.observe().await?;
            plan::isolate(&mut planned.desired, before, routing.protocol, index, &problem);
            planned.desired.problems.push(problem);
            planned.actions = plan::diff(&planned.desired, &observed, routing.protocol);
            planned.names = observed.names();
            planned.observed = observed;
        }
    }

    /// Records every gateway learned from something other than memory, so a
    /// link that flaps (the kernel drops its routes) or a restart without
    /// any route left still knows where to send.
    fn remember_gateways(&self, desired: &Desired) -> Result<(), EngineError> {
        let state_dir = &self.config.routing.state_dir;
        let mut remembered = state::read_gateways(state_dir)?;
        let before = remembered.clone();
        remembered.retain(|interface, _| self.config.uplinks.iter().any(|u| u.interface == *interface));
        for uplink in &desired.uplinks {
            for (family, learned) in [(Family::V4, uplink.gateway4), (Family::V6, uplink.gateway6)] {
                let Some((plan::Gateway::Via(gateway), learned_from)) = learned else { continue };
                if matches!(learned_from, GatewaySource::Remembered | GatewaySource::PointToPoint) {
                    continue;
                }
                remembered
                    .entry(uplink.interface.clone())
                    .or_default()
                    .insert(family, RememberedGateway { gateway, learned_from });
            }
        }
        if remembered != before {
            state::write_gateways(state_dir, &remembered)?;
        }
        Ok(())
    }

    /// Removes every route and rule mhr owns and restores the default
    /// routes earlier versions moved out of main. Goes on past failures
    /// (the way back must always work) and reports them in `failed`; a
    /// restore that cannot happen now keeps its record for a later `down`.
    pub async fn down(&self) -> Result<Applied, EngineError> {
        let routing = &self.config.routing;
        let observed = self.observe().await?;
        let moved = self.moved()?;
        let actions = plan::teardown(&observed, routing.protocol, &moved);
        let names = observed.names();
        let outcome = apply::execute_all(self.kernel.as_ref(), &actions, &names, &routing.state_dir).await;
        let mut failed = outcome.failed;
        if let Err(err) = state::write_tables(&routing.rt_tables_dir, &BTreeMap::new()) {
            failed.push(crate::error_chain(&err));
        }
        // A moved route whose owner put it back meanwhile needs no restore.
        let back = |record: &MovedRoute| {
            observed.link(&record.interface).is_some_and(|link| {
                let route = crate::model::Route { interface: Some(link.index), ..record.route.clone() };
                let key = plan::route_key(&route);
                observed.routes.iter().any(|r| r.protocol != routing.protocol && plan::route_key(r) == key)
            })
        };
        let waiting: Vec<MovedRoute> = self.moved()?.into_iter().filter(|r| !back(r)).collect();
        state::write_moved(&routing.state_dir, &waiting)?;
        if outcome.changed > 0 {
            self.flush_ipv6_cache();
        }
        Ok(Applied {
            actions: describe(&actions, &names),
            changed: outcome.changed,
            failed,
            unrecorded: None,
        })
    }
}

impl Engine {
    /// What `apply` checks before its first change: mhr's directories are
    /// writable.
    pub fn preflight(&self) -> Result<(), EngineError> {
        let routing = &self.config.routing;
        for dir in [&routing.rt_tables_dir, &routing.state_dir] {
            state::check_writable(dir)?;
        }
        Ok(())
    }
}

fn describe(actions: &[Action], names: &Names) -> Vec<String> {
    actions.iter().map(|action| action.describe(names)).collect()
}

impl Engine {
    fn flush_ipv6_cache(&self) {
        if let Err(err) = self.kernel.flush_ipv6_route_cache() {
            tracing::warn!(error = %crate::Chain(&err), "flushing the IPv6 route cache failed");
        }
    }
}
