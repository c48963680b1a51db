//! `mhr down`: the way back. Always finishes; what cannot be done now is named.

use std::{io::Write, path::Path};

use super::Outcome;
use crate::{guard::Deployment, lock};

#[derive(Debug, Default, clap::Args)]
pub struct DownArgs {
    /// Also remove everything else under the guard's pin_dir (pins of any
    /// layout version, maps another mhr left) and guard filters on every
    /// interface.
    #[arg(long)]
    pub purge_pins: bool,
}

pub fn run(config_path: &Path, args: &DownArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    super::with_engine(config_path, out, async |engine, out| {
        let state_dir = &engine.config().routing.state_dir;
        let _lock = lock::acquire(state_dir, lock::Role::Down, lock::WAIT)?;
        // down is the way back: a pending confirmation has nothing left to undo.
        if let Some(pending) = crate::confirm::read_pending(state_dir)? {
            crate::confirm::cancel(state_dir, &pending)?;
            writeln!(out, "note: cancelled the pending confirmation; mhr run will not apply that config")?;
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
        // Purging first: it detaches whatever runs a program using one of
        // the pinned maps (a link someone else holds too), which it finds
        // through the pins the plain removal would take away.
        if args.purge_pins {
            match Deployment::new(engine.config()).purge() {
                Ok(done) => {
                    for line in done {
                        writeln!(out, "guard: purged: {line}")?;
                    }
                }
                Err(err) => failed.push(format!("purging the guard's pins: {}", crate::Chain(&err))),
            }
        }
        match Deployment::new(engine.config()).down() {
            Ok(detached) => {
                for line in detached {
                    writeln!(out, "guard: {line}")?;
                }
            }
            Err(err) => failed.push(format!("removing the guard: {}", crate::Chain(&err))),
        }
        if !failed.is_empty() {
            writeln!(out, "down finished, but {} step(s) could not be done now:", failed.len())?;
            for failure in &failed {
                writeln!(out, "  {failure}")?;
            }
            writeln!(out, "run `mhr down` again once the host allows it (or `mhr run` finishes it)")?;
            return Ok(Outcome::Incomplete);
        }
        Ok(Outcome::Success)
    })
}
