//! The one place that changes routes and rules: executes a plan's actions
//! through the southbound and, if one fails, undoes the ones already done.

use std::path::Path;

use futures::StreamExt as _;

use crate::{
    model::{MovedRoute, Names, Route},
    plan::{Action, route_key},
    southbound::{Change, KernelError, Southbound},
    state::{self, StateError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `action` is the failed action (`failed`) as people read it;
    /// `rollback` lists the undo steps that failed too.
    #[error("{action} failed: {error}{}", rollback_note(.rollback))]
    Action { action: String, failed: Box<Action>, error: ActionError, rollback: Vec<UndoFailed> },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why one action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The record of a moved default route could not be written, so the
    /// route was left where it is.
    #[error("recording the moved route: {}", crate::error_chain(.0))]
    Record(StateError),
}

/// An undo step of a failed apply that failed too: the host keeps that
/// part of the apply.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {error}")]
pub struct UndoFailed {
    /// The undo step as people read it.
    pub action: String,
    pub error: ActionError,
}

fn rollback_note(rollback: &[UndoFailed]) -> String {
    if rollback.is_empty() {
        "; every change this apply made was undone".to_owned()
    } else {
        let failed: Vec<String> = rollback.iter().map(ToString::to_string).collect();
        format!("; undoing earlier changes also failed: {}", failed.join("; "))
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
///
/// Nexthop requests go over a socket of their own, so one waits for every
/// request before it and the ones after it wait for it: a group exists
/// before the route that uses it, a route is gone before its group.
async fn pipelined<'a>(
    kernel: &dyn Southbound,
    actions: impl IntoIterator<Item = &'a Action>,
    state_dir: &Path,
) -> Vec<(&'a Action, Result<Effect, ActionError>)> {
    let mut outcomes = Vec::new();
    let mut run: Vec<&'a Action> = Vec::new();
    for action in actions {
        if action.is_nexthop() {
            outcomes.extend(in_flight(kernel, std::mem::take(&mut run), state_dir).await);
            outcomes.push((action, execute_one(kernel, action, state_dir).await));
        } else {
            run.push(action);
        }
    }
    outcomes.extend(in_flight(kernel, run, state_dir).await);
    outcomes
}

async fn in_flight<'a>(
    kernel: &dyn Southbound,
    actions: Vec<&'a Action>,
    state_dir: &Path,
) -> Vec<(&'a Action, Result<Effect, ActionError>)> {
    futures::stream::iter(actions)
        .map(|action| async move { (action, execute_one(kernel, action, state_dir).await) })
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

/// Executes `actions` in order, pipelined. If one fails, undoes every one
/// that changed the kernel (those after it included, already sent) in
/// reverse order and reports the first failed action.
pub async fn execute(
    kernel: &dyn Southbound,
    actions: &[Action],
    names: &Names,
    state_dir: &Path,
) -> Result<usize, ApplyError> {
    execute_undoing(kernel, actions, names, state_dir, &|_, _, _| true).await.map_err(|failed| failed.error)
}

/// A failed [`execute_undoing`]: the first failed action, and how many
/// changes were kept.
#[derive(Debug)]
pub struct PartlyApplied {
    pub error: ApplyError,
    pub kept: usize,
}

/// Which changes a failure undoes: `undo(failed, why, done)` for each
/// change `done` made.
pub type UndoSet<'a> = dyn Fn(&Action, &ActionError, &Action) -> bool + 'a;

/// [`execute`], except that a failure undoes only the changes `undo` picks
/// (an uplink's own, when the kernel refused one of its objects) and keeps
/// the others, counted in [`PartlyApplied::kept`].
pub async fn execute_undoing(
    kernel: &dyn Southbound,
    actions: &[Action],
    names: &Names,
    state_dir: &Path,
    undo: &UndoSet<'_>,
) -> Result<usize, PartlyApplied> {
    let outcomes = pipelined(kernel, actions, state_dir).await;
    let done: Vec<&Action> =
        outcomes.iter().filter(|(_, o)| matches!(o, Ok(Effect::Changed))).map(|(a, _)| *a).collect();
    let Some((action, error)) =
        outcomes.into_iter().find_map(|(action, outcome)| Some((action, outcome.err()?)))
    else {
        return Ok(done.len());
    };
    let (undone, kept): (Vec<&Action>, Vec<&Action>) =
        done.iter().partition(|earlier| undo(action, &error, earlier));
    let inverse: Vec<Action> = undone.iter().rev().map(|earlier| earlier.inverse()).collect();
    let rollback: Vec<UndoFailed> = pipelined(kernel, &inverse, state_dir)
        .await
        .into_iter()
        .filter_map(|(undo, outcome)| {
            Some(UndoFailed { action: undo.describe(names), error: outcome.err()? })
        })
        .collect();
    tracing::warn!(action = %action.describe(names), %error, undone = undone.len(), kept = kept.len(), "apply failed");
    let error = ApplyError::Action {
        action: action.describe(names),
        failed: Box::new(action.clone()),
        error,
        rollback,
    };
    Err(PartlyApplied { error, kept: kept.len() })
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
pub async fn execute_all(
    kernel: &dyn Southbound,
    actions: &[Action],
    names: &Names,
    state_dir: &Path,
) -> BestEffort {
    let mut outcome = BestEffort::default();
    for (action, result) in pipelined(kernel, actions, state_dir).await {
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

async fn execute_one(
    kernel: &dyn Southbound,
    action: &Action,
    state_dir: &Path,
) -> Result<Effect, ActionError> {
    match action {
        Action::AddRoute { route } => changed(kernel.change(&Change::AddRoute(route.clone())).await),
        Action::ReplaceRoute { new, .. } => changed(kernel.change(&Change::ReplaceRoute(new.clone())).await),
        Action::DeleteRoute { route } => delete_route(kernel, route).await,
        Action::AddRule { rule } => changed(kernel.change(&Change::AddRule(rule.clone())).await),
        Action::DeleteRule { rule } => {
            tolerate_missing(kernel.change(&Change::DeleteRule(rule.clone())).await)
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
            .map_err(ActionError::Record)?;
            let outcome = delete_route(kernel, route).await;
            if outcome.is_err() {
                let _ = update_moved(state_dir, |moved| moved.retain(|m| m != &record));
            }
            outcome
        }
        Action::AddNexthop { nexthop } => changed(kernel.change(&Change::AddNexthop(nexthop.clone())).await),
        Action::ReplaceNexthop { new, .. } => {
            changed(kernel.change(&Change::ReplaceNexthop(new.clone())).await)
        }
        Action::DeleteNexthop { nexthop } => {
            tolerate_missing(kernel.change(&Change::DeleteNexthop(nexthop.clone())).await)
        }
        Action::RestoreDefault { route, interface } => {
            let outcome = changed(kernel.change(&Change::AddRoute(route.clone())).await)?;
            update_moved(state_dir, |moved| {
                moved.retain(|m| !(m.interface == *interface && same_default(&m.route, route)));
            })
            .map_err(ActionError::Record)?;
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

async fn delete_route(kernel: &dyn Southbound, route: &Route) -> Result<Effect, ActionError> {
    tolerate_missing(kernel.change(&Change::DeleteRoute(route.clone())).await)
}

fn changed(result: Result<(), KernelError>) -> Result<Effect, ActionError> {
    Ok(result.map(|()| Effect::Changed)?)
}

/// Deleting what is already gone is done (ENOENT/ESRCH).
fn tolerate_missing(result: Result<(), KernelError>) -> Result<Effect, ActionError> {
    match result {
        Ok(()) => Ok(Effect::Changed),
        Err(err) if err.is_missing() => Ok(Effect::AlreadyDone),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_cannot_be_written_says_where_and_why_once() {
        let full = StateError::Write {
            path: "/var/lib/mhr/moved-routes.json".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let text = ActionError::Record(full).to_string();
        let cause = std::io::Error::from_raw_os_error(libc::ENOSPC).to_string();
        assert_eq!(
            text,
            format!("recording the moved route: writing /var/lib/mhr/moved-routes.json: {cause}")
        );
    }
}
