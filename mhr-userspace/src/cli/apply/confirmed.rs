//! `apply --confirm`: record the state before, start the guardian, apply,
//! and wait for `mhr confirm` (or Enter) or the guardian's rollback.

use std::{io::Write, path::Path, sync::mpsc, time::Duration};

use anyhow::Context as _;

use super::{ApplyArgs, apply_now};
use crate::{
    cli::{
        Outcome,
        confirm::{GUARDIAN_GRACE, confirm_pending, refuse_if_pending, roll_back_locked, spawn_guardian},
    },
    confirm::{self, POLL, Pending, liveness},
    engine::Engine,
    lock,
};

pub(super) async fn apply_with_confirm(
    engine: &Engine,
    config_path: &Path,
    args: &ApplyArgs,
    within: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let state_dir = engine.config().routing.state_dir.clone();
    let lock = lock::acquire(&state_dir, lock::Role::Apply, lock::WAIT)?;
    refuse_if_pending(engine)?;
    let config_text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {} for the confirmation record", config_path.display()))?;
    let mut pending = Pending {
        id: format!("{}-{}", std::process::id(), crate::clock::unix_seconds()),
        deadline_ms: crate::clock::unix_millis()
            + u64::try_from(within.as_millis()).unwrap_or(u64::MAX).max(1000),
        config_path: config_path.to_owned(),
        config_text,
        guardian: None,
        prior: confirm::capture(engine).await?,
    };
    // The guardian's lock is held before its record exists, by this
    // process until the guardian inherits it (confirm::liveness): the
    // record never looks abandoned while someone keeps its promise.
    let guardian_lock = liveness::take(&state_dir, &pending.id)?;
    // Recorded durably before the guardian exists and before any change: a
    // crash from here on still finds its way back.
    confirm::write_pending(&state_dir, &pending)?;
    let guarded = spawn_guardian(config_path, &state_dir, &pending.id, &guardian_lock).and_then(|guardian| {
        pending.guardian = Some(guardian);
        confirm::write_pending(&state_dir, &pending).map_err(anyhow::Error::from)
    });
    // The guardian holds the lock now (or there is none): this copy must
    // go, or the guardian would look alive for as long as this waits.
    drop(guardian_lock);
    if let Err(err) = guarded {
        // Nothing changed yet: no record may outlive this.
        let _ = confirm::remove_pending(&state_dir);
        liveness::remove(&state_dir, &pending.id);
        return Err(err);
    }
    if let Err(err) = apply_now(engine, args, out).await {
        // apply undid its own routing changes; put the rest back too.
        let report = confirm::restore(engine, &pending.prior).await?;
        confirm::remove_pending(&state_dir)?;
        for failure in report.failed {
            writeln!(out, "  could not restore: {failure}")?;
        }
        return Err(err.context("apply failed; the state before it was restored"));
    }
    drop(lock);
    let deadline = crate::clock::rfc3339(pending.deadline_ms.div_ceil(1000));
    writeln!(
        out,
        "confirm within {}: run `mhr confirm` (or press Enter here); otherwise the state before this change comes back at {deadline}",
        humantime::format_duration(within)
    )?;
    out.flush()?;
    wait_for_verdict(engine, &pending, out).await
}

/// Waits until the change is confirmed (Enter here, or `mhr confirm`) or
/// rolled back by the guardian at the deadline.
async fn wait_for_verdict(
    engine: &Engine,
    pending: &Pending,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let state_dir = &engine.config().routing.state_dir;
    let enter = read_enter();
    loop {
        if enter.try_recv().is_ok() {
            confirm_pending(engine, &pending.config_path, Some(&pending.id))?;
            writeln!(out, "confirmed")?;
            return Ok(Outcome::Success);
        }
        let current = confirm::read_pending(state_dir)?.filter(|p| p.id == pending.id);
        let overdue = crate::clock::unix_millis() >= pending.deadline_ms + GUARDIAN_GRACE.as_millis() as u64;
        if let Some(current) = &current
            && overdue
            && !confirm::guardian_alive(state_dir, current)
        {
            // The guardian is gone: this process keeps the promise itself.
            roll_back_locked(engine, current).await?;
        }
        let still_pending = confirm::read_pending(state_dir)?.is_some_and(|p| p.id == pending.id);
        if !still_pending {
            let marker = confirm::read_rolled_back(state_dir)?.filter(|r| r.id == pending.id);
            if marker.as_ref().is_some_and(|m| m.cancelled) {
                anyhow::bail!("cancelled by `mhr down`: mhr's routing and guard were removed");
            }
            if marker.is_some() {
                anyhow::bail!(
                    "not confirmed by {}: the state before the change was restored",
                    crate::clock::rfc3339(pending.deadline_ms.div_ceil(1000))
                );
            }
            writeln!(out, "confirmed")?;
            return Ok(Outcome::Success);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Enter on the terminal, delivered once. Only a terminal counts: a
/// script piped into the session must not confirm by its next line.
fn read_enter() -> mpsc::Receiver<()> {
    let (sender, receiver) = mpsc::channel();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return receiver;
    }
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_ok_and(|read| read > 0) {
            let _ = sender.send(());
        }
    });
    receiver
}
