//! `mhr apply`: routing, then the guard; with `--confirm`, undone unless confirmed.

mod confirmed;

use std::{io::Write, path::Path};

use super::{
    Outcome,
    plan::{PlanArgs, PlanFormat, print_plan},
};
use crate::{
    engine::{Engine, Planned},
    guard::Deployment,
    lock,
    model::Framing,
};

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

pub fn run(config_path: &Path, args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    super::with_engine(config_path, out, async |engine, out| {
        if args.dry_run {
            let planned = engine.plan().await?;
            print_plan(&planned, engine, &PlanArgs { format: PlanFormat::Human, json: false }, out)?;
            return Ok(Outcome::Success);
        }
        if let Some(within) = args.confirm {
            return confirmed::apply_with_confirm(engine, config_path, args, within, out).await;
        }
        let state_dir = engine.config().routing.state_dir.clone();
        let _lock = lock::acquire(&state_dir, lock::Role::Apply, lock::WAIT)?;
        super::confirm::refuse_if_pending(engine)?;
        apply_now(engine, args, out).await?;
        // An explicit apply takes responsibility for a rolled-back config again.
        crate::confirm::clear_rolled_back(&state_dir)?;
        Ok(Outcome::Success)
    })
}

/// Applies routing and (unless `--no-guard`) the guard, printing what changed.
pub(super) async fn apply_now(engine: &Engine, args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let planned = engine.plan().await?;
    let deployment = Deployment::new(engine.config());
    // The guard loads, and its maps are checked to hold every uplink and
    // address, before routing changes: a missing bpffs or a refused
    // program stops `apply` before it changes anything.
    let mut guard = if args.no_guard { None } else { Some(deployment.load()?) };
    for note in guard.iter().flat_map(|guard| guard.pin_notes()) {
        writeln!(out, "guard: {note}")?;
    }
    engine.preflight()?;
    if guard.is_some() {
        deployment.check_capacity(&planned.desired)?;
    }
    let applied = engine.apply(&planned).await?;
    if let Some(reason) = &applied.unrecorded {
        tracing::warn!(%reason, "routing is in place, but its records could not be written; the next apply or `mhr run` writes them");
    }
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
        let enforced = engine.config().uplinks.iter().any(|u| engine.config().enforcement(u).enforces());
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
        let attachments = deployment.apply(guard, &planned.desired)?;
        let mode = |interface: &str| {
            let uplink = engine.config().uplinks.iter().find(|u| u.interface == interface);
            uplink.map(|u| engine.config().enforcement(u))
        };
        for attachment in attachments {
            let how = if attachment.replaced { "program replaced, counters kept" } else { "attached" };
            let enforce = mode(&attachment.interface).unwrap_or_default().describe();
            writeln!(out, "guard: {} {how} via {}, {enforce}", attachment.interface, attachment.mechanism)?;
        }
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
