//! What changes the host: applying a plan (all or nothing, or isolating
//! an uplink the kernel refuses), the records kept after it, and `down`.

use std::collections::BTreeMap;

use super::{Applied, Engine, EngineError, Planned};
use crate::{
    apply::{self, ActionError, ApplyError},
    model::{Family, MovedRoute, Names, Observed, RememberedGateway},
    plan::{self, Action, Desired, GatewaySource, PlanError},
    state,
};

impl Engine {
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
            // The uplink a refused action belongs to, unless already blocked.
            let owner = |failed: &Action| {
                plan::owner_of(desired, failed).filter(|index| desired.uplinks[*index].blocked.is_none())
            };
            let undo = |failed: &Action, why: &ActionError, done: &Action| match (why, owner(failed)) {
                (ActionError::Kernel(_), Some(index)) => plan::owner_of(desired, done) == Some(index),
                _ => true,
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
            let Some(index) = owner(failed) else {
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
