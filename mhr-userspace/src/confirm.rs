//! `apply --confirm`: a change that undoes itself unless confirmed, for
//! hosts changed over the very uplinks the change rewires.
//!
//! Before applying, the prior state (mhr's own rules and routes, its
//! rt_tables names, the guard's presence and enforcement) is recorded in
//! `state_dir/pending-confirm.json`, durably. A guardian process in a
//! session of its own (it survives the SSH session's SIGHUP and the
//! applying process's death) restores that state at the deadline unless
//! `mhr confirm` removed the record first. If the guardian is gone (the
//! host rebooted), the next mhr command finishes the rollback. A rolled
//! back config is remembered (`rolled-back.json`) so that `mhr run` does
//! not apply it again; an explicit `mhr apply` clears that.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub mod liveness;

use crate::{
    apply,
    engine::{Engine, EngineError},
    guard::Enforcement,
    model::{Route, Rule},
    plan::{self, Desired},
    state::{self, StateError},
};

/// How often the guardian and the waiting `apply` look at the record.
pub const POLL: Duration = Duration::from_millis(100);

/// What `apply --confirm` recorded before changing anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Tells this change's record from a later one's.
    pub id: String,
    /// Unix time in milliseconds after which the change is rolled back.
    pub deadline_ms: u64,
    pub config_path: PathBuf,
    /// The config as applied: `confirm` must confirm this one.
    pub config_text: String,
    /// The guardian process, once started: for people (status, messages);
    /// its liveness is its lock ([`liveness`]).
    pub guardian: Option<u32>,
    pub prior: Prior,
}

/// The state a rollback restores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prior {
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
    pub tables: BTreeMap<u32, String>,
    /// Per ifindex, the guard's enforcement; `None`: no guard installed.
    pub guard: Option<BTreeMap<u32, Enforcement>>,
    /// The interfaces' names by ifindex then: after a reboot the same
    /// interface can have another index.
    #[serde(default)]
    pub interfaces: BTreeMap<u32, String>,
}

/// A config whose change was rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub id: String,
    pub at: u64,
    /// By `mhr down`, not by the deadline.
    #[serde(default)]
    pub cancelled: bool,
    pub config_path: PathBuf,
    pub config_text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error(
        "a change from {path} is pending confirmation until {deadline} (guardian pid {guardian}); run `mhr confirm` or wait for its rollback"
    )]
    Pending { path: PathBuf, deadline: String, guardian: String },
    #[error("nothing to confirm: no change is pending (it was confirmed, rolled back, or never applied)")]
    NothingPending,
    #[error(
        "the pending change was applied from {pending} as it was then; {given} differs, so it is not confirmed"
    )]
    OtherConfig { pending: PathBuf, given: PathBuf },
    #[error(
        "{path} was rolled back at {at} because its change was not confirmed; apply it again (`mhr apply`, or with --confirm) before mhr run uses it"
    )]
    RolledBack { path: PathBuf, at: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn pending_path(state_dir: &Path) -> PathBuf {
    crate::paths::pending_confirm(state_dir)
}

fn rolled_back_path(state_dir: &Path) -> PathBuf {
    crate::paths::rolled_back(state_dir)
}

pub fn read_pending(state_dir: &Path) -> Result<Option<Pending>, StateError> {
    state::read_json_optional(&pending_path(state_dir))
}

pub fn write_pending(state_dir: &Path, pending: &Pending) -> Result<(), StateError> {
    state::write_json_durably(&pending_path(state_dir), pending)
}

pub fn remove_pending(state_dir: &Path) -> Result<(), StateError> {
    state::remove_file_durably(&pending_path(state_dir))
}

pub fn read_rolled_back(state_dir: &Path) -> Result<Option<RolledBack>, StateError> {
    state::read_json_optional(&rolled_back_path(state_dir))
}

/// An explicit `apply` takes responsibility for the config again.
pub fn clear_rolled_back(state_dir: &Path) -> Result<(), StateError> {
    state::remove_file(&rolled_back_path(state_dir))
}

/// Whether the guardian of `pending` still runs: whether it holds its
/// lock ([`liveness`]). The recorded pid is for people only: it means
/// nothing in another PID namespace, and a reused pid is another process.
pub fn guardian_alive(state_dir: &Path, pending: &Pending) -> bool {
    liveness::guardian_alive(state_dir, &pending.id)
}

impl Pending {
    pub fn refusal(&self) -> ConfirmError {
        ConfirmError::Pending {
            path: self.config_path.clone(),
            deadline: crate::clock::rfc3339(self.deadline_ms / 1000),
            guardian: self.guardian.map_or_else(|| "none".to_owned(), |pid| pid.to_string()),
        }
    }
}

/// The prior state of the host, as far as mhr changes it.
pub async fn capture(engine: &Engine) -> Result<Prior, EngineError> {
    let config = engine.config();
    let protocol = config.routing.protocol;
    let observed = engine.observe().await?;
    let registry = state::read_tables(&config.routing.rt_tables_dir)?;
    let guard = engine.kernel().guard_enforcement(&config.guard.pin_dir)?;
    Ok(Prior {
        interfaces: observed.links.iter().map(|link| (link.index, link.name.clone())).collect(),
        rules: observed.rules.into_iter().filter(|r| r.protocol == protocol).collect(),
        routes: observed.routes.into_iter().filter(|r| r.protocol == protocol).collect(),
        tables: registry.into_iter().map(|(name, table)| (table, name)).collect(),
        guard,
    })
}

/// What a rollback did, and what it could not do.
#[derive(Debug, Default)]
pub struct RolledBackReport {
    pub changed: usize,
    pub failed: Vec<String>,
}

/// Puts back `prior`: mhr's rules and routes exactly (best effort: it goes
/// on past failures and names them), its table names, and the guard.
pub async fn restore(engine: &Engine, prior: &Prior) -> Result<RolledBackReport, EngineError> {
    let config = engine.config();
    let routing = &config.routing;
    let observed = engine.observe().await?;
    // Routes name interfaces by index: map them through the names to the
    // indexes of now (a reboot may have renumbered them).
    let now_index = |old: u32| -> Option<u32> {
        let name = prior.interfaces.get(&old)?;
        observed.link(name).map(|link| link.index)
    };
    let mut lost = Vec::new();
    let routes = prior.routes.iter().filter_map(|route| {
        let mut route = route.clone();
        if let Some(old) = route.interface {
            match now_index(old).or(if prior.interfaces.is_empty() { Some(old) } else { None }) {
                Some(index) => route.interface = Some(index),
                None => {
                    lost.push(format!("{}: its interface is gone", route.destination));
                    return None;
                }
            }
        }
        for hop in &mut route.multipath {
            if let Some(index) = now_index(hop.interface) {
                hop.interface = index;
            }
        }
        Some(route)
    });
    let desired = Desired {
        rules: prior.rules.iter().cloned().collect(),
        routes: routes.collect(),
        ..Desired::default()
    };
    let actions = plan::diff(&desired, &observed, routing.protocol);
    let names = observed.names();
    let outcome = apply::execute_all(engine.kernel().as_ref(), &actions, &names, &routing.state_dir).await;
    let mut report = RolledBackReport { changed: outcome.changed, failed: outcome.failed };
    report.failed.extend(lost);
    if let Err(err) = state::write_tables(&routing.rt_tables_dir, &prior.tables) {
        report.failed.push(crate::error_chain(&err));
    }
    match &prior.guard {
        None => {
            // Through the southbound: a scenario on the kernel model must
            // not detach anything from the machine's own interfaces.
            if let Err(err) = engine.kernel().remove_guard(engine.config()) {
                report.failed.push(format!("removing the guard: {}", crate::Chain(&err)));
            }
        }
        Some(modes) => match engine.kernel().set_guard_enforcement(&config.guard.pin_dir, modes) {
            Ok(true) => {}
            Ok(false) => report.failed.push("the guard's pins are gone; nothing to restore".to_owned()),
            Err(err) => report.failed.push(format!("restoring the guard's modes: {}", crate::Chain(&err))),
        },
    }
    Ok(report)
}

/// Rolls `pending` back, records it, and removes the record. The caller
/// holds the writer lock.
pub async fn roll_back(engine: &Engine, pending: &Pending) -> Result<RolledBackReport, ConfirmError> {
    let state_dir = &engine.config().routing.state_dir;
    let report = restore(engine, &pending.prior).await?;
    let marker = RolledBack {
        id: pending.id.clone(),
        at: crate::clock::unix_seconds(),
        cancelled: false,
        config_path: pending.config_path.clone(),
        config_text: pending.config_text.clone(),
    };
    state::write_json_durably(&rolled_back_path(state_dir), &marker)?;
    remove_pending(state_dir)?;
    liveness::remove(state_dir, &pending.id);
    tracing::warn!(
        config = %pending.config_path.display(),
        changes = report.changed,
        failed = report.failed.len(),
        "change not confirmed in time: rolled back to the state before it"
    );
    Ok(report)
}

/// `down` while a change is pending: the change is gone with everything
/// else, and its config must not come back through `mhr run` either.
pub fn cancel(state_dir: &Path, pending: &Pending) -> Result<(), StateError> {
    let marker = RolledBack {
        id: pending.id.clone(),
        at: crate::clock::unix_seconds(),
        cancelled: true,
        config_path: pending.config_path.clone(),
        config_text: pending.config_text.clone(),
    };
    state::write_json_durably(&rolled_back_path(state_dir), &marker)?;
    remove_pending(state_dir)
}

/// Finishes a rollback whose guardian is gone (a reboot, a kill): for any
/// mhr command before it does anything else. Returns whether it rolled
/// back. The caller holds the writer lock.
pub async fn recover(engine: &Engine) -> Result<bool, ConfirmError> {
    let state_dir = &engine.config().routing.state_dir;
    match read_pending(state_dir)? {
        Some(pending) if !guardian_alive(state_dir, &pending) => {
            roll_back(engine, &pending).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
