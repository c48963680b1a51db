//! The one place that changes routes and rules: executes a plan's actions
//! over rtnetlink and, if one fails, undoes the ones already done.

use std::path::Path;

use futures::StreamExt as _;
use rtnetlink::Handle;

use crate::{
    model::{MovedRoute, Names, Route},
    netlink::encode::{describe_error, route_message, rule_message},
    plan::{Action, route_key},
    state::{self, StateError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{action} failed: {reason}{}", rollback_note(.rollback))]
    Action { action: String, reason: String, rollback: Vec<String> },
    #[error(transparent)]
    State(#[from] StateError),
}

fn rollback_note(rollback: &[String]) -> String {
    if rollback.is_empty() {
        "; every change this apply made was undone".to_owned()
    } else {
        format!("; undoing earlier changes also failed: {}", rollback.join("; "))
    }
}

/// Whether an action changed the kernel (and so needs undoing on failure).
enum Effect {
    Changed,
    AlreadyDone,
}

/// Requests in flight at once. The kernel handles a socket's requests in
/// the order they were sent, so an action still finds what the ones
/// before it made (a table's prefix route before its default via the
/// gateway); each acknowledgement is matched to its action by sequence
/// number, so a failure is still the failing action's.
const IN_FLIGHT: usize = 64;

/// Each action's outcome, in order, with up to [`IN_FLIGHT`] requests in
/// flight.
async fn pipelined<'a>(
    handle: &Handle,
    actions: impl IntoIterator<Item = &'a Action>,
    state_dir: &Path,
) -> Vec<(&'a Action, Result<Effect, String>)> {
    futures::stream::iter(actions)
        .map(|action| async move { (action, execute_one(handle, action, state_dir).await) })
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

/// Executes `actions` in order, pipelined. If one fails, undoes every one
/// that changed the kernel (those after it included, already sent) in
/// reverse order and reports the first failed action.
pub async fn execute(
    handle: &Handle,
    actions: &[Action],
    names: &Names,
    state_dir: &Path,
) -> Result<usize, ApplyError> {
    let outcomes = pipelined(handle, actions, state_dir).await;
    let done: Vec<&Action> =
        outcomes.iter().filter(|(_, o)| matches!(o, Ok(Effect::Changed))).map(|(a, _)| *a).collect();
    let Some((action, Err(reason))) = outcomes.iter().find(|(_, o)| o.is_err()) else {
        return Ok(done.len());
    };
    let undo: Vec<Action> = done.iter().rev().map(|earlier| earlier.inverse()).collect();
    let rollback: Vec<String> = pipelined(handle, &undo, state_dir)
        .await
        .into_iter()
        .filter_map(|(undo, outcome)| Some(format!("{}: {}", undo.describe(names), outcome.err()?)))
        .collect();
    tracing::warn!(action = %action.describe(names), %reason, undone = done.len(), "apply failed");
    Err(ApplyError::Action { action: action.describe(names), reason: reason.clone(), rollback })
}

/// What a best-effort run did.
#[derive(Debug, Default)]
pub struct BestEffort {
    pub changed: usize,
    /// One line per action that failed: what, and why.
    pub failed: Vec<String>,
}

/// Executes every action, pipelined, going on past failures (`down`: the
/// way back must finish even when part of the host is gone). Nothing is
/// undone.
pub async fn execute_all(handle: &Handle, actions: &[Action], names: &Names, state_dir: &Path) -> BestEffort {
    let mut outcome = BestEffort::default();
    for (action, result) in pipelined(handle, actions, state_dir).await {
        match result {
            Ok(Effect::Changed) => outcome.changed += 1,
            Ok(Effect::AlreadyDone) => {}
            Err(reason) => {
                tracing::warn!(action = %action.describe(names), %reason, "could not be done; going on");
                outcome.failed.push(format!("{}: {reason}", action.describe(names)));
            }
        }
    }
    outcome
}

async fn execute_one(handle: &Handle, action: &Action, state_dir: &Path) -> Result<Effect, String> {
    match action {
        Action::AddRoute { route } => add_route(handle, route).await,
        Action::ReplaceRoute { new, .. } => {
            changed(handle.route().add(route_message(new)).replace().execute().await)
        }
        Action::DeleteRoute { route } => delete_route(handle, route).await,
        Action::AddRule { rule } => {
            let mut request = handle.rule().add();
            *request.message_mut() = rule_message(rule);
            changed(request.execute().await)
        }
        Action::DeleteRule { rule } => {
            tolerate_missing(handle.rule().del(rule_message(rule)).execute().await)
        }
        Action::ReleaseDefault { route, interface } => {
            // Record first: if mhr dies right after the delete, `down` still
            // knows what to put back.
            let record = MovedRoute { interface: interface.clone(), route: route.clone() };
            update_moved(state_dir, |moved| {
                // One record per interface and kernel route key: a route
                // moved again (re-created interface, renewed lease) replaces
                // the older record, so `down` restores it once.
                moved.retain(|m| {
                    !(m.interface == record.interface && route_key(&m.route) == route_key(&record.route))
                });
                moved.push(record.clone());
            })
            .map_err(|err| err.to_string())?;
            let outcome = delete_route(handle, route).await;
            if outcome.is_err() {
                let _ = update_moved(state_dir, |moved| moved.retain(|m| m != &record));
            }
            outcome
        }
        Action::RestoreDefault { route, interface } => {
            let outcome = add_route(handle, route).await?;
            update_moved(state_dir, |moved| {
                moved.retain(|m| !(m.interface == *interface && same_default(&m.route, route)));
            })
            .map_err(|err| err.to_string())?;
            Ok(outcome)
        }
    }
}

/// A recorded route and its restored copy differ at most in ifindex.
fn same_default(recorded: &Route, restored: &Route) -> bool {
    Route { interface: restored.interface, ..recorded.clone() } == *restored
}

fn update_moved(state_dir: &Path, change: impl FnOnce(&mut Vec<MovedRoute>)) -> Result<(), StateError> {
    let mut moved = state::read_moved(state_dir)?;
    change(&mut moved);
    state::write_moved(state_dir, &moved)
}

async fn add_route(handle: &Handle, route: &Route) -> Result<Effect, String> {
    changed(handle.route().add(route_message(route)).execute().await)
}

async fn delete_route(handle: &Handle, route: &Route) -> Result<Effect, String> {
    tolerate_missing(handle.route().del(route_message(route)).execute().await)
}

fn changed(result: Result<(), rtnetlink::Error>) -> Result<Effect, String> {
    result.map(|()| Effect::Changed).map_err(|err| describe_error(&err))
}

/// Deleting what is already gone is done (ENOENT/ESRCH).
fn tolerate_missing(result: Result<(), rtnetlink::Error>) -> Result<Effect, String> {
    match result {
        Ok(()) => Ok(Effect::Changed),
        Err(rtnetlink::Error::NetlinkError(message))
            if matches!(-message.raw_code(), libc::ENOENT | libc::ESRCH) =>
        {
            Ok(Effect::AlreadyDone)
        }
        Err(err) => Err(describe_error(&err)),
    }
}

/// Multipath routes hash flows by addresses only by default; `balance`
/// wants flows of one host pair spread too: hash on the L4 five-tuple
/// (policy 1), for both families.
pub fn use_l4_multipath_hash() -> std::io::Result<()> {
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/fib_multipath_hash_policy");
        if std::fs::read_to_string(&path)?.trim() != "1" {
            std::fs::write(&path, "1")?;
        }
    }
    Ok(())
}

/// IPv6 keeps a route cache; IPv4 has had none since Linux 3.6, so there is
/// nothing to flush there.
pub fn flush_ipv6_route_cache() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv6/route/flush", "1")
}
