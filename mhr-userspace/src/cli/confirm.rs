//! `mhr confirm`, the guardian that rolls an unconfirmed change back, and
//! what `apply` and `run` ask before they start (see [`crate::confirm`]).
//! `apply --confirm` itself is `cli::apply::confirmed`.

use std::{
    fs::File,
    io::Write,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command as Process, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use super::Outcome;
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
pub(super) const GUARDIAN_GRACE: Duration = Duration::from_secs(5);
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
            let deadline = crate::clock::rfc3339(pending.deadline_ms.div_ceil(1000));
            waiting(format!(
                "a change from {} is pending confirmation (rolled back at {deadline} unless confirmed); mhr run starts after its verdict",
                pending.config_path.display()
            ));
            tracing::warn!(
                config = %pending.config_path.display(),
                deadline = %crate::clock::rfc3339(pending.deadline_ms.div_ceil(1000)),
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
                at: crate::clock::rfc3339(marker.at),
            }
            .into());
        }
    }
    Ok(())
}

/// Removes the pending record (under the writer lock): the change stays.
/// `id` pins the confirmation to one change; `config_path` must be the
/// config it was applied from, unchanged.
pub(super) fn confirm_pending(
    engine: &Engine,
    config_path: &Path,
    id: Option<&str>,
) -> Result<Pending, ConfirmError> {
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
pub(super) fn spawn_guardian(
    config_path: &Path,
    state_dir: &Path,
    id: &str,
    lock: &File,
) -> anyhow::Result<u32> {
    let binary = std::env::current_exe().context("finding the mhr binary for the guardian")?;
    let log_path = crate::paths::confirm_log(state_dir);
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
pub(super) async fn roll_back_locked(engine: &Engine, pending: &Pending) -> anyhow::Result<()> {
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
            if crate::clock::unix_millis() >= pending.deadline_ms {
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
