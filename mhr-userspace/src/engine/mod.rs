//! The routing engine: observe, plan, apply, tear down. Ties the pure
//! planner to the kernel (through the southbound) and to mhr's files.

use std::{collections::BTreeMap, sync::Arc};

mod changes;

use crate::{
    apply::ApplyError,
    config::{Config, ConfigError},
    guard::GuardError,
    health::judge::{HealthJudge, InstantJudge, SnapshotJudge},
    health::probe::{ProbePlan, has_path, probe_plans},
    health::snapshot::HealthSnapshot,
    model::{MovedRoute, Names, Observed},
    plan::{self, Action, Desired, Memory, PlanError, Strictness},
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
}
