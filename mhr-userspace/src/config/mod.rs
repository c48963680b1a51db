//! The configuration file: TOML, validated before anything touches the
//! kernel. Unknown keys are errors.

use std::{io::Read as _, path::Path};

use serde::Deserialize;

mod check;
mod defaults;
mod errors;
mod health_validation;
mod hooks;
mod schema;
mod steering;
mod target;
mod validation;

pub use defaults::{
    DEFAULT_CONFIG_PATH, DEFAULT_METRICS_LISTEN, DEFAULT_PIN_DIR, DEFAULT_PRIORITY_RANGE, DEFAULT_PROTOCOL,
    DEFAULT_RT_TABLES_DIR, DEFAULT_STATE_DIR, DEFAULT_TABLE_RANGE,
};
use errors::line_column;
pub use errors::{ConfigError, Located};
pub use hooks::{
    DEFAULT_HOOK_TIMEOUT, HookConfig, HookEvent, MAX_HOOK_TIMEOUT, MAX_HOOKS, MIN_HOOK_TIMEOUT, exec_problem,
};
pub use schema::{
    Assume, AttachMode, BalanceHash, Config, Failback, GuardConfig, GuardMode, HealthConfig, MetricsConfig,
    Policy, RoutingConfig, SourceRules, UplinkConfig,
};
pub use steering::{MAX_RULES, SteeringRule};
pub use target::{ProbeTarget, TargetError};
pub use validation::{MAX_CONFIG_BYTES, MAX_PROBES_PER_UPLINK, MAX_TOP_OFFENDERS, route_protocol_name};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Source guard mode of every uplink unless it sets its own.
    #[serde(default)]
    mode: GuardMode,
    /// In enforce mode, drop `asymmetric` packets too (not only `spoofed`).
    #[serde(default)]
    enforce_asymmetric: bool,
    /// How main's default route is chosen among the healthy uplinks.
    #[serde(default)]
    policy: Policy,
    /// Connections a failover put on a backup, at fail-back.
    #[serde(default)]
    failback: Failback,
    /// What balance hashes on: the destination, or the whole flow.
    #[serde(default)]
    balance_hash: BalanceHash,
    #[serde(default, rename = "uplink")]
    uplinks: Vec<UplinkConfig>,
    /// Steering rules, in order.
    #[serde(default, rename = "rule")]
    rules: Vec<SteeringRule>,
    /// Programs run on uplink events.
    #[serde(default, rename = "hook")]
    hooks: Vec<HookConfig>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    routing: RoutingConfig,
    /// `[guard]`; `[datapath]`, its name before, is accepted too.
    #[serde(default, alias = "datapath")]
    guard: GuardConfig,
    #[serde(default)]
    metrics: MetricsConfig,
}

impl Config {
    /// Reads at most [`MAX_CONFIG_BYTES`] (`/dev/zero` is refused, not read
    /// until memory runs out).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |err: std::io::Error| ConfigError::Read {
            path: path.to_owned(),
            errno: err.raw_os_error().unwrap_or(libc::EIO),
        };
        let file = std::fs::File::open(path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing { path: path.to_owned() },
            _ => read_error(err),
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_owned(), size: bytes.len() as u64 });
        }
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotText { path: path.to_owned() })?;
        // Whoever can write the config decides the host's routing.
        crate::trust::check(path)?;
        let config = Self::parse(&text, path)?;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// Parses and validates `text`; `path` only names the source in errors.
    /// A file that is not TOML stops at its first syntax error; otherwise
    /// every problem is reported at once ([`ConfigError::Invalid`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |err: toml::de::Error| {
            let (line, column) = err.span().map_or((1, 1), |span| line_column(text, span.start));
            let mut message = err.message().trim().to_owned();
            // The parser does not say which key, nor that a table counts too.
            if let Some(key) =
                err.span().and_then(|span| text.get(span)).filter(|_| message == "duplicate key")
            {
                message =
                    format!("`{key}` is written twice; a key (or a [table]) may appear once in its table");
            }
            ConfigError::Syntax { path: path.to_owned(), line, column, message }
        };
        let document = check::Document::parse(text).map_err(syntax)?;
        let invalid = |problems| ConfigError::Invalid { path: path.to_owned(), problems };
        let problems = document.check();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        // Whatever the schema check lets through that serde still refuses.
        let raw =
            RawConfig::deserialize(toml::de::Deserializer::from(document.root().clone())).map_err(syntax)?;
        let config = Self {
            path: path.to_owned(),
            mode: raw.mode,
            enforce_asymmetric: raw.enforce_asymmetric,
            policy: raw.policy,
            failback: raw.failback,
            balance_hash: raw.balance_hash,
            uplinks: raw.uplinks,
            rules: raw.rules,
            hooks: raw.hooks,
            health: raw.health,
            routing: raw.routing,
            guard: raw.guard,
            metrics: raw.metrics,
            warnings: document.warnings(path),
        };
        let mut problems: Vec<Located> = config
            .validate()
            .into_iter()
            .map(|(loc, error)| {
                let (line, column) = document.position(loc);
                Located { line, column, error }
            })
            .collect();
        if !problems.is_empty() {
            problems.sort_by_key(|p| (p.line, p.column));
            return Err(invalid(problems));
        }
        Ok(config)
    }

    /// The guard mode and asymmetric enforcement of one uplink.
    pub fn guard_mode(&self, uplink: &UplinkConfig) -> (GuardMode, bool) {
        (uplink.mode.unwrap_or(self.mode), uplink.enforce_asymmetric.unwrap_or(self.enforce_asymmetric))
    }
}

#[cfg(test)]
mod hook_tests;
#[cfg(test)]
mod probe_tests;
#[cfg(test)]
mod tests;
