//! The daemon's reconcile: plan against the kernel, apply, keep the guard
//! attached and its maps current, and count what changed and why.

use tokio::time::Instant;

use super::{Daemon, ServiceState, Trigger};
use crate::{
    engine::{EngineError, Planned},
    guard::{Deployment, GuardError},
    health::probe::probe_plans,
};

impl Daemon {
    pub(super) async fn reconcile(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Startup => self.control.resync("startup"),
            Trigger::Overrun => self.control.resync("overrun"),
            Trigger::Periodic => self.control.resync("periodic"),
            Trigger::Event | Trigger::Health | Trigger::GuardCheck | Trigger::Reload => {}
        }
        match self.try_reconcile(trigger).await {
            Ok(changes) => {
                self.control.reconcile(true);
                self.control.last_success.set(crate::clock::unix_seconds_f64());
                // Routing is in place; a guard that cannot load still fails /healthz.
                let state = match self.guard_retry.error() {
                    Some(error) => ServiceState::Failing(format!("the source guard is not running: {error}")),
                    None => ServiceState::Ok,
                };
                self.service.set(state);
                if changes > 0 {
                    tracing::info!(?trigger, changes, "reconciled");
                }
            }
            Err(err) => {
                self.control.reconcile(false);
                let message = crate::error_chain(&err);
                tracing::warn!(?trigger, error = %message, "reconcile failed");
                self.service.set(ServiceState::Failing(message));
            }
        }
    }

    pub(super) async fn try_reconcile(&mut self, trigger: Trigger) -> Result<usize, EngineError> {
        let observed = self.engine.observe().await?;
        // An interface deleted and created again between two reconciles
        // (a new ifindex) is a new uplink: judged as first seen, not by
        // what its predecessor proved.
        if let Some(last) = &self.last {
            for uplink in &last.desired.uplinks {
                if observed.link(&uplink.interface).is_some_and(|link| link.index != uplink.index) {
                    tracing::info!(uplink = %uplink.interface, "interface re-created: judged as new");
                    self.book.forget(&uplink.interface);
                }
            }
        }
        let now = crate::clock::unix_seconds();
        let mut judge =
            crate::health::judge::BookJudge { book: &mut self.book, now, transitions: Vec::new() };
        let mut planned = self.engine.plan_observed(observed, &mut judge, self.engine.strictness())?;
        let transitions = std::mem::take(&mut judge.transitions);
        self.after_health_change(&transitions, &planned);
        let counts_as_drift = !matches!(trigger, Trigger::Startup | Trigger::Health | Trigger::Reload);
        // The guard first: its maps follow the addresses even when a
        // routing change fails (in enforce mode a new address must not be
        // dropped as spoofed while routing is retried). A guard failure does
        // not hold routing back either: both run, the first error is reported.
        let guard_result = self.reconcile_guard(&planned, counts_as_drift);
        match (&guard_result, self.guard_failing_since) {
            (Ok(_), _) => self.guard_failing_since = None,
            (Err(_), None) => self.guard_failing_since = Some(Instant::now()),
            (Err(_), Some(_)) => {}
        }
        match &guard_result {
            Err(err) => self.guard_failed(err),
            Ok(_) if self.guard.is_some() => self.guard_retry.succeeded(),
            Ok(_) => {}
        }
        let changes = *guard_result.as_ref().unwrap_or(&0);
        if counts_as_drift {
            self.pace_corrections(&mut planned);
        }
        let applied = self.engine.apply_isolating(&mut planned).await?;
        if let Some(reason) = &applied.unrecorded {
            self.control.state_write_errors.inc();
            tracing::warn!(%reason, "writing mhr's records failed; routing goes on, the next reconcile retries");
        }
        for action in &planned.actions {
            let drift = self.last.as_ref().is_some_and(|last| action.corrects_drift(&last.desired));
            // One line per change, naming it: what the daemon did is in the log.
            let why = if !counts_as_drift {
                "apply"
            } else if drift {
                "drift"
            } else {
                "host change"
            };
            tracing::info!(change = %action.describe(&planned.names), why, "changed");
            if counts_as_drift && drift {
                self.control.correction(action.kind());
            } else if counts_as_drift {
                self.control.host_change(action.kind());
            }
        }
        self.control.rules_installed.set(planned.desired.rules.len() as i64);
        self.control.routes_installed.set(planned.desired.routes.len() as i64);
        let before = self.active.clone();
        self.record_active(&planned);
        self.failback(&before, &planned).await;
        self.record_blocked(&planned);
        let _ = self.probe_plans.send(probe_plans(self.engine.config(), &planned.observed));
        self.last = Some(planned);
        self.write_snapshot();
        guard_result?;
        Ok(changes + applied.changed)
    }

    /// Holds back corrections of objects another writer keeps removing
    /// (see [`super::fights`]): they wait for their turn, a reconcile is
    /// due then, and the first time an object is contested one line says
    /// what keeps removing what.
    fn pace_corrections(&mut self, planned: &mut Planned) {
        let now = Instant::now();
        self.fights.forget_quiet(now);
        let removers: Vec<String> = self.removers.drain(..).map(super::fights::sender_name).collect();
        let who = if removers.is_empty() { "unknown".to_owned() } else { removers.join(", ") };
        let before = self.last.as_ref().map(|last| &last.desired);
        let (mut retry, mut deferred): (Option<Instant>, u64) = (None, 0);
        let (fights, names) = (&mut self.fights, &planned.names);
        planned.actions.retain(|action| {
            if !before.is_some_and(|desired| action.corrects_drift(desired)) {
                return true;
            }
            let object = action.describe(names);
            match fights.ask(&object, now) {
                super::fights::Decision::Correct { newly_contested, recent } => {
                    if newly_contested {
                        tracing::warn!(
                            change = %object,
                            times = recent,
                            removed_by = %who,
                            "another writer keeps undoing what mhr keeps ({recent} times within {}s); mhr now puts it back at a bounded rate. A network manager that deletes foreign rules and routes? (systemd-networkd: ManageForeignRoutingPolicyRules=no, ManageForeignRoutes=no)",
                            super::fights::WINDOW.as_secs()
                        );
                    }
                    true
                }
                super::fights::Decision::Defer { until } => {
                    retry = Some(retry.map_or(until, |r| r.min(until)));
                    deferred += 1;
                    false
                }
            }
        });
        self.control.drift_deferred.inc_by(deferred);
        self.control.contested_objects.set(i64::try_from(self.fights.contested()).unwrap_or(i64::MAX));
        self.retry_at = retry;
    }

    /// Makes the guard's maps describe the planned uplinks and attaches it
    /// where it is missing, first putting back pins and links someone
    /// removed. Returns the number of links attached.
    pub(super) fn reconcile_guard(
        &mut self,
        planned: &Planned,
        counts_as_drift: bool,
    ) -> Result<usize, crate::guard::GuardError> {
        let Some(guard) = &mut self.guard else { return Ok(0) };
        let uplinks = Deployment::new(self.engine.config()).uplinks(&planned.desired);
        // The maps first: in enforce mode a new address must not be dropped
        // as spoofed while anything else is retried.
        let configured = guard.configure(&uplinks);
        let repaired = guard.repair_pins();
        if let Ok(repinned) = &repaired {
            for pin in repinned {
                tracing::warn!(pin = %pin, "a guard pin was removed; pinned it again");
                self.control.guard_repair(pin.split(' ').next().unwrap_or("map"));
            }
        }
        self.removed_links.extend(guard.forget_detached());
        let held_before = guard.held_pins();
        let mode = self.engine.config().guard.attach;
        let attached = repaired.and(configured).and_then(|()| guard.attach_missing(&uplinks, mode));
        if let Ok(attached) = &attached {
            for attachment in attached {
                let pin = crate::guard::link_pin(&attachment.interface, attachment.ifindex);
                if self.removed_links.remove(&pin) || held_before.contains(&pin) {
                    tracing::warn!(uplink = %attachment.interface, "the guard's link was removed; attached it again");
                    self.control.guard_repair("link");
                } else if counts_as_drift {
                    self.control.correction("guard_attached");
                }
            }
        }
        // An uplink no longer guarded (or re-created) has no link to repair.
        self.removed_links
            .retain(|pin| uplinks.iter().any(|u| crate::guard::link_pin(&u.interface, u.ifindex) == *pin));
        for uplink in &self.engine.config().uplinks {
            let on = guard.attached_in_kernel(&uplink.interface);
            let labels = vec![("uplink".to_owned(), uplink.interface.clone())];
            self.control.guard_attached.get_or_create(&labels).set(i64::from(on));
        }
        attached.map(|attached| attached.len())
    }

    /// Adds new addresses of guarded uplinks to the guard's maps at once,
    /// before the debounced reconcile: in enforce mode a new address's
    /// first packets must not be dropped as spoofed.
    pub(super) fn guard_learns(&mut self, added: &[crate::model::Address]) {
        let (Some(guard), Some(last)) = (&mut self.guard, &self.last) else { return };
        let mut uplinks = Deployment::new(self.engine.config()).uplinks(&last.desired);
        let mut learned = false;
        for address in added {
            let uplink = uplinks.iter_mut().find(|u| u.ifindex == address.interface);
            if let Some(uplink) = uplink
                && !uplink.addresses.contains(&address.address)
            {
                uplink.addresses.push(address.address);
                learned = true;
            }
        }
        if learned && let Err(err) = guard.configure(&uplinks) {
            tracing::warn!(error = %crate::Chain(&err), "adding a new address to the guard failed; the reconcile retries");
        }
    }

    /// Loads the guard and starts its flag log; on failure routing goes on
    /// and the load is retried with backoff. True once loaded.
    pub(super) fn load_guard(&mut self, options: &super::DaemonOptions) -> bool {
        if !self.guard_retry.due(now()) {
            return false;
        }
        let pin_dir = self.engine.config().guard.pin_dir.clone();
        let loaded = match self.engine.kernel().load_guard(&pin_dir) {
            Ok(loaded) => loaded,
            Err(err) => {
                self.guard_failed(&err);
                return false;
            }
        };
        if let Some(source) = loaded.flags {
            let log = super::flags::FlagLog {
                per_second: options.flag_log_per_second,
                summary_interval: options.flag_summary_interval,
                lines_suppressed: self.control.flag_lines_suppressed.clone(),
                records_folded: self.control.flag_records_folded.clone(),
            };
            tokio::spawn(super::flags::log_flags(source, log));
        }
        let mut plane = loaded.plane;
        // Before the sandbox: attaching tracepoints needs what loading does.
        // Without passive health, whatever an earlier instance left counting
        // is switched off.
        let passive = self.engine.config().health.passive;
        if let Err(err) = plane.watch_tcp(passive) {
            tracing::warn!(error = %crate::Chain(&err), "passive TCP quality is off: its tracepoints could not be attached");
        }
        self.guard = Some(plane);
        self.guard_retry.succeeded();
        true
    }

    /// Counts and logs a guard failure and schedules the next try.
    fn guard_failed(&mut self, err: &GuardError) {
        let wait = self.guard_retry.failed(now(), err);
        self.control.guard_failure(err.reason());
        tracing::warn!(error = %crate::Chain(&err), reason = err.reason(), retry_in = ?wait, "the source guard failed; routing goes on, retrying");
    }

    /// Whether an uplink the guard should be on runs without it.
    pub(super) fn guard_lost(&mut self) -> bool {
        let (Some(guard), Some(last)) = (&mut self.guard, &self.last) else { return false };
        let uplinks = Deployment::new(self.engine.config()).uplinks(&last.desired);
        // Any guard program counts, an earlier instance's included: exiting
        // while one still runs would only take it away.
        uplinks.iter().any(|uplink| {
            !guard.attached_in_kernel(&uplink.interface)
                && guard.any_guard_runs(&uplink.interface) == Some(false)
        })
    }

    /// Whether a guard pin or link is gone, or the guard is failing.
    pub(super) fn guard_needs_repair(&mut self) -> bool {
        let Some(guard) = &mut self.guard else { return false };
        if self.guard_failing_since.is_some() {
            return self.guard_retry.due(now());
        }
        if !guard.pins_intact() {
            return true;
        }
        let held: Vec<String> = self
            .engine
            .config()
            .uplinks
            .iter()
            .map(|uplink| uplink.interface.clone())
            .filter(|interface| guard.holds(interface))
            .collect();
        held.iter().any(|interface| !guard.attached_in_kernel(interface))
    }

    pub(super) async fn cleanup(&mut self) {
        match self.engine.down().await {
            Ok(applied) => tracing::info!(changes = applied.changed, "routing removed"),
            Err(err) => tracing::warn!(error = %crate::Chain(&err), "removing routing failed"),
        }
        if self.guard.take().is_some() {
            match self.engine.kernel().remove_guard(self.engine.config()) {
                Ok(detached) => tracing::info!(?detached, "guard removed"),
                Err(err) => tracing::warn!(error = %crate::Chain(&err), "removing the guard failed"),
            }
        }
    }
}

/// Now on the daemon's clock (tokio's: the same as the system's, but one a
/// scenario test can pause and advance), for the guard's retry backoff.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
