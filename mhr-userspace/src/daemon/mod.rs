//! `mhr run`: apply, then keep routing and the guard true as the host
//! changes. Netlink notifications (debounced), an overrun, or the periodic
//! timer trigger a reconcile through the same plan/diff/apply path as
//! `mhr apply`. Metrics are served over HTTP.

mod endpoint;
mod failback;
mod fights;
mod flags;
pub mod hooks;
mod http;
mod options;
mod passive;
mod reconcile;
mod reload;
mod report;
mod rounds;
pub mod web;

pub use endpoint::{Endpoint, Service, ServiceState};
pub use options::DaemonOptions;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::time::{Instant, sleep_until};

use crate::{
    config::Config,
    engine::{Engine, EngineError, Planned},
    guard::retry::GuardRetry,
    health::{HealthBook, probe::ProbePlan},
    metrics::ControlMetrics,
    model::Family,
    southbound::Event,
};

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
    #[error("dropping privileges failed (`mhr run --no-sandbox` runs without)")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Web(#[from] web::WebError),
    #[error("subscribing to netlink notifications failed")]
    Events(#[source] std::io::Error),
    #[error("serving metrics on {address} failed")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    guard: Option<Box<dyn crate::guard::plane::GuardPlane>>,
    /// The guard's failures to load or attach, and when to try again.
    guard_retry: GuardRetry,
    control: Arc<ControlMetrics>,
    service: Arc<Service>,
    book: HealthBook,
    /// The last plan: the uplinks health rounds look at.
    last: Option<Planned>,
    /// Per family, the uplinks holding main's default after the last reconcile.
    active: std::collections::BTreeMap<Family, Vec<String>>,
    /// Connections when main's default left the primary (`failback = "reset"`).
    failover_snapshots: failback::Snapshots,
    probe_plans: tokio::sync::watch::Sender<Vec<ProbePlan>>,
    /// Since when the guard has failed to attach or repair, if it does.
    guard_failing_since: Option<Instant>,
    /// The health series exported: uplink, family, primary.
    exported_health: std::collections::BTreeSet<(String, Family)>,
    /// Probe targets with loss series, by uplink.
    exported_targets: std::collections::BTreeSet<(String, String)>,
    /// Corrections per object, to put back at a bounded rate what another
    /// writer keeps removing.
    fights: fights::Fights,
    /// Netlink ports that deleted rules or routes since the last reconcile.
    removers: Vec<u32>,
    /// Pins of guard links someone removed, until attached again (an
    /// attach may fail first): their return is a repair.
    removed_links: std::collections::BTreeSet<String>,
    /// When corrections held back by [`fights`] are due.
    retry_at: Option<Instant>,
    /// `[[hook]]` programs, and the state changes they have not yet seen
    /// (fired once the reconcile after them knows main's default).
    hooks: hooks::Hooks,
    hook_pending: Vec<crate::health::Transition>,
    /// Uplinks drained at the last reconcile (`drained` fires on a new one).
    hook_drained: std::collections::BTreeSet<String>,
    /// Each uplink's receive silence and retransmissions (`[health] passive`).
    passive: crate::health::passive::PassiveWatch,
    /// Uplinks that carry traffic, for the probe task (`probe_when_idle`).
    busy: tokio::sync::watch::Sender<std::collections::BTreeSet<String>>,
}

/// Runs until `shutdown` completes. Needs a tokio runtime; netlink sockets
/// are opened in the calling thread's network namespace.
pub async fn run(
    config: Config,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (_keep, mut reloads) = tokio::sync::mpsc::channel::<Result<Config, crate::config::ConfigError>>(1);
    run_with_reloads(config, options, shutdown, &mut reloads).await
}

/// [`run`], taking new configs (`mhr run` sends one per SIGHUP, already
/// validated) while it runs.
pub async fn run_with_reloads(
    config: Config,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
    reloads: &mut tokio::sync::mpsc::Receiver<Result<Config, crate::config::ConfigError>>,
) -> Result<(), DaemonError> {
    let endpoint = Endpoint::start(&config).await?;
    run_with_endpoint(&endpoint, Engine::connect(config)?, options, shutdown, reloads).await
}

/// [`run_with_reloads`] on an engine already connected to its southbound
/// (the in-memory kernel model in scenario tests), serving on its own
/// endpoint.
pub async fn run_engine(
    engine: Engine,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
    reloads: &mut tokio::sync::mpsc::Receiver<Result<Config, crate::config::ConfigError>>,
) -> Result<(), DaemonError> {
    let endpoint = Endpoint::start(engine.config()).await?;
    run_with_endpoint(&endpoint, engine, options, shutdown, reloads).await
}

/// [`run_with_reloads`] on `engine`, serving on `endpoint` (started by the
/// caller, who may have served from it while waiting; see [`Endpoint`]).
pub async fn run_with_endpoint(
    endpoint: &Endpoint,
    engine: Engine,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
    reloads: &mut tokio::sync::mpsc::Receiver<Result<Config, crate::config::ConfigError>>,
) -> Result<(), DaemonError> {
    let config = engine.config().clone();
    // The host's routing is this daemon's from now on: `apply`/`down` are refused.
    let _lock = crate::lock::acquire(&config.routing.state_dir, crate::lock::Role::Run, crate::lock::WAIT)?;
    // A change may have become pending between the caller's check and the
    // lock: its guardian needs the lock at the deadline.
    if crate::confirm::read_pending(&config.routing.state_dir).map_err(EngineError::from)?.is_some() {
        return Err(DaemonError::PendingConfirmation);
    }
    // Subscribe first, so nothing that happens during start-up is missed.
    let mut events = engine
        .kernel()
        .subscribe(options.netlink_buffer, crate::southbound::RouteFilter::for_config(&config))
        .map_err(DaemonError::Events)?;
    let control = Arc::clone(&endpoint.control);
    let service = Arc::clone(&endpoint.service);
    service.set(ServiceState::Starting);

    let settings = config.health.clone();
    let engine = engine.tolerant();
    let (probe_plans, plans) = tokio::sync::watch::channel(Vec::new());
    let (round_sender, mut rounds) = tokio::sync::mpsc::channel(4);
    let (busy, busy_now) = tokio::sync::watch::channel(Default::default());
    tokio::spawn(rounds::probe_rounds(
        std::sync::Arc::clone(engine.kernel()),
        rounds::ProbeInputs { plans, busy: busy_now },
        round_sender,
        settings.interval,
        settings.timeout,
    ));
    let uplinks: Vec<(&str, bool)> =
        engine.config().uplinks.iter().map(|u| (u.interface.as_str(), u.primary)).collect();
    control.initialise(&uplinks);
    control.config_reload_success.set(1);
    let mut book = HealthBook::new(settings.clone());
    book.set_probed(crate::health::snapshot::probed(engine.config()));
    book.set_cadence(engine.config());
    crate::health::snapshot::remember(
        &mut book,
        &engine.config().routing.state_dir,
        crate::clock::unix_seconds(),
    );
    rounds::startup_round(&engine, &mut book, settings.timeout).await;
    let active = std::collections::BTreeMap::new();
    let control_runs = control.hook_runs.clone();
    let mut daemon = Daemon {
        engine,
        guard: None,
        guard_retry: GuardRetry::default(),
        control,
        service,
        book,
        last: None,
        active,
        probe_plans,
        guard_failing_since: None,
        exported_health: Default::default(),
        exported_targets: Default::default(),
        failover_snapshots: Default::default(),
        fights: fights::Fights::default(),
        removers: Vec::new(),
        removed_links: Default::default(),
        retry_at: None,
        hooks: hooks::Hooks::new(config.hooks.clone(), control_runs, options.hook_events.clone()),
        hook_pending: Vec::new(),
        hook_drained: Default::default(),
        passive: passive::watch(&settings),
        busy,
    };
    if options.guard {
        daemon.load_guard(&options);
    }
    // Everything privileged that only start-up does is done (guard
    // loaded, sockets open, listener bound): from here on, least privilege.
    // A guard that could not load yet is retried later and needs what
    // loading needs: the sandbox waits for it.
    let mut sandbox_pending = options.sandbox;
    if let Some(unlisted) = sandbox_pending
        && (daemon.guard.is_some() || !options.guard)
    {
        crate::sandbox::enter_logged(unlisted)?;
        sandbox_pending = None;
    }
    daemon.reconcile(Trigger::Startup).await;
    // systemd (Type=notify): started once the first reconcile ran; the
    // watchdog is fed from this loop, so a hung loop gets restarted.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog_enabled = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut watchdog = tokio::time::interval(watchdog_feed_every(watchdog_usec));
    let mut guard_check = tokio::time::interval(options.guard_check);
    guard_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    tokio::pin!(shutdown);
    let mut resync = tokio::time::interval_at(Instant::now() + options.resync, options.resync);
    let mut passive_sample = tokio::time::interval(passive::sample_every(settings.rx_silence));
    passive_sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_pending: Option<Instant> = None;
    let far = Duration::from_secs(365 * 24 * 3600);
    loop {
        let deadline = first_pending.map_or(Instant::now() + far, |first| {
            (Instant::now() + options.debounce).min(first + options.max_delay)
        });
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => match event {
                Ok(Event::Changed { added, removed_by }) => {
                    if !added.is_empty() {
                        daemon.guard_learns(&added);
                    }
                    for port in removed_by {
                        if daemon.removers.len() < 8 && !daemon.removers.contains(&port) {
                            daemon.removers.push(port);
                        }
                    }
                    first_pending.get_or_insert_with(Instant::now);
                }
                Ok(Event::Ignored) => {}
                Ok(Event::Overrun) => {
                    first_pending = None;
                    daemon.reconcile(Trigger::Overrun).await;
                }
                Err(err) => {
                    tracing::warn!(error = %crate::Chain(&err), "reading netlink notifications failed; resyncing");
                    first_pending = None;
                    daemon.reconcile(Trigger::Overrun).await;
                }
            },
            () = sleep_until(daemon.retry_at.unwrap_or(Instant::now() + far)), if daemon.retry_at.is_some() => {
                daemon.retry_at = None;
                daemon.reconcile(Trigger::Event).await;
            }
            () = sleep_until(deadline), if first_pending.is_some() => {
                first_pending = None;
                daemon.reconcile(Trigger::Event).await;
            }
            _ = resync.tick() => daemon.reconcile(Trigger::Periodic).await,
            _ = watchdog.tick(), if watchdog_enabled => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            Some(reload) = reloads.recv() => {
                if daemon.reload_with(reload, events.as_mut()).await {
                    first_pending = None;
                }
            }
            _ = guard_check.tick(), if options.guard => {
                if daemon.guard.is_none() {
                    if daemon.load_guard(&options) {
                        if let Some(unlisted) = sandbox_pending.take() {
                            crate::sandbox::enter_logged(unlisted)?;
                        }
                        daemon.reconcile(Trigger::GuardCheck).await;
                    }
                    continue;
                }
                if daemon.guard_needs_repair() {
                    daemon.reconcile(Trigger::GuardCheck).await;
                }
                // While the kernel still runs the guard (this process holds
                // its links), staying up keeps it; exit once it is really gone.
                if let Some(since) = daemon.guard_failing_since
                    && options.exit_when_guard_lost
                    && since.elapsed() >= options.guard_repair_deadline
                    && daemon.guard_lost()
                {
                    let ServiceState::Failing(error) = daemon.service.state() else { continue };
                    tracing::error!(%error, "the source guard could not be repaired; exiting");
                    let _ = crate::state::retire_health(&daemon.engine.config().routing.state_dir);
                    return Err(DaemonError::GuardLost(options.guard_repair_deadline, error));
                }
            }
            _ = passive_sample.tick() => {
                if daemon.passive_round().await {
                    first_pending = None;
                    daemon.reconcile(Trigger::Health).await;
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

/// How often to feed systemd's watchdog: twice per period, so that one late
/// tick is not a restart (sd_watchdog_enabled(3)); every second when the
/// period is shorter than two (or there is none).
fn watchdog_feed_every(watchdog_usec: u64) -> Duration {
    Duration::from_micros(watchdog_usec.max(2_000_000) / 2)
}

fn family_label(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_twice_per_period_and_at_most_every_second() {
        assert_eq!(watchdog_feed_every(30_000_000), Duration::from_secs(15));
        assert_eq!(watchdog_feed_every(500_000), Duration::from_secs(1));
        assert_eq!(watchdog_feed_every(0), Duration::from_secs(1));
    }
}
