//! `mhr run`: the daemon.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    daemon::{self, DaemonOptions},
    sandbox::Unlisted,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Quiet time after a netlink notification before reconciling.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    debounce: Duration,
    /// Full resync period, the safety net for anything missed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    resync: Duration,
    /// On SIGTERM/SIGINT remove routing and guard (default: leave them in
    /// place so protection continues while the daemon restarts).
    #[arg(long)]
    cleanup_on_exit: bool,
    /// Routing only: do not attach the source guard.
    #[arg(long)]
    no_guard: bool,
    /// Serve /metrics and /healthz here instead of [metrics] listen, e.g.
    /// the node's address in a DaemonSet (`--metrics-listen $(HOST_IP):9847`).
    #[arg(long, value_name = "ADDRESS:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Flag log lines a second, over all CPUs and uplinks; the rest are
    /// counted (mhr_flag_log_lines_suppressed_total) and summarised once a
    /// second.
    #[arg(long, value_name = "LINES", default_value_t = 50)]
    flag_log_rate: u32,
    /// An offender's first flagged packet is a log line; after it, one
    /// summary line per offender per this interval (its later packets are
    /// counted in mhr_flag_records_folded_total).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    flag_summary_interval: Duration,
    /// Keep every privilege after start-up: no capability drop, no
    /// no-new-privs, no seccomp filter (for debugging; see "Privileges" in
    /// docs/configuration.md).
    #[arg(long)]
    no_sandbox: bool,
    /// Let syscalls the seccomp filter does not list run, and have the
    /// kernel log each (dmesg, audit log), instead of failing them with EPERM.
    #[arg(long, conflicts_with = "no_sandbox")]
    sandbox_audit: bool,
}

pub fn run(config_path: &Path, args: &RunArgs) -> anyhow::Result<()> {
    if args.resync.is_zero() {
        anyhow::bail!("--resync must be greater than zero");
    }
    if args.flag_summary_interval.is_zero() {
        anyhow::bail!("--flag-summary-interval must be greater than zero");
    }
    let mut config = Config::load(config_path)?;
    let metrics_listen = args.metrics_listen;
    if let Some(listen) = metrics_listen {
        config.metrics.listen = listen;
    }
    let options = DaemonOptions {
        debounce: args.debounce,
        resync: args.resync,
        cleanup_on_exit: args.cleanup_on_exit,
        guard: !args.no_guard,
        flag_log_per_second: args.flag_log_rate,
        flag_summary_interval: args.flag_summary_interval,
        sandbox: match (args.no_sandbox, args.sandbox_audit) {
            (true, _) => None,
            (false, true) => Some(Unlisted::Log),
            (false, false) => Some(Unlisted::Deny),
        },
        ..DaemonOptions::default()
    };
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        // SIGHUP reloads the config: validated first, a bad one is logged
        // and the running config stays.
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        let path = config_path.to_owned();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let loaded = Config::load(&path).map(|mut config| {
                    if let Some(listen) = metrics_listen {
                        config.metrics.listen = listen;
                    }
                    config
                });
                if reload.send(loaded).await.is_err() {
                    break;
                }
            }
        });
        tokio::pin!(shutdown);
        let mut reloads = reloads;
        // Served from now on, waiting for a pending confirmation included:
        // a daemon that waits is alive, and the guard's counters go on.
        let endpoint = daemon::Endpoint::start(&config).await.context("mhr run")?;
        loop {
            let engine = crate::engine::Engine::connect(config.clone())?;
            let waiting = |why| endpoint.waiting(why);
            let may_start = super::confirm::daemon_may_start(&engine, config_path, &waiting);
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                result = may_start => result?,
            }
            match daemon::run_with_endpoint(&endpoint, engine, options.clone(), &mut shutdown, &mut reloads)
                .await
            {
                // Lost a race with `apply --confirm`: wait for its verdict.
                Err(daemon::DaemonError::PendingConfirmation) => continue,
                result => return result.context("mhr run"),
            }
        }
    })
}
