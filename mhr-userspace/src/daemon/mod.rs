//! `mhr run`: apply, then keep routing and the guard true as the host
//! changes. Netlink notifications (debounced), an overrun, or the periodic
//! timer trigger a reconcile through the same plan/diff/apply path as
//! `mhr apply`. Metrics are served over HTTP.

mod flags;
mod health;
mod http;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::{Instant, sleep_until};

pub use crate::netlink::subscribe::{Event, EventSocket};
use crate::{
    config::Config,
    engine::{Engine, EngineError, Planned},
    guard::{Deployment, Guard, GuardMaps},
    health::{HealthBook, Transition},
    metrics::{ControlMetrics, GuardCollector, registry, unix_now},
    model::Family,
    probe::probe_plans,
    probe::{ProbePlan, ProbeResult},
};
pub use health::{HealthRecord, HealthSnapshot, unix_seconds};

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Quiet time after a notification before reconciling.
    pub debounce: Duration,
    /// Reconcile at the latest this long after the first pending notification.
    pub max_delay: Duration,
    /// Periodic full resync: the safety net for anything missed.
    pub resync: Duration,
    /// Remove routing and guard on SIGTERM/SIGINT (default: leave them, so
    /// protection continues while the daemon restarts).
    pub cleanup_on_exit: bool,
    /// Attach and keep the source guard.
    pub guard: bool,
    /// Kernel receive buffer for notifications (bytes).
    pub netlink_buffer: usize,
    /// How often the guard's pins and links are checked against the kernel.
    pub guard_check: Duration,
    /// Exit with an error when the guard could not be repaired for this
    /// long, so that the supervisor restarts mhr.
    pub guard_repair_deadline: Duration,
    /// Flag lines a second that reach the log, in all (the rest are counted).
    pub flag_log_per_second: u32,
    /// At most one summary line per offender per interval.
    pub flag_summary_interval: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            resync: Duration::from_secs(60),
            cleanup_on_exit: false,
            guard: true,
            netlink_buffer: 4 << 20,
            guard_check: Duration::from_secs(1),
            guard_repair_deadline: Duration::from_secs(30),
            flag_log_per_second: 50,
            flag_summary_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("a change is pending confirmation; mhr run waits for it")]
    PendingConfirmation,
    #[error("the source guard could not be repaired for {0:?}; exiting so the supervisor restarts mhr: {1}")]
    GuardLost(Duration, String),
    #[error("subscribing to netlink notifications failed")]
    Events(#[source] std::io::Error),
    #[error("serving metrics on {address} failed")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The last reconcile's outcome, for `/healthz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HealthState {
    /// The first reconcile has not finished.
    #[default]
    Starting,
    Ok,
    Failing(String),
}

#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
}

impl Health {
    fn set(&self, state: HealthState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
    }

    pub fn state(&self) -> HealthState {
        self.state.lock().map(|state| state.clone()).unwrap_or(HealthState::Starting)
    }
}

/// Why a reconcile ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Startup,
    Event,
    Overrun,
    Periodic,
    /// An uplink's health changed in a round.
    Health,
    /// A guard pin or link is gone, or the guard is failing.
    GuardCheck,
    /// A new config (SIGHUP).
    Reload,
}

struct Daemon {
    engine: Engine,
    guard: Option<Guard>,
    control: Arc<ControlMetrics>,
    health: Arc<Health>,
    book: HealthBook,
    /// The last plan: the uplinks health rounds look at.
    last: Option<Planned>,
    /// Per family, the uplinks holding main's default after the last reconcile.
    active: std::collections::BTreeMap<Family, Vec<String>>,
    probe_plans: tokio::sync::watch::Sender<Vec<ProbePlan>>,
    /// Since when the guard has failed to attach or repair, if it does.
    guard_failing_since: Option<Instant>,
    /// The health series exported: uplink, family, primary.
    exported_health: std::collections::BTreeSet<(String, Family, bool)>,
}

/// Runs until `shutdown` completes. Needs a tokio runtime; netlink sockets
/// are opened in the calling thread's network namespace.
pub async fn run(
    config: Config,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (_keep, mut reloads) = tokio::sync::mpsc::channel::<Result<Config, String>>(1);
    run_with_reloads(config, options, shutdown, &mut reloads).await
}

/// [`run`], taking new configs (`mhr run` sends one per SIGHUP, already
/// validated) while it runs.
pub async fn run_with_reloads(
    config: Config,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
    reloads: &mut tokio::sync::mpsc::Receiver<Result<Config, String>>,
) -> Result<(), DaemonError> {
    // The host's routing is this daemon's from now on: `apply`/`down` are refused.
    let _lock = crate::lock::acquire(&config.routing.state_dir, crate::lock::Role::Run, crate::lock::WAIT)?;
    // A change may have become pending between the caller's check and the
    // lock: its guardian needs the lock at the deadline.
    if crate::confirm::read_pending(&config.routing.state_dir).map_err(EngineError::from)?.is_some() {
        return Err(DaemonError::PendingConfirmation);
    }
    // Subscribe first, so nothing that happens during start-up is missed.
    let mut events = EventSocket::open(options.netlink_buffer)
        .map_err(DaemonError::Events)?
        .with_route_filter(crate::netlink::subscribe::RouteFilter::for_config(&config));
    let control = Arc::new(ControlMetrics::default());
    let health = Arc::new(Health::default());
    let collector = GuardCollector::new(config.guard.pin_dir.clone(), config.metrics.top_offenders);
    let registry = Arc::new(registry(&control, collector));
    let address = config.metrics.listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::Metrics { address, source })?;
    tokio::spawn(http::serve(listener, Arc::clone(&registry), Arc::clone(&health)));
    tracing::info!(%address, "serving /metrics and /healthz");

    let pin_dir = config.guard.pin_dir.clone();
    let settings = config.health.clone();
    let engine = Engine::connect(config)?.tolerant();
    let (probe_plans, plans) = tokio::sync::watch::channel(Vec::new());
    let (round_sender, mut rounds) = tokio::sync::mpsc::channel(4);
    tokio::spawn(health::probe_rounds(plans, round_sender, settings.interval, settings.timeout));
    let guard = if options.guard {
        let mut guard = Guard::load(&pin_dir).map_err(EngineError::from)?;
        let ring = guard.take_flags().map_err(EngineError::from)?;
        if let Some(names) = GuardMaps::from_pins(&pin_dir).map_err(EngineError::from)? {
            let log = flags::FlagLog {
                per_second: options.flag_log_per_second,
                summary_interval: options.flag_summary_interval,
                lines_suppressed: control.flag_lines_suppressed.clone(),
                records_folded: control.flag_records_folded.clone(),
            };
            tokio::spawn(flags::log_flags(ring, names, log));
        }
        Some(guard)
    } else {
        None
    };
    let uplink_names: Vec<&str> = engine.config().uplinks.iter().map(|u| u.interface.as_str()).collect();
    control.initialise(&uplink_names);
    control.config_reload_success.set(1);
    let mut book = HealthBook::new(settings.clone());
    book.set_probed(health::probed(engine.config()));
    health::remember(&mut book, &engine.config().routing.state_dir, health::unix_seconds());
    health::startup_round(&engine, &mut book, settings.timeout).await;
    let active = std::collections::BTreeMap::new();
    let mut daemon = Daemon {
        engine,
        guard,
        control,
        health,
        book,
        last: None,
        active,
        probe_plans,
        guard_failing_since: None,
        exported_health: Default::default(),
    };
    daemon.reconcile(Trigger::Startup).await;
    // systemd (Type=notify): started once the first reconcile ran; the
    // watchdog is fed from this loop, so a hung loop gets restarted.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog_enabled = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut watchdog = tokio::time::interval(Duration::from_micros(watchdog_usec.max(2_000_000) / 2));
    let mut guard_check = tokio::time::interval(options.guard_check);
    guard_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    tokio::pin!(shutdown);
    let mut resync = tokio::time::interval_at(Instant::now() + options.resync, options.resync);
    let mut first_pending: Option<Instant> = None;
    let far = Duration::from_secs(365 * 24 * 3600);
    loop {
        let deadline = first_pending.map_or(Instant::now() + far, |first| {
            (Instant::now() + options.debounce).min(first + options.max_delay)
        });
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => match event {
                Ok(Event::Changed { added }) => {
                    if !added.is_empty() {
                        daemon.guard_learns(&added);
                    }
                    first_pending.get_or_insert_with(Instant::now);
                }
                Ok(Event::Ignored) => {}
                Ok(Event::Overrun) => {
                    first_pending = None;
                    daemon.reconcile(Trigger::Overrun).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "reading netlink notifications failed; resyncing");
                    first_pending = None;
                    daemon.reconcile(Trigger::Overrun).await;
                }
            },
            () = sleep_until(deadline), if first_pending.is_some() => {
                first_pending = None;
                daemon.reconcile(Trigger::Event).await;
            }
            _ = resync.tick() => daemon.reconcile(Trigger::Periodic).await,
            _ = watchdog.tick(), if watchdog_enabled => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            Some(reload) = reloads.recv() => {
                let config = match reload {
                    Ok(config) => config,
                    Err(reason) => {
                        tracing::error!(error = %reason, "reloading the config failed; the running config stays");
                        daemon.control.config_reloaded(false);
                        continue;
                    }
                };
                daemon.control.config_reloaded(true);
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                daemon.reload(config);
                events.set_route_filter(crate::netlink::subscribe::RouteFilter::for_config(daemon.engine.config()));
                first_pending = None;
                daemon.reconcile(Trigger::Reload).await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            _ = guard_check.tick(), if daemon.guard.is_some() => {
                if daemon.guard_needs_repair() {
                    daemon.reconcile(Trigger::GuardCheck).await;
                }
                // While the kernel still runs the guard (this process holds
                // its links), staying up keeps it; exit once it is really gone.
                if let Some(since) = daemon.guard_failing_since
                    && since.elapsed() >= options.guard_repair_deadline
                    && daemon.guard_lost()
                {
                    let HealthState::Failing(error) = daemon.health.state() else { continue };
                    tracing::error!(%error, "the source guard could not be repaired; exiting");
                    let _ = crate::state::retire_health(&daemon.engine.config().routing.state_dir);
                    return Err(DaemonError::GuardLost(options.guard_repair_deadline, error));
                }
            }
            Some(results) = rounds.recv() => {
                if daemon.health_round(&results).await {
                    first_pending = None;
                    daemon.reconcile(Trigger::Health).await;
                }
            }
        }
    }
    tracing::info!("stopping");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    // Without a daemon its health view would mislead `status` and `apply`;
    // the next start reads it.
    let _ = crate::state::retire_health(&daemon.engine.config().routing.state_dir);
    if options.cleanup_on_exit {
        daemon.cleanup().await;
    }
    Ok(())
}

fn family_label(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

impl Daemon {
    async fn reconcile(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Startup => self.control.resync("startup"),
            Trigger::Overrun => self.control.resync("overrun"),
            Trigger::Periodic => self.control.resync("periodic"),
            Trigger::Event | Trigger::Health | Trigger::GuardCheck | Trigger::Reload => {}
        }
        match self.try_reconcile(trigger).await {
            Ok(changes) => {
                self.control.reconcile(true);
                self.control.last_success.set(unix_now());
                self.health.set(HealthState::Ok);
                if changes > 0 {
                    tracing::info!(?trigger, changes, "reconciled");
                }
            }
            Err(err) => {
                self.control.reconcile(false);
                let message = format!("{err:#}");
                tracing::warn!(?trigger, error = %message, "reconcile failed");
                self.health.set(HealthState::Failing(message));
            }
        }
    }

    async fn try_reconcile(&mut self, trigger: Trigger) -> Result<usize, EngineError> {
        let observed = self.engine.observe().await?;
        let now = health::unix_seconds();
        let mut judge = health::BookJudge { book: &mut self.book, now, transitions: Vec::new() };
        let planned = self.engine.plan_observed(observed, &mut judge, self.engine.strictness())?;
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
        let changes = *guard_result.as_ref().unwrap_or(&0);
        let applied = self.engine.apply(&planned).await?;
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
        self.record_active(&planned);
        self.record_blocked(&planned);
        let _ = self.probe_plans.send(probe_plans(self.engine.config(), &planned.observed));
        self.last = Some(planned);
        self.write_snapshot();
        guard_result?;
        Ok(changes + applied.changed)
    }

    /// Makes the guard's maps describe the planned uplinks and attaches it
    /// where it is missing, first putting back pins and links someone
    /// removed. Returns the number of links attached.
    fn reconcile_guard(
        &mut self,
        planned: &Planned,
        counts_as_drift: bool,
    ) -> Result<usize, crate::guard::GuardError> {
        let Some(guard) = &mut self.guard else { return Ok(0) };
        let uplinks = Deployment::new(self.engine.config()).uplinks(&planned.desired);
        // The maps first: in enforce mode a new address must not be dropped
        // as spoofed while anything else is retried.
        let configured = guard.configure(&uplinks).map(drop);
        let repaired = guard.repair_pins();
        if let Ok(repinned) = &repaired {
            for pin in repinned {
                tracing::warn!(pin = %pin, "a guard pin was removed; pinned it again");
                self.control.guard_repair(pin.split(' ').next().unwrap_or("map"));
            }
        }
        let detached = guard.forget_detached();
        let held_before = guard.held_pins();
        let mode = self.engine.config().guard.attach;
        let attached = repaired.and(configured).and_then(|()| guard.attach_missing(&uplinks, mode));
        if let Ok(attached) = &attached {
            for attachment in attached {
                let pin =
                    format!("{}{}", crate::guard::pin_prefix(&attachment.interface), attachment.ifindex);
                if held_before.contains(&pin) || detached.contains(&pin) {
                    tracing::warn!(uplink = %attachment.interface, "the guard's link was removed; attached it again");
                    self.control.guard_repair("link");
                } else if counts_as_drift {
                    self.control.correction("guard_attached");
                }
            }
        }
        for uplink in &self.engine.config().uplinks {
            let on = guard.attached_in_kernel(&uplink.interface);
            let labels = vec![("uplink".to_owned(), uplink.interface.clone())];
            self.control.guard_attached.get_or_create(&labels).set(i64::from(on));
        }
        attached.map(|attached| attached.len())
    }

    /// Takes a new config. What the running process is built around (the
    /// metrics listener, pins, state and health settings) keeps its old
    /// value until a restart, and says so.
    fn reload(&mut self, mut config: Config) {
        let old = self.engine.config().clone();
        let mut kept = Vec::new();
        if config.metrics.listen != old.metrics.listen {
            kept.push("[metrics] listen");
        }
        if config.guard.pin_dir != old.guard.pin_dir {
            kept.push("[guard] pin_dir");
        }
        if config.routing.state_dir != old.routing.state_dir {
            kept.push("[routing] state_dir");
        }
        if config.health != old.health {
            kept.push("[health]");
        }
        // What marks and places mhr's objects: changing it live would make
        // them all look foreign.
        if config.routing.protocol != old.routing.protocol {
            kept.push("[routing] protocol");
        }
        if config.routing.table_range != old.routing.table_range {
            kept.push("[routing] table_range");
        }
        config.routing.protocol = old.routing.protocol;
        config.routing.table_range = old.routing.table_range;
        config.metrics.listen = old.metrics.listen;
        config.guard.pin_dir = old.guard.pin_dir.clone();
        config.routing.state_dir = old.routing.state_dir.clone();
        config.health = old.health.clone();
        if !kept.is_empty() {
            tracing::warn!(settings = ?kept, "these settings take effect when mhr run restarts");
        }
        let uplinks: Vec<&str> = config.uplinks.iter().map(|u| u.interface.as_str()).collect();
        for gone in old.uplinks.iter().filter(|u| !uplinks.contains(&u.interface.as_str())) {
            self.control.forget_uplink(&gone.interface);
        }
        self.control.initialise(&uplinks);
        self.book.set_probed(health::probed(&config));
        tracing::info!(path = %config.path.display(), "config reloaded");
        self.engine.set_config(config);
    }

    /// Adds new addresses of guarded uplinks to the guard's maps at once,
    /// before the debounced reconcile: in enforce mode a new address's
    /// first packets must not be dropped as spoofed.
    fn guard_learns(&mut self, added: &[crate::model::Address]) {
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
            tracing::warn!(error = %err, "adding a new address to the guard failed; the reconcile retries");
        }
    }

    /// Whether an uplink the guard should be on runs without it.
    fn guard_lost(&mut self) -> bool {
        let (Some(guard), Some(last)) = (&mut self.guard, &self.last) else { return false };
        let uplinks = Deployment::new(self.engine.config()).uplinks(&last.desired);
        // Any guard program counts, an earlier instance's included: exiting
        // while one still runs would only take it away.
        uplinks.iter().any(|uplink| {
            !guard.attached_in_kernel(&uplink.interface)
                && Guard::kernel_runs_any_guard(&uplink.interface) == Some(false)
        })
    }

    /// Whether a guard pin or link is gone, or the guard is failing.
    fn guard_needs_repair(&mut self) -> bool {
        let Some(guard) = &mut self.guard else { return false };
        if self.guard_failing_since.is_some() || !guard.pins_intact() {
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

    /// One health round: probes answered or not, the gateways' neighbour
    /// state. True when an uplink's health changed (reconcile now).
    async fn health_round(&mut self, probes: &[ProbeResult]) -> bool {
        let Some(last) = &self.last else { return false };
        let failed = match crate::observe::failed_neighbours(self.engine.handle()).await {
            Ok(failed) => failed,
            Err(err) => {
                tracing::warn!(error = %err, "reading neighbours for the health round failed");
                Default::default()
            }
        };
        let transitions =
            health::round(&mut self.book, &last.desired.uplinks, probes, &failed, health::unix_seconds());
        let last = self.last.take();
        if let Some(last) = &last {
            self.after_health_change(&transitions, last);
        }
        self.last = last;
        self.write_snapshot();
        !transitions.is_empty()
    }

    /// Logs transitions and updates the health metrics.
    fn after_health_change(&mut self, transitions: &[Transition], planned: &Planned) {
        for transition in transitions {
            let state = if transition.healthy { "healthy" } else { "unhealthy" };
            let reason = transition.fault.map_or_else(|| "recovered".to_owned(), |f| f.to_string());
            tracing::info!(
                uplink = %transition.interface,
                family = %transition.family,
                state,
                reason,
                "uplink health changed"
            );
        }
        let routed: Vec<(String, Family)> = planned
            .desired
            .uplinks
            .iter()
            .flat_map(|u| u.health.iter().map(|v| (u.interface.clone(), v.family)))
            .collect();
        self.book.retain(|interface, family| routed.iter().any(|(i, f)| i == interface && *f == family));
        let config = self.engine.config();
        let role =
            |interface: &str| config.uplinks.iter().find(|u| u.interface == interface).map(|u| u.primary);
        let mut exported = std::collections::BTreeSet::new();
        for ((interface, family), entry) in self.book.entries() {
            let primary = role(interface).unwrap_or(false);
            self.control.uplink_health(interface, family_label(*family), primary, entry);
            exported.insert((interface.clone(), *family, primary));
        }
        // A configured uplink whose interface is gone stays exported, unhealthy.
        for (interface, family, _) in &self.exported_health {
            let known = exported.iter().any(|(i, f, _)| i == interface && f == family);
            if let (false, Some(primary)) = (known, role(interface)) {
                self.control.uplink_missing(interface, family_label(*family), primary);
                exported.insert((interface.clone(), *family, primary));
            }
        }
        // Series of a role the uplink no longer has, or of an uplink no longer configured.
        for (interface, family, primary) in self.exported_health.difference(&exported) {
            let entirely = !exported.iter().any(|(i, f, _)| i == interface && f == family);
            self.control.forget_uplink_health(interface, family_label(*family), *primary, entirely);
        }
        self.exported_health = exported;
    }

    /// Logs an uplink becoming blocked or free again; the metric per uplink.
    fn record_blocked(&mut self, planned: &Planned) {
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
    fn record_active(&mut self, planned: &Planned) {
        let active = &planned.desired.active;
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
        self.active = active.clone();
    }

    /// The health view for `mhr status` (best effort: a failed write is logged).
    fn write_snapshot(&self) {
        let snapshot = HealthSnapshot::of(&self.book, &self.active, health::unix_seconds());
        if let Err(err) = crate::state::write_health(&self.engine.config().routing.state_dir, &snapshot) {
            self.control.state_write_errors.inc();
            tracing::debug!(error = %crate::engine::error_chain(&err), "writing the health snapshot failed");
        }
    }

    async fn cleanup(&mut self) {
        match self.engine.down().await {
            Ok(applied) => tracing::info!(changes = applied.changed, "routing removed"),
            Err(err) => tracing::warn!(error = %err, "removing routing failed"),
        }
        if self.guard.take().is_some() {
            match Deployment::new(self.engine.config()).down() {
                Ok(detached) => tracing::info!(?detached, "guard removed"),
                Err(err) => tracing::warn!(error = %err, "removing the guard failed"),
            }
        }
    }
}
