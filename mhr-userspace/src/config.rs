//! The configuration file: TOML, validated before anything touches the
//! kernel. Unknown keys are errors.

use std::{
    collections::BTreeSet,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use mhr_common::guard::MAX_ALLOW;
use serde::Deserialize;

use crate::tc::AttachMode;

mod check;

use check::Loc;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/mhr/mhr.toml";

/// Defaults stay clear of the bands other agents use: cloud-init tables 100+, mwan3 priorities 1000–2999,
/// amazon-ec2-net-utils 10000+, SUSE cloud-netconfig 30000–30799, AWS VPC
/// CNI 512/1536, Calico 99, the kernel's 253–255.
pub const DEFAULT_TABLE_RANGE: [u32; 2] = [7100, 7199];
pub const DEFAULT_PRIORITY_RANGE: [u32; 2] = [7100, 7299];
/// Route and rule protocol that marks what mhr owns (unassigned in iproute2's rt_protos).
pub const DEFAULT_PROTOCOL: u8 = 210;
pub const DEFAULT_RT_TABLES_DIR: &str = "/etc/iproute2/rt_tables.d";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mhr";
/// bpffs directory for the guard's pinned maps and links.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mhr";

/// Tables the kernel owns (unspec, default, main, local).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];
/// Protocols other writers of routes use (iproute2's rt_protos): unspec,
/// redirect, kernel, boot, static, gated, ra, mrt, zebra, bird, dnrouted,
/// xorp, ntk, dhcp, mrouted, keepalived, babel, openr, bgp, isis, ospf,
/// rip, eigrp. Claiming one would make mhr delete their routes as its own.
const RESERVED_PROTOCOLS: [(u8, &str); 23] = [
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];
/// The name iproute2 gives a route protocol number (`dhcp`, `ra`, …), or the number.
pub fn protocol_name(protocol: u8) -> String {
    RESERVED_PROTOCOLS
        .iter()
        .find(|(number, _)| *number == protocol)
        .map_or_else(|| format!("proto {protocol}"), |(_, name)| (*name).to_owned())
}

const MAX_INTERFACE_NAME: usize = 15;
/// Larger config files are refused before parsing (a config is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Probe targets per uplink: probes are rate-bounded by design.
pub const MAX_PROBES_PER_UPLINK: usize = 4;
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_STREAK: u32 = 100;
/// A multipath next hop's weight is one byte in the kernel (weight − 1).
const MAX_WEIGHT: u32 = 256;

/// A problem in the config file. `Invalid` holds every problem of a file
/// that parsed, each at its `line:column`; the variants after it are those
/// problems (their text names the key and what it may hold, not the path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    #[error("cannot read config {path}: {reason}")]
    Read { path: PathBuf, reason: String },
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
    BadProbe { interface: String, target: IpAddr },
    #[error("uplink `{interface}`: weight must be a whole number from 1 to {MAX_WEIGHT}, not {weight}")]
    BadWeight { interface: String, weight: u32 },
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
    #[serde(default, rename = "uplink")]
    uplinks: Vec<UplinkConfig>,
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

/// `[metrics]` (the daemon's HTTP endpoint).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `/metrics` and `/healthz` are served; localhost only by default.
    pub listen: std::net::SocketAddr,
    /// Export the top K offenders with per-source labels (0 = off, at most 10).
    pub top_offenders: usize,
    /// Serve over TLS with this PEM certificate chain and key (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Basic auth: user name to bcrypt hash (the exporter-toolkit's
    /// web-config convention); empty = no auth.
    pub basic_auth_users: std::collections::BTreeMap<String, String>,
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9847";
pub const MAX_TOP_OFFENDERS: usize = 10;

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9847)),
            top_offenders: 0,
            tls_cert: None,
            tls_key: None,
            basic_auth_users: std::collections::BTreeMap::new(),
        }
    }
}

/// What the source guard does with packets whose source is not the uplink's.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// Count and flag; every packet passes.
    #[default]
    Monitor,
    /// Drop `spoofed` (and `asymmetric` with `enforce_asymmetric`).
    Enforce,
}

impl std::fmt::Display for GuardMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Monitor => "monitor",
            Self::Enforce => "enforce",
        })
    }
}

/// How main's default route is chosen (per family).
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// One uplink holds main's default: the primary while healthy, else the
    /// next healthy one by `priority` (then config order).
    #[default]
    Failover,
    /// A multipath default over every healthy uplink, by `weight`; flows
    /// stay on one uplink (L4 hash).
    Balance,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Failover => "failover",
            Self::Balance => "balance",
        })
    }
}

/// `[health]`: how uplink health is judged.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// One health round (probes, gateway neighbour state) per interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a probe waits for its echo reply (at most `interval`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed rounds before a healthy uplink turns unhealthy.
    pub down_after: u32,
    /// Consecutive good rounds before an unhealthy uplink is healthy again
    /// (the hysteresis that stops flapping).
    pub up_after: u32,
    /// How an uplink with probes is judged when mhr first sees it (a new
    /// or re-created interface, an uplink added by reload) and nothing it
    /// remembers or a start-up probe round says otherwise.
    pub assume: Assume,
}

/// `[health] assume`.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Assume {
    /// Unhealthy until it has passed `up_after` good probe rounds: a
    /// re-created primary does not take main's default before it proved
    /// its upstream works.
    #[default]
    Unhealthy,
    /// Healthy until `down_after` failed rounds (the earlier behaviour).
    Healthy,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            down_after: 3,
            up_after: 5,
            assume: Assume::default(),
        }
    }
}

/// `[guard]` (formerly `[datapath]`): where the source guard keeps its
/// pins and how it attaches.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// bpffs directory for pinned maps and links; several instances can
    /// coexist with different directories.
    pub pin_dir: PathBuf,
    /// How the guard attaches: TCX where the kernel has it, else clsact
    /// (`auto`), or one of them only.
    pub attach: AttachMode,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { pin_dir: PathBuf::from(DEFAULT_PIN_DIR), attach: AttachMode::Auto }
    }
}

/// One `[[uplink]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub interface: String,
    /// Carries the main table's default route.
    #[serde(default)]
    pub primary: bool,
    /// IPv4 gateway; learned from the interface's default routes when absent.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 gateway; learned from the interface's default routes when absent.
    pub gateway6: Option<Ipv6Addr>,
    /// Routing table id; allocated from `table_range` when absent.
    pub table: Option<u32>,
    /// Extra source prefixes legitimately sent out of this uplink (source guard).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Source guard mode for this uplink (default: the top-level `mode`).
    pub mode: Option<GuardMode>,
    /// Per-uplink override of the top-level `enforce_asymmetric`.
    pub enforce_asymmetric: Option<bool>,
    /// Addresses to ping from this uplink's own address, out of this
    /// uplink, every health interval (at most 4; any answer is a good round).
    #[serde(default)]
    pub probe: Vec<IpAddr>,
    /// The lease file of this uplink's DHCP client, when it is not where
    /// dhclient, dhcpcd, networkd or NetworkManager keep it by default
    /// (the gateway is learned from it when no route names it).
    pub dhcp_lease: Option<PathBuf>,
    /// The IPv4 address probes leave from (default: the one on the
    /// gateway's prefix).
    pub probe_source: Option<Ipv4Addr>,
    /// The IPv6 address probes leave from (default: the one on the
    /// gateway's prefix, else a global one that is not a ULA).
    pub probe_source6: Option<Ipv6Addr>,
    /// May be missing (an unplugged LTE modem, a WireGuard link that is
    /// down): `plan`, `apply` and `check` go on without it, saying so.
    #[serde(default)]
    pub optional: bool,
    /// Failover order after the primary: lower first; uplinks without one
    /// follow in config order.
    pub priority: Option<u32>,
    /// Share of new flows under `policy = "balance"` (1–256, default 1).
    pub weight: Option<u32>,
}

impl UplinkConfig {
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }

    pub fn probes(&self, family: crate::model::Family) -> impl Iterator<Item = IpAddr> + '_ {
        self.probe.iter().copied().filter(move |target| crate::model::Family::of(target) == family)
    }
}

/// How `from` rules cover an uplink's addresses.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceRules {
    /// One `from PREFIX` rule per connected prefix that holds addresses of
    /// this uplink only; per-address rules where a prefix is shared (two
    /// uplinks in one subnet). The rule count follows prefixes, not
    /// addresses: the kernel walks rules on every uncached route lookup.
    #[default]
    Prefix,
    /// One `from ADDR` rule per address, as the seed procedure does.
    Address,
}

/// `[routing]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub table_range: [u32; 2],
    pub priority_range: [u32; 2],
    pub protocol: u8,
    pub rt_tables_dir: PathBuf,
    /// Where mhr records the main-table default routes it moved, so `down`
    /// can put them back.
    pub state_dir: PathBuf,
    /// How `from` rules cover an uplink's addresses.
    pub source_rules: SourceRules,
    /// Add the seed's `to ADDR lookup TABLE` rules next to the `from`
    /// rules. Off by default: the local table (priority 0) already takes
    /// every packet to a local address, so they match nothing and only
    /// lengthen the rule walk.
    pub to_rules: bool,
    /// The table holding the default route mhr chooses (default: the last
    /// id of `table_range`, which uplinks then never get). Two rules after
    /// the uplinks' `from` rules send host traffic there: `lookup main
    /// suppress_prefixlength 0` (main without its default routes), then
    /// this table; main's own defaults, whatever their metric, come after.
    pub default_table: Option<u32>,
    /// Accepted for configs written before mhr kept its default in its own
    /// table (it was the metric of mhr's default in main); ignored.
    pub main_metric: Option<u32>,
    /// Accept a `protocol` another routing daemon uses (mhr would treat
    /// its routes in mhr's tables as its own).
    pub force_protocol: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            table_range: DEFAULT_TABLE_RANGE,
            priority_range: DEFAULT_PRIORITY_RANGE,
            protocol: DEFAULT_PROTOCOL,
            rt_tables_dir: PathBuf::from(DEFAULT_RT_TABLES_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            source_rules: SourceRules::default(),
            to_rules: false,
            default_table: None,
            main_metric: None,
            force_protocol: false,
        }
    }
}

impl RoutingConfig {
    pub fn tables(&self) -> RangeInclusive<u32> {
        self.table_range[0]..=self.table_range[1]
    }

    pub fn priorities(&self) -> RangeInclusive<u32> {
        self.priority_range[0]..=self.priority_range[1]
    }

    /// The table of the default route mhr chooses.
    pub fn default_table(&self) -> u32 {
        self.default_table.unwrap_or(self.table_range[1])
    }

    /// The priorities of the rules that send host traffic to
    /// [`Self::default_table`]: main without its defaults, then the table.
    /// The last two of `priority_range`, after every uplink's rules.
    pub fn default_priorities(&self) -> (u32, u32) {
        (self.priority_range[1] - 1, self.priority_range[1])
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub mode: GuardMode,
    pub enforce_asymmetric: bool,
    pub policy: Policy,
    pub uplinks: Vec<UplinkConfig>,
    pub health: HealthConfig,
    pub routing: RoutingConfig,
    pub guard: GuardConfig,
    pub metrics: MetricsConfig,
    /// Things that parse but are likely not meant, `path:line:column: …`
    /// each (a top-level key written after an `[[uplink]]` header lands in
    /// that uplink). [`Config::load`] logs them.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads at most [`MAX_CONFIG_BYTES`] (`/dev/zero` is refused, not read
    /// until memory runs out).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error =
            |err: std::io::Error| ConfigError::Read { path: path.to_owned(), reason: err.to_string() };
        let file = std::fs::File::open(path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing { path: path.to_owned() },
            _ => read_error(err),
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_owned(), size: bytes.len() as u64 });
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::Read { path: path.to_owned(), reason: "not UTF-8 text".to_owned() })?;
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
            uplinks: raw.uplinks,
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

    /// Every semantic problem, each with the key it is about.
    fn validate(&self) -> Vec<(Loc, ConfigError)> {
        let mut problems = Vec::new();
        if self.uplinks.is_empty() {
            problems.push((Loc::Start, ConfigError::NoUplinks));
        }
        let max = mhr_common::guard::MAX_UPLINKS;
        if self.uplinks.len() > max as usize {
            problems.push((
                Loc::Uplink(max as usize, "interface"),
                ConfigError::TooManyUplinks { count: self.uplinks.len(), max },
            ));
        }
        let mut seen = BTreeSet::new();
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let at = Loc::Uplink(index, "interface");
            if let Err(reason) = check_interface_name(&uplink.interface) {
                problems.push((
                    at,
                    ConfigError::BadInterfaceName { interface: uplink.interface.clone(), reason },
                ));
            }
            if !seen.insert(uplink.interface.as_str()) {
                problems.push((at, ConfigError::DuplicateUplink { interface: uplink.interface.clone() }));
            }
        }
        let primaries: Vec<usize> = (0..self.uplinks.len()).filter(|&i| self.uplinks[i].primary).collect();
        match primaries[..] {
            [] if !self.uplinks.is_empty() => {
                problems.push((Loc::Uplink(0, "primary"), ConfigError::NoPrimary))
            }
            [first, second, ..] => problems.push((
                Loc::Uplink(second, "primary"),
                ConfigError::SeveralPrimaries {
                    first: self.uplinks[first].interface.clone(),
                    second: self.uplinks[second].interface.clone(),
                },
            )),
            _ => {}
        }
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let Some(table) = uplink.table else { continue };
            let at = Loc::Uplink(index, "table");
            if RESERVED_TABLES.contains(&table) {
                problems
                    .push((at, ConfigError::ReservedTable { interface: uplink.interface.clone(), table }));
            }
            if let Some(other) = self.uplinks[..index].iter().find(|u| u.table == Some(table)) {
                problems.push((
                    at,
                    ConfigError::SharedTable {
                        table,
                        first: other.interface.clone(),
                        second: uplink.interface.clone(),
                    },
                ));
            }
        }
        let routing = &self.routing;
        let mut ranges_ok = true;
        for (key, [start, end]) in
            [("table_range", routing.table_range), ("priority_range", routing.priority_range)]
        {
            let reason = if start > end {
                Some("start is after end")
            } else if start == 0 {
                Some("0 is reserved")
            } else if key == "table_range" && RESERVED_TABLES.iter().any(|t| (start..=end).contains(t)) {
                Some("it includes the kernel's tables 253–255")
            } else if key == "priority_range" && end >= 32766 {
                Some("rules must sit before the main rule (32766)")
            } else {
                None
            };
            if let Some(reason) = reason {
                ranges_ok = false;
                problems
                    .push((Loc::Section("routing", key), ConfigError::BadRange { key, start, end, reason }));
            }
        }
        if ranges_ok {
            let have = u64::from(routing.priority_range[1] - routing.priority_range[0]) + 1;
            // Two per uplink, and two for the rules to main's default.
            let needed = self.uplinks.len() * 2 + 2;
            if have < needed as u64 {
                problems.push((
                    Loc::Section("routing", "priority_range"),
                    ConfigError::PriorityRangeTooSmall { needed, have },
                ));
            }
        }
        if let Some((protocol, owner)) = RESERVED_PROTOCOLS.iter().find(|(p, _)| *p == routing.protocol) {
            if !routing.force_protocol {
                problems.push((
                    Loc::Section("routing", "protocol"),
                    ConfigError::ReservedProtocol { protocol: *protocol, owner },
                ));
            } else {
                tracing::warn!(
                    protocol,
                    owner,
                    "[routing] protocol is reserved; used because force_protocol = true"
                );
            }
        }
        for family in [crate::model::Family::V4, crate::model::Family::V6] {
            let count = self
                .uplinks
                .iter()
                .flat_map(|u| &u.allow)
                .filter(|p| crate::model::Family::of(&p.addr()) == family)
                .count();
            if count > MAX_ALLOW as usize {
                let index = self.uplinks.iter().position(|u| !u.allow.is_empty()).unwrap_or(0);
                problems.push((Loc::Uplink(index, "allow"), ConfigError::TooManyAllow { family, count }));
            }
        }
        if ranges_ok {
            let default_table = routing.default_table();
            let at = Loc::Section(
                "routing",
                if routing.default_table.is_some() { "default_table" } else { "table_range" },
            );
            if RESERVED_TABLES.contains(&default_table) {
                problems.push((at, ConfigError::ReservedDefaultTable { table: default_table }));
            }
            if let Some(index) = self.uplinks.iter().position(|u| u.table == Some(default_table)) {
                problems.push((
                    Loc::Uplink(index, "table"),
                    ConfigError::UplinkOnDefaultTable {
                        interface: self.uplinks[index].interface.clone(),
                        table: default_table,
                    },
                ));
            }
            if let Some(metric) = routing.main_metric {
                tracing::warn!(
                    metric,
                    "[routing] main_metric is no longer used: mhr keeps its default in table {default_table}, ahead of main's defaults whatever their metric"
                );
            }
        }
        self.validate_health(&mut problems);
        if self.metrics.top_offenders > MAX_TOP_OFFENDERS {
            problems.push((
                Loc::Section("metrics", "top_offenders"),
                ConfigError::TooManyTopOffenders { value: self.metrics.top_offenders },
            ));
        }
        if let Err((key, reason)) = crate::daemon::web::validate(&self.metrics) {
            problems.push((Loc::Section("metrics", key), ConfigError::BadMetrics { key, reason }));
        }
        problems
    }
}

impl Config {
    fn validate_health(&self, problems: &mut Vec<(Loc, ConfigError)>) {
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let interface = || uplink.interface.clone();
            if uplink.probe.len() > MAX_PROBES_PER_UPLINK {
                problems.push((
                    Loc::Uplink(index, "probe"),
                    ConfigError::TooManyProbes { interface: interface(), count: uplink.probe.len() },
                ));
            }
            for (item, &target) in uplink.probe.iter().enumerate().filter(|(_, t)| !is_unicast(t)) {
                problems.push((
                    Loc::UplinkItem(index, "probe", item),
                    ConfigError::BadProbe { interface: interface(), target },
                ));
            }
            if let Some(weight) = uplink.weight.filter(|w| !(1..=MAX_WEIGHT).contains(w)) {
                problems.push((
                    Loc::Uplink(index, "weight"),
                    ConfigError::BadWeight { interface: interface(), weight },
                ));
            }
        }
        let health = &self.health;
        let mut bad = |key, reason: String| {
            problems.push((Loc::Section("health", key), ConfigError::BadHealth { key, reason }));
        };
        if !(MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&health.interval) {
            bad(
                "interval",
                format!("must be from 100ms to 1h, not {}", humantime::format_duration(health.interval)),
            );
        }
        let interval_ok = (MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&health.interval);
        // Against an interval that is itself refused, only a zero timeout is news.
        if health.timeout.is_zero() || (interval_ok && health.timeout > health.interval) {
            bad(
                "timeout",
                format!(
                    "must be more than 0 and at most `interval` ({}), not {}",
                    humantime::format_duration(health.interval),
                    humantime::format_duration(health.timeout)
                ),
            );
        }
        for (key, value) in [("down_after", health.down_after), ("up_after", health.up_after)] {
            if !(1..=MAX_STREAK).contains(&value) {
                bad(key, format!("must be a whole number from 1 to {MAX_STREAK}, not {value}"));
            }
        }
    }
}

fn is_unicast(address: &IpAddr) -> bool {
    !(address.is_unspecified() || address.is_multicast() || address.is_loopback())
        && *address != IpAddr::V4(Ipv4Addr::BROADCAST)
}

/// Why the kernel would refuse `name` as an interface name.
fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("cannot be empty")
    } else if name.len() > MAX_INTERFACE_NAME {
        Err("have at most 15 characters (Linux's IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Err("cannot be `.` or `..`")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        Err("cannot hold `/`, `:`, spaces or control characters")
    } else {
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
