//! Config errors: every problem a config file can have, each located at
//! its `line:column`.

use std::path::{Path, PathBuf};

use mhr_common::guard::MAX_ALLOW;

use super::{MAX_CONFIG_BYTES, MAX_PROBES_PER_UPLINK, MAX_TOP_OFFENDERS, validation::MAX_WEIGHT};

/// A problem in the config file. `Invalid` holds every problem of a file
/// that parsed, each at its `line:column`; the variants after it are those
/// problems (their text names the key and what it may hold, not the path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    #[error("cannot read config {path}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Read { path: PathBuf, errno: i32 },
    #[error("cannot read config {path}: it is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error(
        "no config at {path}: `mhr init` prints one from the uplinks this host has, `mhr init --write` writes it there"
    )]
    Missing { path: PathBuf },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {size} bytes is too large for a config file (at most {MAX_CONFIG_BYTES})")]
    TooLarge { path: PathBuf, size: u64 },
    /// Every problem found, one line each: `path:line:column: problem`.
    #[error("{}", problem_lines(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Located> },
    #[error("{place}unknown key `{key}`{hint}")]
    UnknownKey { place: String, key: String, hint: String },
    #[error("{place}{message}")]
    BadValue { place: String, message: String },
    #[error("no [[uplink]] configured")]
    NoUplinks,
    #[error("{count} uplinks configured; the source guard tells at most {max} apart")]
    TooManyUplinks { count: usize, max: u32 },
    #[error("uplink `{interface}` is configured twice")]
    DuplicateUplink { interface: String },
    #[error("uplink `{interface}`: interface names {reason}")]
    BadInterfaceName { interface: String, reason: &'static str },
    #[error("no uplink has `primary = true`; exactly one must carry the main default route")]
    NoPrimary,
    #[error("uplinks `{first}` and `{second}` both have `primary = true`; exactly one may")]
    SeveralPrimaries { first: String, second: String },
    #[error(
        "uplink `{interface}`: table {table} is reserved by the kernel (0, 253 default, 254 main, 255 local)"
    )]
    ReservedTable { interface: String, table: u32 },
    #[error("uplinks `{first}` and `{second}` both use table {table}")]
    SharedTable { table: u32, first: String, second: String },
    #[error("[routing] {key} = [{start}, {end}] is not a valid range: {reason}")]
    BadRange { key: &'static str, start: u32, end: u32, reason: &'static str },
    #[error(
        "[routing] priority_range holds {have} priorities, {needed} are needed (two per uplink, two for the default)"
    )]
    PriorityRangeTooSmall { needed: usize, have: u64 },
    #[error(
        "[routing] protocol {protocol} is `{owner}`'s: mhr would treat their routes as its own; pick an unassigned number such as 210 (or set force_protocol = true if nothing on this host uses it)"
    )]
    ReservedProtocol { protocol: u8, owner: &'static str },
    #[error(
        "{count} {family} `allow` prefixes over all uplinks; the guard holds at most {MAX_ALLOW} per family"
    )]
    TooManyAllow { family: crate::model::Family, count: usize },
    #[error("uplink `{interface}`: {count} probe targets, at most {MAX_PROBES_PER_UPLINK}")]
    TooManyProbes { interface: String, count: usize },
    #[error("uplink `{interface}`: probe target {target} is not a unicast address")]
    BadProbe { interface: String, target: String },
    #[error(
        "uplink `{interface}`: quorum must be a whole number from 1 to its {targets} probe targets, not {quorum}"
    )]
    BadQuorum { interface: String, quorum: u32, targets: usize },
    #[error(
        "uplink `{interface}`: probe_interval must be from `[health] interval` ({interval}) to 1h, not {value}"
    )]
    BadProbeInterval { interface: String, interval: String, value: String },
    #[error("uplink `{interface}`: weight must be a whole number from 1 to {MAX_WEIGHT}, not {weight}")]
    BadWeight { interface: String, weight: u32 },
    #[error("rule #{rule}: {key} {reason}")]
    BadRule { rule: usize, key: &'static str, reason: String },
    #[error("hook #{hook}: {key} {reason}")]
    BadHook { hook: usize, key: &'static str, reason: String },
    #[error("[health] {key} {reason}")]
    BadHealth { key: &'static str, reason: String },
    #[error(
        "[routing] default_table = {table} is reserved by the kernel (0, 253 default, 254 main, 255 local)"
    )]
    ReservedDefaultTable { table: u32 },
    #[error(
        "uplink `{interface}`: table {table} holds main's default route ([routing] default_table); pick another"
    )]
    UplinkOnDefaultTable { interface: String, table: u32 },
    #[error(
        "[metrics] top_offenders must be a whole number from 0 to {MAX_TOP_OFFENDERS}, not {value} (label sets stay bounded)"
    )]
    TooManyTopOffenders { value: usize },
    #[error("[metrics] {key}: {reason}")]
    BadMetrics { key: &'static str, reason: String },
}

/// One problem and where it is in the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub error: ConfigError,
}

fn problem_lines(path: &Path, problems: &[Located]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.error))
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1-based line and column of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
