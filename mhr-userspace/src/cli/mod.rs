//! The `mhr` command line. `run` writes to any `Write`, so tests drive the
//! real commands in-process (inside a network namespace).

mod apply;
mod check;
mod confirm;
mod docs;
mod down;
mod drain;
mod init;
mod monitor;
mod plan;
mod run;
mod status;
mod status_summary;
mod watch;

use std::{io::Write, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Policy routing enforcer for multihomed Linux hosts: every address
/// answers through its own uplink.
#[derive(Debug, Parser)]
#[command(name = "mhr", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log lines as text or JSON (on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter such
    /// as `warn,mhr_userspace::daemon=debug`. Default: the MHR_LOG
    /// environment variable, else `warn,mhr_userspace::daemon=info`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, then keep routing and the guard true as the host changes
    /// (netlink events, periodic resync) and serve Prometheus metrics.
    Run(run::RunArgs),
    /// Print a config for the uplinks this host has (interfaces with a
    /// global address and a default route); --write writes it.
    Init(init::InitArgs),
    /// Show the changes `apply` would make (nothing is changed).
    Plan(plan::PlanArgs),
    /// Install per-uplink tables and rules, keep one default route in main,
    /// and attach the source guard to every uplink. Idempotent: a second run
    /// changes no routing and replaces the guard in place, counters kept.
    Apply(apply::ApplyArgs),
    /// Keep the change a running `apply --confirm` made (same config).
    Confirm,
    /// Remove everything mhr installed (routing and guard). Always finishes:
    /// what cannot be done now is named and exits 1. Cancels a pending
    /// confirmation.
    Down(down::DownArgs),
    /// Uplinks, addresses, gateways, tables, rules, and whether each is as desired.
    Status(status::StatusArgs),
    /// Take an uplink out of use for maintenance: no main default, balanced
    /// flows or steering rules; its table and from rules stay. Survives
    /// restarts; --for ends it by itself.
    Drain(drain::DrainArgs),
    /// End an uplink's drain: back in use as its health allows.
    Undrain(drain::UndrainArgs),
    /// Verify with the kernel's own route lookups that every address answers
    /// through its uplink. Exits non-zero when any check fails.
    Check(check::CheckArgs),
    /// Print the guard's flagged packets as log lines (and how many were
    /// suppressed by its rate limit) until interrupted or a limit is hit.
    /// The flag ring buffer has one reader: while `mhr run` runs, flagged
    /// packets go to its log instead.
    Watch(watch::WatchArgs),
    /// Attach a plain counter to interfaces (no config needed) and print
    /// their packet and byte counters until interrupted or --duration ends.
    Monitor(monitor::MonitorArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page, mhr(8), in roff.
    Manpage,
    /// Started by `apply --confirm`: rolls the change back at its deadline.
    #[command(hide = true)]
    Guardian(confirm::GuardianArgs),
}

/// How the command went, beyond errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The command ran, and what it verified is not true (`check`).
    ChecksFailed,
    /// The command did all it could; some steps must wait (`down` with an
    /// uplink that is down).
    Incomplete,
}

/// Runs one command, writing its output to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::Monitor(args) => monitor::run(args, out).map(|()| Outcome::Success),
        Command::Watch(args) => watch::run(&cli.config, args, out).map(|()| Outcome::Success),
        Command::Run(args) => run::run(&cli.config, args).map(|()| Outcome::Success),
        Command::Guardian(args) => confirm::guardian(&cli.config, args),
        Command::Init(args) => init::run(&cli.config, args, out),
        Command::Completions(args) => docs::completions(args, out),
        Command::Manpage => docs::manpage(out),
        Command::Plan(args) => plan::run(&cli.config, args, out),
        Command::Apply(args) => apply::run(&cli.config, args, out),
        Command::Confirm => confirm::confirm_command(&cli.config, out),
        Command::Down(args) => down::run(&cli.config, args, out),
        Command::Status(args) => status::run(&cli.config, args, out),
        Command::Drain(args) => drain::drain(&cli.config, args, out),
        Command::Undrain(args) => drain::undrain(&cli.config, args, out),
        Command::Check(args) => check::run(&cli.config, args, out),
    }
}

/// The one async runtime a command runs on (single-threaded: mhr's work
/// is netlink round trips and timers).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Runs `command` with an engine for the config at `config_path`, after
/// finishing a change an earlier session left unconfirmed.
fn with_engine(
    config_path: &std::path::Path,
    out: &mut dyn Write,
    command: impl AsyncFnOnce(&crate::engine::Engine, &mut dyn Write) -> anyhow::Result<Outcome>,
) -> anyhow::Result<Outcome> {
    let config = crate::config::Config::load(config_path)?;
    runtime()?.block_on(async {
        let engine = crate::engine::Engine::connect(config)?;
        confirm::finish_abandoned(&engine, out).await?;
        command(&engine, out).await
    })
}
