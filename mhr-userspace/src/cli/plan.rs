//! `mhr plan`: the changes `apply` would make, and the connections they move.

use std::{io::Write, path::Path};

use anyhow::Context as _;

use super::Outcome;
use crate::{
    engine::{Engine, Planned},
    state,
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
    pub(super) format: PlanFormat,
    /// Print the actions as JSON.
    #[arg(long, conflicts_with = "format")]
    pub(super) json: bool,
}

/// Prints the plan (and, in the human format, the connections it moves).
pub fn run(config_path: &Path, args: &PlanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    super::with_engine(config_path, out, async |engine, out| {
        let planned = engine.plan().await?;
        print_plan(&planned, engine, args, out)?;
        if !args.json && args.format == PlanFormat::Human {
            print_connections(engine, &planned, out).await?;
        }
        Ok(Outcome::Success)
    })
}

pub(super) fn print_plan(
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
    let paths = crate::connections::paths(engine.kernel().as_ref(), &planned.desired, &planned.names)
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
