//! The routing engine: observe, plan, apply, tear down. Ties the pure
//! planner to the kernel (rtnetlink) and to mhr's files.

use std::collections::BTreeMap;

use rtnetlink::Handle;

use crate::{
    apply::{self, ApplyError},
    config::{Config, ConfigError, GuardMode},
    datapath::AttachMode,
    guard::{Guard, GuardAttachment, GuardError, GuardUplink},
    model::Names,
    observe::{self, ObserveError, Observed},
    plan::{self, Action, Desired, PlanError, Strictness},
    state::{self, MovedRoute, StateError},
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
}

pub struct Engine {
    config: Config,
    handle: Handle,
    strictness: Strictness,
}

impl Engine {
    /// Opens the netlink socket in the calling thread's network namespace.
    /// Needs a tokio runtime.
    pub fn connect(config: Config) -> Result<Self, EngineError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(EngineError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { config, handle, strictness: Strictness::Strict })
    }

    /// Plans that skip uplinks that cannot be routed yet instead of failing
    /// (the daemon).
    pub fn tolerant(mut self) -> Self {
        self.strictness = Strictness::Tolerant;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn observe(&self) -> Result<Observed, EngineError> {
        Ok(observe::observe(&self.handle).await?)
    }

    fn moved(&self) -> Result<Vec<MovedRoute>, StateError> {
        state::read_moved(&self.config.routing.state_dir)
    }

    /// Computes the actions `apply` would take. Changes nothing.
    pub async fn plan(&self) -> Result<Planned, EngineError> {
        let observed = self.observe().await?;
        let registry = state::read_tables(&self.config.routing.rt_tables_dir)?;
        let desired = plan::desired(&self.config, &observed, &registry, &self.moved()?, self.strictness)?;
        let actions = plan::diff(&desired, &observed, self.config.routing.protocol);
        Ok(Planned { names: observed.names(), tables: desired.table_names(), observed, desired, actions })
    }

    /// Executes a plan: all of it, or (after undoing) none of it.
    pub async fn apply(&self, planned: &Planned) -> Result<Applied, EngineError> {
        let routing = &self.config.routing;
        let changed =
            apply::execute(&self.handle, &planned.actions, &planned.names, &routing.state_dir).await?;
        state::write_tables(&routing.rt_tables_dir, &planned.tables)?;
        if changed > 0 {
            flush_ipv6_cache();
        }
        Ok(Applied { actions: describe(&planned.actions, &planned.names), changed })
    }

    /// Removes every route and rule mhr owns and restores the default
    /// routes it moved out of main.
    pub async fn down(&self) -> Result<Applied, EngineError> {
        let routing = &self.config.routing;
        let observed = self.observe().await?;
        let moved = self.moved()?;
        let actions = plan::teardown(&observed, routing.protocol, &moved);
        let names = observed.names();
        let changed = apply::execute(&self.handle, &actions, &names, &routing.state_dir).await?;
        state::write_tables(&routing.rt_tables_dir, &BTreeMap::new())?;
        // Routes of interfaces that are gone cannot be restored now: keep
        // their records for a later `down`; the rest are done.
        let waiting: Vec<MovedRoute> =
            moved.into_iter().filter(|record| observed.link(&record.interface).is_none()).collect();
        state::write_moved(&routing.state_dir, &waiting)?;
        if changed > 0 {
            flush_ipv6_cache();
        }
        Ok(Applied { actions: describe(&actions, &names), changed })
    }
}

impl Engine {
    /// What the guard protects: every Ethernet uplink with its current
    /// addresses, `allow` prefixes and mode. The guard parses Ethernet
    /// frames, so L3 devices (tun, WireGuard, PPP) are left unguarded rather
    /// than misread.
    pub fn guard_uplinks(&self, planned: &Planned) -> Vec<GuardUplink> {
        planned
            .desired
            .uplinks
            .iter()
            .filter(|plan| plan.ethernet)
            .filter_map(|plan| {
                let uplink = self.config.uplinks.iter().find(|u| u.interface == plan.interface)?;
                let (mode, enforce_asymmetric) = self.config.guard_mode(uplink);
                Some(GuardUplink {
                    interface: plan.interface.clone(),
                    ifindex: plan.index,
                    addresses: plan.addresses.iter().map(|a| a.addr()).collect(),
                    allow: uplink.allow.clone(),
                    enforce: mode == GuardMode::Enforce,
                    enforce_asymmetric,
                })
            })
            .collect()
    }

    /// Loads the guard, reusing its pinned maps (counters continue). Done
    /// before routing changes, so a missing bpffs or a refused program
    /// stops `apply` before it changes anything.
    pub fn load_guard(&self) -> Result<Guard, EngineError> {
        Ok(Guard::load(&self.config.datapath.pin_dir)?)
    }

    /// Fills the guard's maps and attaches it to every uplink, replacing an
    /// earlier program atomically.
    pub fn apply_guard(
        &self,
        guard: &mut Guard,
        planned: &Planned,
    ) -> Result<Vec<GuardAttachment>, EngineError> {
        let uplinks = self.guard_uplinks(planned);
        guard.configure(&uplinks)?;
        Ok(guard.attach(&uplinks, AttachMode::Auto)?)
    }

    /// Detaches the guard everywhere and removes its pins.
    pub fn down_guard(&self) -> Result<Vec<String>, EngineError> {
        let interfaces: Vec<String> = self.config.uplinks.iter().map(|u| u.interface.clone()).collect();
        Ok(crate::guard::teardown(&self.config.datapath.pin_dir, &interfaces)?)
    }
}

fn describe(actions: &[Action], names: &Names) -> Vec<String> {
    actions.iter().map(|action| action.describe(names)).collect()
}

fn flush_ipv6_cache() {
    if let Err(err) = apply::flush_ipv6_route_cache() {
        tracing::warn!(%err, "flushing the IPv6 route cache failed");
    }
}
