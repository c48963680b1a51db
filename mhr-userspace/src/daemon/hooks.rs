//! `[[hook]]`: the programs run when an uplink changes state or main's
//! default moves. [`Hooks::fire`] spawns them and returns at once: a hook
//! never blocks or delays a reconcile. At most [`MAX_RUNNING`] run at once;
//! when all slots are taken a run is skipped (counted and logged), never
//! queued. Each runs directly (no shell) with a clean environment (`PATH`
//! and the `MHR_*` variables), stdin from /dev/null, its output logged line
//! by line (bounded), in a process group of its own that is killed at its
//! timeout.

use std::{process::Stdio, sync::Arc};

use prometheus_client::metrics::{counter::Counter, family::Family as MetricFamily};
use tokio::{io::AsyncReadExt as _, sync::Semaphore, task::JoinHandle};

use crate::{
    config::{HookConfig, HookEvent},
    metrics::{Labels, labels},
    model::Family,
};

/// Hooks running at once, at most.
pub const MAX_RUNNING: usize = 8;
/// Output lines kept (logged) per stream and run; the rest is counted.
pub const MAX_LINES: usize = 50;
/// Output bytes kept per stream and run (64 KiB per run for both).
pub const MAX_BYTES: usize = 32 * 1024;
/// The `PATH` a hook gets.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One event, as the hooks see it (their environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    pub event: HookEvent,
    pub uplink: String,
    pub family: Family,
    /// healthy, degraded, down or drained.
    pub state: &'static str,
    pub previous: &'static str,
    /// The uplink holding main's default in the family after the change
    /// (several joined with `+` under balance), empty if none.
    pub active: String,
}

impl HookRun {
    /// The `MHR_*` environment.
    pub fn environment(&self) -> [(&'static str, String); 6] {
        [
            ("MHR_EVENT", self.event.name().to_owned()),
            ("MHR_UPLINK", self.uplink.clone()),
            ("MHR_FAMILY", super::family_label(self.family).to_owned()),
            ("MHR_STATE", self.state.to_owned()),
            ("MHR_PREVIOUS_STATE", self.previous.to_owned()),
            ("MHR_ACTIVE_UPLINK", self.active.clone()),
        ]
    }
}

/// How a run ended (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Timeout,
    /// Not started: [`MAX_RUNNING`] hooks were running.
    Skipped,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Skipped => "skipped",
        }
    }
}

/// What one run left: how it ended and the output lines kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub lines: Vec<String>,
}

/// The configured hooks and their running slots.
#[derive(Clone, Debug)]
pub struct Hooks {
    hooks: Arc<Vec<HookConfig>>,
    slots: Arc<Semaphore>,
    runs: MetricFamily<Labels, Counter>,
    /// Every event fired, for tests of the daemon's wiring.
    seen: Option<tokio::sync::mpsc::UnboundedSender<HookRun>>,
}

impl Hooks {
    pub fn new(
        hooks: Vec<HookConfig>,
        runs: MetricFamily<Labels, Counter>,
        seen: Option<tokio::sync::mpsc::UnboundedSender<HookRun>>,
    ) -> Self {
        Self { hooks: Arc::new(hooks), slots: Arc::new(Semaphore::new(MAX_RUNNING)), runs, seen }
    }

    /// A reloaded config's hooks; runs under way go on.
    pub fn set_hooks(&mut self, hooks: Vec<HookConfig>) {
        self.hooks = Arc::new(hooks);
    }

    /// Starts every hook that wants `run` and returns without waiting.
    pub fn fire(&self, run: &HookRun) -> Vec<JoinHandle<Report>> {
        if let Some(seen) = &self.seen {
            let _ = seen.send(run.clone());
        }
        let mut started = Vec::new();
        for hook in self.hooks.iter().filter(|h| h.wants(run.event, &run.uplink)) {
            let result = |outcome: Outcome| {
                self.runs
                    .get_or_create(&labels([("event", run.event.name()), ("result", outcome.name())]))
                    .inc();
            };
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                tracing::warn!(
                    hook = %hook.exec.display(),
                    uplink = %run.uplink,
                    event = %run.event,
                    "hook skipped: {MAX_RUNNING} hooks are running"
                );
                result(Outcome::Skipped);
                continue;
            };
            let (hook, run, runs) = (hook.clone(), run.clone(), self.runs.clone());
            started.push(tokio::spawn(async move {
                let report = execute(&hook, &run).await;
                drop(permit);
                runs.get_or_create(&labels([("event", run.event.name()), ("result", report.outcome.name())]))
                    .inc();
                report
            }));
        }
        started
    }
}

/// Runs `hook` for `run` to its end or its timeout.
pub async fn execute(hook: &HookConfig, run: &HookRun) -> Report {
    let exec = hook.exec.display().to_string();
    let mut command = tokio::process::Command::new(&hook.exec);
    command
        .args(&hook.args)
        .env_clear()
        .env("PATH", HOOK_PATH)
        .envs(run.environment())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            tracing::warn!(hook = %exec, uplink = %run.uplink, event = %run.event, error = %crate::Chain(&err), "hook could not start");
            return Report { outcome: Outcome::Failed, lines: Vec::new() };
        }
    };
    let group = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let lines = std::sync::Mutex::new(Vec::new());
    let work = async {
        let (_, _, status) = tokio::join!(
            drain(stdout, "stdout", &exec, run, &lines),
            drain(stderr, "stderr", &exec, run, &lines),
            child.wait()
        );
        status
    };
    let outcome = match tokio::time::timeout(hook.timeout(), work).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(hook = %exec, uplink = %run.uplink, event = %run.event, "hook ran");
            Outcome::Ok
        }
        Ok(Ok(status)) => {
            tracing::warn!(hook = %exec, uplink = %run.uplink, event = %run.event, %status, "hook failed");
            Outcome::Failed
        }
        Ok(Err(err)) => {
            tracing::warn!(hook = %exec, uplink = %run.uplink, event = %run.event, error = %crate::Chain(&err), "waiting for the hook failed");
            Outcome::Failed
        }
        Err(_) => {
            tracing::warn!(
                hook = %exec,
                uplink = %run.uplink,
                event = %run.event,
                timeout = %humantime::format_duration(hook.timeout()),
                "hook timed out: killed"
            );
            kill_group(group);
            let _ = child.kill().await;
            Outcome::Timeout
        }
    };
    Report { outcome, lines: lines.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()) }
}

/// SIGKILL to the hook's process group (what it started in the background).
fn kill_group(group: Option<u32>) {
    if let Some(pid) = group.and_then(|pid| i32::try_from(pid).ok()).filter(|pid| *pid > 0) {
        // SAFETY: kill(2) with a negative pid signals that process group only.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// Reads a stream to its end, logging and keeping each line until the
/// limits; later output is read (the hook must not block on a full pipe)
/// and counted.
async fn drain(
    stream: Option<impl tokio::io::AsyncRead + Unpin>,
    name: &'static str,
    exec: &str,
    run: &HookRun,
    kept: &std::sync::Mutex<Vec<String>>,
) {
    let Some(mut stream) = stream else { return };
    let (mut pending, mut chunk) = (Vec::new(), [0u8; 4096]);
    let (mut lines, mut bytes, mut dropped) = (0usize, 0usize, 0usize);
    let mut emit = |line: &[u8], lines: &mut usize, bytes: &mut usize| {
        if *lines >= MAX_LINES || *bytes + line.len() > MAX_BYTES {
            dropped += 1;
            return;
        }
        *lines += 1;
        *bytes += line.len();
        let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_owned();
        tracing::info!(hook = %exec, uplink = %run.uplink, event = %run.event, stream = name, "{text}");
        if let Ok(mut kept) = kept.lock() {
            kept.push(text);
        }
    };
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            emit(&line[..end], &mut lines, &mut bytes);
        }
        // A line longer than the byte limit is cut where the limit is.
        if pending.len() > MAX_BYTES {
            let line: Vec<u8> = std::mem::take(&mut pending);
            emit(&line[..MAX_BYTES.min(line.len())], &mut lines, &mut bytes);
        }
    }
    if !pending.is_empty() {
        emit(&pending, &mut lines, &mut bytes);
    }
    if dropped > 0 {
        tracing::warn!(hook = %exec, uplink = %run.uplink, event = %run.event, stream = name, dropped, "hook output over the limit not logged");
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
