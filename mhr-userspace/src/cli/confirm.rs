//! `apply --confirm`, `confirm`, and the guardian that rolls an
//! unconfirmed change back (see [`crate::confirm`]).

use std::{
    fs::File,
    io::Write,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command as Process, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;

use super::{Outcome, apply::ApplyArgs};
use crate::{
    config::Config,
    confirm::{self, ConfirmError, POLL, Pending, liveness},
    engine::Engine,
    lock,
};

/// How often a waiting `mhr run` looks whether the change was decided.
const DAEMON_WAIT_POLL: Duration = Duration::from_millis(500);
/// Pause between rollback attempts that failed.
const ROLLBACK_RETRY: Duration = Duration::from_secs(1);
/// How long after the deadline the waiting `apply` finishes the rollback
/// itself when the guardian is gone.
const GUARDIAN_GRACE: Duration = Duration::from_secs(5);
/// How long the guardian waits for the writer lock at the deadline.
const ROLLBACK_LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct GuardianArgs {
    /// The pending change this guardian watches.
    #[arg(long)]
    id: String,
    /// The descriptor of the locked `confirm-guardian-<id>.lock`, inherited
    /// from the applying process: held for the guardian's life, it is the
    /// guardian's liveness (`confirm::liveness`).
    #[arg(long)]
    lock_fd: i32,
}

/// Refuses a change while another waits for confirmation.
pub(super) fn refuse_if_pending(engine: &Engine) -> Result<(), ConfirmError> {
    match confirm::read_pending(&engine.config().routing.state_dir)? {
        Some(pending) => Err(pending.refusal()),
        None => Ok(()),
    }
}

/// Finishes the rollback of a change whose guardian is gone (the host
/// rebooted before its deadline, or it was killed). Every routing command
/// and `mhr run` start with it.
pub(super) async fn finish_abandoned(engine: &Engine, out: &mut dyn Write) -> anyhow::Result<()> {
    let state_dir = &engine.config().routing.state_dir;
    let abandoned =
        confirm::read_pending(state_dir)?.filter(|pending| !confirm::guardian_alive(state_dir, pending));
    if abandoned.is_none() {
        return Ok(());
    }
    let _lock = lock::acquire(state_dir, lock::Role::Rollback, lock::WAIT)?;
    if confirm::recover(engine).await? {
        writeln!(out, "note: rolled back an unconfirmed change whose guardian is gone (a reboot?)")?;
    }
    Ok(())
}

/// `mhr run` honours confirmations: it finishes an abandoned rollback,
/// waits while a change is pending (exiting would only make its supervisor
/// give up on it), and does not apply a config whose change was rolled back.
/// `waiting` hears, once, why it waits (for `/healthz`).
pub(super) async fn daemon_may_start(
    engine: &Engine,
    config_path: &Path,
    waiting: &dyn Fn(String),
) -> anyhow::Result<()> {
    let state_dir = &engine.config().routing.state_dir;
    let mut told = false;
    loop {
        finish_abandoned(engine, &mut std::io::stderr()).await?;
        let Some(pending) = confirm::read_pending(state_dir)? else { break };
        if !told {
            let deadline = confirm::describe_time(pending.deadline_ms.div_ceil(1000));
            waiting(format!(
                "a change from {} is pending confirmation (rolled back at {deadline} unless confirmed); mhr run starts after its verdict",
                pending.config_path.display()
            ));
            tracing::warn!(
                config = %pending.config_path.display(),
                deadline = %confirm::describe_time(pending.deadline_ms.div_ceil(1000)),
                "a change is pending confirmation; mhr run starts once it is confirmed or rolled back"
            );
            told = true;
        }
        tokio::time::sleep(DAEMON_WAIT_POLL).await;
    }
    if let Some(marker) = confirm::read_rolled_back(state_dir)? {
        let text = std::fs::read_to_string(config_path).unwrap_or_default();
        if text == marker.config_text {
            return Err(ConfirmError::RolledBack {
                path: config_path.to_owned(),
                at: confirm::describe_time(marker.at),
            }
            .into());
        }
    }
    Ok(())
}

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
        id: format!("{}-{}", std::process::id(), confirm::now()),
        deadline_ms: confirm::now_ms() + u64::try_from(within.as_millis()).unwrap_or(u64::MAX).max(1000),
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
    if let Err(err) = super::apply::apply_now(engine, args, out).await {
        // apply undid its own routing changes; put the rest back too.
        let report = confirm::restore(engine, &pending.prior).await?;
        confirm::remove_pending(&state_dir)?;
        for failure in report.failed {
            writeln!(out, "  could not restore: {failure}")?;
        }
        return Err(err.context("apply failed; the state before it was restored"));
    }
    drop(lock);
    let deadline = confirm::describe_time(pending.deadline_ms.div_ceil(1000));
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
        let overdue = confirm::now_ms() >= pending.deadline_ms + GUARDIAN_GRACE.as_millis() as u64;
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
                    confirm::describe_time(pending.deadline_ms.div_ceil(1000))
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

/// Removes the pending record (under the writer lock): the change stays.
/// `id` pins the confirmation to one change; `config_path` must be the
/// config it was applied from, unchanged.
fn confirm_pending(engine: &Engine, config_path: &Path, id: Option<&str>) -> Result<Pending, ConfirmError> {
    let state_dir = &engine.config().routing.state_dir;
    let _lock = lock::acquire(state_dir, lock::Role::Confirm, lock::WAIT)?;
    let pending = confirm::read_pending(state_dir)?.ok_or(ConfirmError::NothingPending)?;
    if id.is_some_and(|id| id != pending.id) {
        return Err(ConfirmError::NothingPending);
    }
    let same_file =
        std::fs::canonicalize(config_path).ok() == std::fs::canonicalize(&pending.config_path).ok();
    let same_text = std::fs::read_to_string(config_path).is_ok_and(|text| text == pending.config_text);
    if !same_file || !same_text {
        return Err(ConfirmError::OtherConfig {
            pending: pending.config_path.clone(),
            given: config_path.to_owned(),
        });
    }
    confirm::remove_pending(state_dir)?;
    liveness::remove(state_dir, &pending.id);
    // A config confirmed now is no longer one that was rolled back.
    confirm::clear_rolled_back(state_dir)?;
    Ok(pending)
}

/// `mhr confirm`.
/// `mhr confirm`.
pub(super) fn confirm_command(config_path: &Path, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    super::with_engine(config_path, out, async |engine, out| confirm(engine, config_path, out))
}

fn confirm(engine: &Engine, config_path: &Path, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let pending = confirm_pending(engine, config_path, None)?;
    writeln!(out, "confirmed the change from {}; it stays", pending.config_path.display())?;
    Ok(Outcome::Success)
}

/// Starts the guardian: this binary, in a session of its own (no
/// terminal, so the SSH session's hang-up never reaches it), its output
/// appended to `state_dir/confirm.log`.
fn spawn_guardian(config_path: &Path, state_dir: &Path, id: &str, lock: &File) -> anyhow::Result<u32> {
    let binary = std::env::current_exe().context("finding the mhr binary for the guardian")?;
    let log_path = state_dir.join("confirm.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = Process::new(binary);
    let lock_fd = liveness::hand_over(&mut command, lock);
    command
        .arg("--config")
        .arg(config_path)
        .args(["guardian", "--id", id, "--lock-fd", &lock_fd.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().context("starting the confirmation guardian")?;
    Ok(child.id())
}

/// Rolls `pending` back under the writer lock, unless it was confirmed
/// (or rolled back) meanwhile.
async fn roll_back_locked(engine: &Engine, pending: &Pending) -> anyhow::Result<()> {
    let state_dir = &engine.config().routing.state_dir;
    let _lock = lock::acquire(state_dir, lock::Role::Rollback, ROLLBACK_LOCK_WAIT)?;
    if confirm::read_pending(state_dir)?.is_some_and(|p| p.id == pending.id) {
        let report = confirm::roll_back(engine, pending).await?;
        for failure in &report.failed {
            tracing::warn!(%failure, "part of the rollback failed");
        }
    }
    Ok(())
}

/// The guardian's life: watch the record, roll back at the deadline,
/// exit as soon as the change is confirmed (the record is gone).
pub fn guardian(config_path: &Path, args: &GuardianArgs) -> anyhow::Result<Outcome> {
    // Hang-ups and interrupts of whatever started it are not for it.
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let config = Config::load(config_path)?;
    let state_dir = config.routing.state_dir.clone();
    // Held until this process exits: while it is, this guardian is alive.
    let _lock = liveness::adopt(&state_dir, &args.id, args.lock_fd)?;
    let runtime = super::runtime()?;
    let outcome = runtime.block_on(async {
        let engine = Engine::connect(config)?;
        loop {
            let Some(pending) = confirm::read_pending(&state_dir)?.filter(|p| p.id == args.id) else {
                return Ok(Outcome::Success);
            };
            if confirm::now_ms() >= pending.deadline_ms {
                // Retried until it happens: giving up would leave the
                // unconfirmed change in place, the very case this exists for.
                match roll_back_locked(&engine, &pending).await {
                    Ok(()) => return Ok(Outcome::Success),
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), "rolling back failed; retrying");
                        tokio::time::sleep(ROLLBACK_RETRY).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
    if outcome.is_ok() {
        // Its record is gone (confirmed, rolled back, cancelled).
        liveness::remove(&state_dir, &args.id);
    }
    outcome
}
