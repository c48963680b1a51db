//! `[[hook]]`: programs run when an uplink changes state or main's default
//! moves. Each is run directly (no shell), asynchronously, with a timeout;
//! the daemon's `daemon::hooks` runs them.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use serde::Deserialize;

/// A hook's default timeout.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The range a hook's `timeout` may take.
pub const MIN_HOOK_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// At most this many `[[hook]]` entries.
pub const MAX_HOOKS: usize = 32;

/// What a hook runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookEvent {
    /// An uplink family turned unhealthy.
    Down,
    /// An uplink family is healthy again.
    Up,
    /// An uplink family went over a quality threshold.
    Degraded,
    /// An uplink was taken out of use (`mhr drain`).
    Drained,
    /// The uplink holding main's default changed in a family.
    Failover,
}

impl HookEvent {
    pub const ALL: [Self; 5] = [Self::Down, Self::Up, Self::Degraded, Self::Drained, Self::Failover];
    pub const NAMES: &'static [&'static str] = &["down", "up", "degraded", "drained", "failover"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Drained => "drained",
            Self::Failover => "failover",
        }
    }
}

impl std::fmt::Display for HookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[[hook]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The events it runs on.
    #[serde(default)]
    pub on: Vec<HookEvent>,
    /// An absolute path to an executable file, run directly (no shell).
    #[serde(default)]
    pub exec: PathBuf,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Killed when it runs longer (1s–10m, default 10s).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Only for these uplinks (default: every uplink).
    #[serde(default)]
    pub uplink: Vec<String>,
}

impl HookConfig {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT)
    }

    /// Whether it runs on `event` for `uplink`.
    pub fn wants(&self, event: HookEvent, uplink: &str) -> bool {
        self.on.contains(&event) && (self.uplink.is_empty() || self.uplink.iter().any(|u| u == uplink))
    }
}

/// What is wrong with `exec`, in words, or `None`.
pub fn exec_problem(path: &std::path::Path) -> Option<String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Some("is missing: name the program to run, e.g. exec = \"/usr/local/bin/notify\"".to_owned());
    }
    if !path.is_absolute() {
        return Some(format!("= \"{shown}\" is not an absolute path (hooks run without a shell or PATH)"));
    }
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) => return Some(format!("= \"{shown}\" cannot be used: {err}")),
    };
    if !metadata.is_file() {
        return Some(format!("= \"{shown}\" is not a regular file"));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Some(format!("= \"{shown}\" is not executable (no x bit in its mode)"));
    }
    None
}

/// Every problem of the `[[hook]]` entries.
pub(super) fn validate(config: &super::Config, problems: &mut Vec<(super::check::Loc, super::ConfigError)>) {
    use super::{ConfigError, check::Loc};
    let mut bad = |index: usize, key: &'static str, reason: String| {
        problems.push((Loc::Hook(index, key), ConfigError::BadHook { hook: index + 1, key, reason }));
    };
    if config.hooks.len() > MAX_HOOKS {
        bad(
            MAX_HOOKS,
            "exec",
            format!("is one hook too many: at most {MAX_HOOKS} hooks ({} written)", config.hooks.len()),
        );
    }
    let names: Vec<&str> = config.uplinks.iter().map(|u| u.interface.as_str()).collect();
    for (index, hook) in config.hooks.iter().enumerate() {
        if hook.on.is_empty() {
            bad(
                index,
                "on",
                format!(
                    "is missing or empty: name the events to run on, from {}",
                    HookEvent::NAMES.join(", ")
                ),
            );
        }
        if let Some(problem) = exec_problem(&hook.exec) {
            bad(index, "exec", problem);
        }
        if let Some(timeout) = hook.timeout
            && !(MIN_HOOK_TIMEOUT..=MAX_HOOK_TIMEOUT).contains(&timeout)
        {
            bad(
                index,
                "timeout",
                format!("must be from 1s to 10m, not {}", humantime::format_duration(timeout)),
            );
        }
        for uplink in hook.uplink.iter().filter(|u| !names.contains(&u.as_str())) {
            bad(
                index,
                "uplink",
                format!("names `{uplink}`, which is not a configured uplink (uplinks: {})", names.join(", ")),
            );
        }
    }
}
