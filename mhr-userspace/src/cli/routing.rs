//! plan, apply, down, status, check.

use std::{io::Write, path::Path};

use anyhow::Context as _;

use super::{Command, Outcome};
use crate::{
    check::CheckReport,
    config::{Config, GuardMode},
    engine::{Engine, Planned},
    lock,
    observe::Framing,
    state,
    status::Status,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// One sentence per change.
    #[default]
    Human,
    /// The equivalent `ip` commands, ready to paste.
    Ip,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
    format: PlanFormat,
    /// Print the actions as JSON.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Only show what would change (same as `mhr plan`).
    #[arg(long)]
    dry_run: bool,
    /// Routing only: leave the source guard as it is (not attached, or as
    /// an earlier apply left it).
    #[arg(long)]
    pub(super) no_guard: bool,
    /// Undo the change unless `mhr confirm` (or Enter here) confirms it
    /// within this time, e.g. 60s: for changes made over the uplinks they
    /// rewire. The undo happens even if this session dies.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "dry_run")]
    pub(super) confirm: Option<std::time::Duration>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Also check that every established TCP connection leaves by the
    /// uplink that owns its local address.
    #[arg(long)]
    connections: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these uplinks (default: all).
    #[arg(value_name = "UPLINK")]
    uplinks: Vec<String>,
    /// Print as JSON (with a schema `version`).
    #[arg(long)]
    json: bool,
}

pub fn run(config_path: &Path, command: &Command, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let engine = Engine::connect(config)?;
        super::confirm::finish_abandoned(&engine, out).await?;
        match command {
            Command::Plan(args) => {
                let planned = engine.plan().await?;
                print_plan(&planned, &engine, args, out)?;
                if !args.json && args.format == PlanFormat::Human {
                    print_connections(&engine, &planned, out).await?;
                }
            }
            Command::Apply(args) => {
                if args.dry_run {
                    let planned = engine.plan().await?;
                    print_plan(&planned, &engine, &PlanArgs { format: PlanFormat::Human, json: false }, out)?;
                    return Ok(Outcome::Success);
                }
                if let Some(within) = args.confirm {
                    return super::confirm::apply_with_confirm(&engine, config_path, args, within, out).await;
                }
                let state_dir = engine.config().routing.state_dir.clone();
                let _lock = lock::acquire(&state_dir, lock::Role::Apply, lock::WAIT)?;
                super::confirm::refuse_if_pending(&engine)?;
                apply_now(&engine, args, out).await?;
                // An explicit apply takes responsibility for a rolled-back config again.
                crate::confirm::clear_rolled_back(&state_dir)?;
            }
            Command::Confirm => return super::confirm::confirm(&engine, config_path, out),
            Command::Down => {
                let state_dir = &engine.config().routing.state_dir;
                let _lock = lock::acquire(state_dir, lock::Role::Down, lock::WAIT)?;
                // down is the way back: a pending confirmation has nothing left to undo.
                if let Some(pending) = crate::confirm::read_pending(state_dir)? {
                    crate::confirm::cancel(state_dir, &pending)?;
                    writeln!(
                        out,
                        "note: cancelled the pending confirmation; mhr run will not apply that config"
                    )?;
                }
                let applied = engine.down().await?;
                if applied.actions.is_empty() {
                    writeln!(out, "no changes: mhr owns nothing here")?;
                } else {
                    for action in &applied.actions {
                        writeln!(out, "  {action}")?;
                    }
                    writeln!(out, "removed mhr's routing ({} change(s))", applied.changed)?;
                }
                let mut failed = applied.failed;
                match engine.down_guard() {
                    Ok(detached) => {
                        for detached in detached {
                            writeln!(out, "guard: detached {detached}")?;
                        }
                    }
                    Err(err) => failed.push(format!("removing the guard: {err:#}")),
                }
                if !failed.is_empty() {
                    writeln!(out, "down finished, but {} step(s) could not be done now:", failed.len())?;
                    for failure in &failed {
                        writeln!(out, "  {failure}")?;
                    }
                    writeln!(out, "run `mhr down` again once the host allows it (or `mhr run` finishes it)")?;
                    return Ok(Outcome::Incomplete);
                }
            }
            Command::Status(args) => {
                let status = engine.status().await?.only(&args.uplinks).map_err(anyhow::Error::msg)?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
                } else {
                    print_status(&status, out)?;
                }
            }
            Command::Check(args) => {
                let report = engine.check(args.connections).await?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
                } else {
                    print_check(&report, out)?;
                }
                if !report.passed() {
                    return Ok(Outcome::ChecksFailed);
                }
            }
            Command::Monitor(_)
            | Command::Watch(_)
            | Command::Run(_)
            | Command::Guardian(_)
            | Command::Init(_)
            | Command::Completions(_)
            | Command::Manpage => {
                unreachable!("handled by cli::run")
            }
        }
        Ok(Outcome::Success)
    })
}

/// Applies routing and (unless `--no-guard`) the guard, printing what changed.
pub(super) async fn apply_now(engine: &Engine, args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let planned = engine.plan().await?;
    let mut guard = if args.no_guard { None } else { Some(engine.load_guard()?) };
    engine.preflight(&planned, guard.is_some())?;
    let applied = engine.apply(&planned).await?;
    if applied.actions.is_empty() {
        writeln!(out, "no changes: the host is as desired")?;
    } else {
        for action in &applied.actions {
            writeln!(out, "  {action}")?;
        }
        writeln!(out, "applied {} change(s)", applied.changed)?;
    }
    for note in &planned.desired.notes {
        writeln!(out, "note: {note}")?;
    }
    print_active(&planned, out)?;
    if let Some(guard) = &mut guard {
        let enforced =
            engine.config().uplinks.iter().any(|u| engine.config().guard_mode(u).0 == GuardMode::Enforce);
        if enforced {
            writeln!(
                out,
                "note: enforce mode: only `mhr run` updates the guard when addresses change; without it a new address's packets are dropped as spoofed"
            )?;
        }
        for uplink in planned.desired.uplinks.iter().filter(|u| u.framing == Framing::Other) {
            writeln!(
                out,
                "guard: {} skipped: neither Ethernet nor IP framing (the guard parses those)",
                uplink.interface
            )?;
        }
        let attachments = engine.apply_guard(guard, &planned)?;
        let mode = |interface: &str| {
            let uplink = engine.config().uplinks.iter().find(|u| u.interface == interface);
            uplink.map(|u| engine.config().guard_mode(u))
        };
        for attachment in attachments {
            let how = if attachment.replaced { "program replaced, counters kept" } else { "attached" };
            let (mode, asymmetric) = mode(&attachment.interface).unwrap_or_default();
            let enforce = match (mode, asymmetric) {
                (GuardMode::Monitor, _) => "monitor",
                (GuardMode::Enforce, false) => "enforce (drop spoofed)",
                (GuardMode::Enforce, true) => "enforce (drop spoofed and asymmetric)",
            };
            writeln!(out, "guard: {} {how} via {}, {enforce}", attachment.interface, attachment.mechanism)?;
        }
    }
    Ok(())
}

fn print_plan(
    planned: &Planned,
    engine: &Engine,
    args: &PlanArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&planned.actions)?)?;
        return Ok(());
    }
    let routing = &engine.config().routing;
    let tables_path = state::tables_path(&routing.rt_tables_dir);
    let tables_changed = state::read_tables(&routing.rt_tables_dir)?
        != planned.tables.iter().map(|(id, name)| (name.clone(), *id)).collect();
    match args.format {
        PlanFormat::Ip => {
            for action in &planned.actions {
                writeln!(out, "{}", action.ip_command(&planned.names))?;
            }
            if tables_changed {
                let lines: String =
                    planned.tables.iter().map(|(id, name)| format!("{id} {name}\\n")).collect();
                writeln!(out, "printf '{lines}' > {}", tables_path.display())?;
            }
            if !planned.actions.is_empty() {
                writeln!(out, "ip -6 route flush cache")?;
            }
        }
        PlanFormat::Human => {
            for note in &planned.desired.notes {
                writeln!(out, "note: {note}")?;
            }
            for action in &planned.actions {
                writeln!(out, "  {}", action.describe(&planned.names))?;
            }
            if tables_changed {
                writeln!(out, "  name the tables in {}", tables_path.display())?;
            }
            match planned.actions.len() {
                0 => writeln!(out, "no changes: the host is as desired")?,
                n => writeln!(out, "{n} change(s) planned")?,
            }
        }
    }
    Ok(())
}

/// The established TCP connections the plan moves to another uplink
/// (your SSH session among them, perhaps), and why.
async fn print_connections(engine: &Engine, planned: &Planned, out: &mut dyn Write) -> anyhow::Result<()> {
    let paths = crate::connections::paths(engine.handle(), &planned.desired, &planned.names)
        .await
        .context("listing the established connections")?;
    let moved: Vec<_> = paths.iter().filter(|path| path.moves()).collect();
    if moved.is_empty() {
        writeln!(out, "connections: {} established, none changes uplink", paths.len())?;
        return Ok(());
    }
    writeln!(out, "connections that change uplink ({} of {} established):", moved.len(), paths.len())?;
    for path in moved {
        let now = path.now.as_deref().unwrap_or("nowhere");
        let after = path.after.as_deref().unwrap_or("nowhere");
        let why = match &path.owner {
            Some(owner) if path.asymmetric_now() => {
                format!(" (asymmetric now: its address is {owner}'s; fixed)")
            }
            Some(owner) => format!(" (its address is {owner}'s)"),
            None => " (main's default moves)".to_owned(),
        };
        writeln!(out, "  {}: leaves by {now} now, by {after} after{why}", path.connection.describe())?;
    }
    Ok(())
}

/// Which uplink holds main's default route, per family.
fn print_active(planned: &Planned, out: &mut dyn Write) -> anyhow::Result<()> {
    for (family, uplinks) in &planned.desired.active {
        writeln!(out, "main's {family} default: {}", uplinks.join(" + "))?;
    }
    Ok(())
}

fn unix_time(seconds: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)
}

fn mark(present: bool) -> &'static str {
    if present { "ok     " } else { "MISSING" }
}

fn print_status(status: &Status, out: &mut dyn Write) -> anyhow::Result<()> {
    for uplink in &status.uplinks {
        let role = if uplink.primary { ", primary" } else { "" };
        let state = match (uplink.up, uplink.carrier) {
            (false, _) => "DOWN",
            (true, false) => "up, NO CARRIER",
            (true, true) => "up",
        };
        writeln!(
            out,
            "{} (ifindex {}, {state}{role}), table {}",
            uplink.interface, uplink.index, uplink.table
        )?;
        writeln!(
            out,
            "  addresses: {}",
            if uplink.addresses.is_empty() { "none".into() } else { uplink.addresses.join(", ") }
        )?;
        for (family, gateway) in [("IPv4", &uplink.gateway4), ("IPv6", &uplink.gateway6)] {
            if let Some(gateway) = gateway {
                writeln!(out, "  {family} gateway: {} (from {})", gateway.gateway, gateway.learned_from)?;
            }
        }
        if let Some(reason) = &uplink.blocked {
            writeln!(out, "  BLOCKED, left as it is: {reason}")?;
        }
        for health in &uplink.health {
            let state = match health.fault {
                None if health.healthy => "healthy".to_owned(),
                Some(fault) if health.healthy => format!("healthy ({fault}, not yet confirmed)"),
                Some(fault) => format!("UNHEALTHY: {fault}"),
                None => "UNHEALTHY: recovering".to_owned(),
            };
            let mut line = format!("  {} {state}", health.family);
            if let Some(since) = health.since {
                line += &format!(", since {}", humantime::format_rfc3339_seconds(unix_time(since)));
            }
            if let Some(loss) = health.probe_loss {
                line += &format!(", probe loss {:.0}%", loss * 100.0);
            }
            if let Some(rtt) = health.probe_rtt_seconds {
                line += &format!(", rtt {:.1} ms", rtt * 1000.0);
            }
            if health.active {
                line += ", holds main's default";
            }
            writeln!(out, "{line} [{}]", health.judged_by)?;
        }
        for object in uplink.rules.iter().chain(&uplink.routes) {
            writeln!(out, "  {} {}", mark(object.present), object.object)?;
        }
    }
    for (family, uplinks) in &status.active {
        writeln!(out, "main's {family} default: {}", uplinks.join(" + "))?;
    }
    match &status.guard {
        None => writeln!(out, "guard: not installed")?,
        Some(guard) => {
            for uplink in &guard.uplinks {
                let attached = match uplink.attachment {
                    Some(mechanism) => format!("attached via {mechanism}"),
                    None => "NOT attached".to_owned(),
                };
                writeln!(out, "guard on {} ({attached}, {} mode):", uplink.interface, uplink.mode)?;
                let verdicts: Vec<String> =
                    uplink.verdicts.iter().map(|(name, count)| format!("{name} {}", count.packets)).collect();
                writeln!(out, "  packets: {}", verdicts.join(", "))?;
                let e = &uplink.events;
                writeln!(
                    out,
                    "  dropped {}, flags emitted {}, suppressed {}, errors {}",
                    e.dropped, e.flags_emitted, e.flags_suppressed, e.errors
                )?;
            }
            if !guard.top_offenders.is_empty() {
                writeln!(out, "top offenders:")?;
                for offender in &guard.top_offenders {
                    writeln!(
                        out,
                        "  {} {} {} packets {} bytes {}",
                        offender.uplink, offender.source, offender.verdict, offender.packets, offender.bytes
                    )?;
                }
            }
        }
    }
    for note in &status.notes {
        writeln!(out, "note: {note}")?;
    }
    if status.in_sync {
        writeln!(out, "in sync: apply would change nothing")?;
    } else {
        writeln!(out, "NOT in sync; `mhr apply` would:")?;
        for pending in &status.pending {
            writeln!(out, "  {pending}")?;
        }
    }
    Ok(())
}

fn print_check(report: &CheckReport, out: &mut dyn Write) -> anyhow::Result<()> {
    for finding in &report.findings {
        if finding.ok {
            writeln!(out, "ok    {}: {}", finding.check, finding.observed)?;
        } else {
            writeln!(out, "FAIL  {}: {}", finding.check, finding.observed)?;
            writeln!(out, "      {}", finding.advice)?;
        }
    }
    let failed = report.findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        writeln!(out, "all {} checks passed", report.findings.len())?;
    } else {
        writeln!(out, "{failed} of {} checks failed", report.findings.len())?;
    }
    Ok(())
}
