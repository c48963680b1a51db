//! What the daemon learns besides reconciling: health rounds, and how they
//! show in logs, metrics and the health view.

use super::{Daemon, family_label, hooks, rounds};
use crate::{
    engine::Planned,
    health::{Transition, cadence::ProbeRound, snapshot::HealthSnapshot},
    model::Family,
};

impl Daemon {
    /// One health round: probes answered or not, the gateways' neighbour
    /// state. True when an uplink's health changed (reconcile now).
    pub(super) async fn health_round(&mut self, probes: &ProbeRound) -> bool {
        let Some(last) = &self.last else { return false };
        for result in &probes.results {
            for answer in &result.targets {
                if let Some(rtt) = answer.rtt {
                    self.control.probes.answered(&result.interface, &answer.target.to_string(), rtt);
                }
            }
        }
        let failed = match self.engine.kernel().failed_neighbours().await {
            Ok(failed) => failed,
            Err(err) => {
                tracing::warn!(error = %crate::Chain(&err), "reading neighbours for the health round failed");
                Default::default()
            }
        };
        let settings = &self.engine.config().health;
        let passive = settings.passive.then_some(&self.passive);
        let passive_fault = |interface: &str| passive.and_then(|watch| watch.fault(interface));
        let transitions = rounds::round(
            &mut self.book,
            &last.desired.uplinks,
            probes,
            &failed,
            &passive_fault,
            crate::clock::unix_seconds(),
        );
        let drains_changed = self.drains_changed();
        let last = self.last.take();
        if let Some(last) = &last {
            self.after_health_change(&transitions, last);
        }
        self.last = last;
        self.write_snapshot();
        !transitions.is_empty() || drains_changed
    }

    /// Whether `mhr drain`/`undrain` (or a drain's end) changed what the
    /// last plan drained: then reconcile now.
    fn drains_changed(&self) -> bool {
        let Some(last) = &self.last else { return false };
        let now = crate::clock::unix_seconds();
        let drains = match crate::drain::read(&self.engine.config().routing.state_dir, now) {
            Ok(drains) => drains,
            Err(err) => {
                tracing::warn!(error = %crate::Chain(&err), "reading drained uplinks failed");
                return false;
            }
        };
        let planned: Vec<(&str, bool)> =
            last.desired.uplinks.iter().map(|u| (u.interface.as_str(), u.drained.is_some())).collect();
        let mut changed = false;
        for (interface, was) in planned {
            let is = drains.contains_key(interface);
            if is != was {
                tracing::info!(uplink = interface, drained = is, "uplink drain changed");
                changed = true;
            }
        }
        changed
    }

    /// Logs transitions and updates the health metrics.
    pub(super) fn after_health_change(&mut self, transitions: &[Transition], planned: &Planned) {
        for transition in transitions {
            let degraded =
                self.book.get(&transition.interface, transition.family).and_then(|h| h.degraded.clone());
            let reason = match (transition.state, transition.fault) {
                (crate::health::quality::UplinkState::Down, Some(fault)) => fault.to_string(),
                (crate::health::quality::UplinkState::Degraded, _) => degraded.unwrap_or_default(),
                _ => "recovered".to_owned(),
            };
            tracing::info!(
                uplink = %transition.interface,
                family = %transition.family,
                state = transition.state.name(),
                previous = transition.previous.name(),
                reason,
                "uplink health changed"
            );
        }
        self.hook_pending.extend(transitions.iter().cloned());
        let routed: Vec<(String, Family)> = planned
            .desired
            .uplinks
            .iter()
            .flat_map(|u| u.health.iter().map(|v| (u.interface.clone(), v.family)))
            .collect();
        self.book.retain(|interface, family| routed.iter().any(|(i, f)| i == interface && *f == family));
        let config = self.engine.config();
        let configured = |interface: &str| config.uplinks.iter().any(|u| u.interface == interface);
        let mut exported = std::collections::BTreeSet::new();
        let drained = |interface: &str| {
            planned.desired.uplinks.iter().any(|u| u.interface == interface && u.drained.is_some())
        };
        for ((interface, family), entry) in self.book.entries() {
            self.control.uplink_health(interface, family_label(*family), entry, drained(interface));
            exported.insert((interface.clone(), *family));
        }
        // A configured uplink whose interface is gone stays exported, unhealthy.
        for (interface, family) in &self.exported_health {
            if !exported.contains(&(interface.clone(), *family)) && configured(interface) {
                self.control.uplink_missing(interface, family_label(*family));
                exported.insert((interface.clone(), *family));
            }
        }
        // Series of an uplink no longer configured.
        for (interface, family) in self.exported_health.difference(&exported) {
            self.control.forget_uplink_health(interface, family_label(*family));
        }
        self.exported_health = exported;
        self.export_target_loss();
    }

    /// Each probe target's loss; the series of targets no longer configured go.
    fn export_target_loss(&mut self) {
        let config = self.engine.config();
        let mut exported = std::collections::BTreeSet::new();
        for ((interface, _), entry) in self.book.entries() {
            for stats in &entry.targets {
                self.control.probes.loss(interface, &stats.target, stats.loss);
                exported.insert((interface.clone(), stats.target.clone()));
            }
        }
        let configured = |interface: &str, target: &str| {
            config
                .uplinks
                .iter()
                .any(|u| u.interface == interface && u.probe.iter().any(|t| t.to_string() == target))
        };
        for (interface, target) in &self.exported_targets {
            if !exported.contains(&(interface.clone(), target.clone())) {
                if configured(interface, target) {
                    exported.insert((interface.clone(), target.clone()));
                } else {
                    self.control.probes.forget(interface, target);
                }
            }
        }
        self.exported_targets = exported;
    }

    /// Logs an uplink becoming blocked or free again; the metric per uplink.
    pub(super) fn record_blocked(&mut self, planned: &Planned) {
        for uplink in &self.engine.config().uplinks {
            let reason = planned
                .desired
                .uplinks
                .iter()
                .find(|u| u.interface == uplink.interface)
                .and_then(|u| u.blocked.clone());
            let labels = vec![("uplink".to_owned(), uplink.interface.clone())];
            let gauge = self.control.uplink_blocked.get_or_create(&labels);
            let was_blocked = gauge.get() == 1;
            match &reason {
                Some(reason) if !was_blocked => {
                    tracing::warn!(uplink = %uplink.interface, %reason, "uplink left as it is; the others go on")
                }
                None if was_blocked => tracing::info!(uplink = %uplink.interface, "uplink no longer blocked"),
                _ => {}
            }
            gauge.set(i64::from(reason.is_some()));
        }
    }

    /// Counts and logs a change of the uplink holding main's default.
    pub(super) fn record_active(&mut self, planned: &Planned) {
        let active = &planned.desired.active;
        let before_all = self.active.clone();
        for family in [Family::V4, Family::V6] {
            let before = self.active.get(&family);
            let now = active.get(&family);
            if before.is_some() && before != now {
                self.control.failover(family_label(family), true);
                let reasons: Vec<String> = before
                    .into_iter()
                    .flatten()
                    .filter_map(|uplink| {
                        let entry = self.book.get(uplink, family)?;
                        Some(format!(
                            "{uplink}: {}",
                            entry.fault.map_or("healthy".to_owned(), |f| f.to_string())
                        ))
                    })
                    .collect();
                tracing::warn!(
                    family = %family,
                    from = %before.map(|u| u.join("+")).unwrap_or_default(),
                    to = %now.map(|u| u.join("+")).unwrap_or_else(|| "none".to_owned()),
                    reason = %reasons.join(", "),
                    "main's default route moved"
                );
            }
        }
        for uplink in &self.engine.config().uplinks {
            for family in [Family::V4, Family::V6] {
                let holds = active.get(&family).is_some_and(|u| u.contains(&uplink.interface));
                let known = self.book.get(&uplink.interface, family).is_some();
                if holds || known {
                    self.control.uplink_active(&uplink.interface, family_label(family), holds);
                }
            }
        }
        self.fire_hooks(&before_all, planned);
        self.active = active.clone();
    }

    /// The health view for `mhr status` (best effort: a failed write is logged).
    pub(super) fn write_snapshot(&self) {
        let mut snapshot = HealthSnapshot::of(&self.book, &self.active, crate::clock::unix_seconds());
        snapshot.guard_error = self.guard_retry.error().map(str::to_owned);
        if let Err(err) = crate::state::write_health(&self.engine.config().routing.state_dir, &snapshot) {
            self.control.state_write_errors.inc();
            tracing::debug!(error = %crate::error_chain(&err), "writing the health snapshot failed");
        }
    }

    /// Fires the hooks of the state changes since the last reconcile, of
    /// uplinks newly drained, and of main's default moving: after the
    /// plan, so that `MHR_ACTIVE_UPLINK` is where main's default is now.
    /// Returns at once (the hooks run on their own tasks).
    fn fire_hooks(&mut self, before: &std::collections::BTreeMap<Family, Vec<String>>, planned: &Planned) {
        use crate::{config::HookEvent, health::quality::UplinkState};
        let active = &planned.desired.active;
        let holder = |family: Family| active.get(&family).map(|u| u.join("+")).unwrap_or_default();
        let state = |book: &crate::health::HealthBook, uplink: &str, family: Family| {
            let drained =
                planned.desired.uplinks.iter().any(|u| u.interface == uplink && u.drained.is_some());
            match book.get(uplink, family) {
                _ if drained => UplinkState::Drained,
                Some(entry) => entry.state(),
                None => UplinkState::Down,
            }
        };
        let pending = std::mem::take(&mut self.hook_pending);
        let mut runs = Vec::new();
        for transition in pending.iter().filter(|t| t.state != t.previous) {
            let event = match transition.state {
                UplinkState::Healthy => HookEvent::Up,
                UplinkState::Degraded => HookEvent::Degraded,
                UplinkState::Down => HookEvent::Down,
                UplinkState::Drained => HookEvent::Drained,
            };
            runs.push(hooks::HookRun {
                event,
                uplink: transition.interface.clone(),
                family: transition.family,
                state: transition.state.name(),
                previous: transition.previous.name(),
                active: holder(transition.family),
            });
        }
        let drained: std::collections::BTreeSet<String> = planned
            .desired
            .uplinks
            .iter()
            .filter(|u| u.drained.is_some())
            .map(|u| u.interface.clone())
            .collect();
        for uplink in planned.desired.uplinks.iter().filter(|u| !self.hook_drained.contains(&u.interface)) {
            if uplink.drained.is_none() {
                continue;
            }
            for family in uplink.health.iter().map(|h| h.family) {
                let previous =
                    self.book.get(&uplink.interface, family).map_or(UplinkState::Down, |e| e.state());
                runs.push(hooks::HookRun {
                    event: HookEvent::Drained,
                    uplink: uplink.interface.clone(),
                    family,
                    state: UplinkState::Drained.name(),
                    previous: previous.name(),
                    active: holder(family),
                });
            }
        }
        self.hook_drained = drained;
        // Main's default moved: MHR_UPLINK is the uplink it left.
        for family in [Family::V4, Family::V6] {
            let (Some(from), now) = (before.get(&family), active.get(&family)) else { continue };
            if Some(from) == now {
                continue;
            }
            let left = from.join("+");
            let now_state = from.first().map_or(UplinkState::Down, |u| state(&self.book, u, family));
            let previous = pending
                .iter()
                .find(|t| t.family == family && from.contains(&t.interface))
                .map_or(now_state, |t| t.previous);
            runs.push(hooks::HookRun {
                event: HookEvent::Failover,
                uplink: left,
                family,
                state: now_state.name(),
                previous: previous.name(),
                active: holder(family),
            });
        }
        for run in &runs {
            drop(self.hooks.fire(run));
        }
    }
}
