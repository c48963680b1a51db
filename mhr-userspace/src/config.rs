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
mod tests {
    use super::*;

    /// A file with one problem gives that problem, so tests match on it.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        match Config::parse(text, Path::new("mhr.toml")) {
            Err(ConfigError::Invalid { mut problems, .. }) if problems.len() == 1 => {
                Err(problems.remove(0).error)
            }
            other => other,
        }
    }

    /// The full text of the error `text` gives, one problem a line.
    fn message(text: &str) -> String {
        match Config::parse(text, Path::new("mhr.toml")) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    const MINIMAL: &str =
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n";

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.uplinks.len(), 2);
        assert!(config.uplinks[0].primary && !config.uplinks[1].primary);
        assert_eq!(config.routing, RoutingConfig::default());
        assert_eq!(config.guard.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9847");
        assert_eq!(config.metrics.top_offenders, 0);
        assert_eq!(config.guard_mode(&config.uplinks[0]), (GuardMode::Monitor, false));
        assert!(!config.routing.to_rules);
        assert_eq!(config.routing.source_rules, SourceRules::Prefix);
        assert_eq!(config.uplinks[1].gateway, None);
        assert!(config.uplinks[1].allow.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let text = r#"
[[uplink]]
interface = "ens3"
primary = true
gateway = "10.0.3.1"
gateway6 = "fe80::1"
table = 300
allow = ["192.0.2.0/24", "2001:db8::/32"]

[[uplink]]
interface = "ens4"

[routing]
table_range = [400, 410]
priority_range = [500, 520]
protocol = 200
rt_tables_dir = "/tmp/rt"
state_dir = "/tmp/state"
to_rules = true
source_rules = "address"
"#;
        let config = parse(text).unwrap();
        assert_eq!(config.uplinks[0].table, Some(300));
        assert_eq!(config.uplinks[0].allow.len(), 2);
        assert_eq!(config.routing.tables(), 400..=410);
        assert!(config.routing.to_rules);
        assert_eq!(config.routing.source_rules, SourceRules::Address);
        assert!(parse(&format!("{MINIMAL}[routing]\nsource_rules = \"subnet\"\n")).is_err());
    }

    #[test]
    fn guard_modes_default_globally_and_per_uplink() {
        let text = "mode = \"enforce\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\n[[uplink]]\ninterface = \"b\"\nmode = \"monitor\"\nenforce_asymmetric = true\n[datapath]\npin_dir = \"/sys/fs/bpf/x\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config.guard_mode(&config.uplinks[0]), (GuardMode::Enforce, false));
        assert_eq!(config.guard_mode(&config.uplinks[1]), (GuardMode::Monitor, true));
        assert_eq!(config.guard.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
        assert_eq!(
            message("mode = \"block\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\n"),
            "mhr.toml:1:8: mode must be \"monitor\" or \"enforce\", not \"block\""
        );
    }

    #[test]
    fn the_guard_section_is_read_under_its_old_name_too() {
        let guard =
            parse(&format!("{MINIMAL}[guard]\npin_dir = \"/sys/fs/bpf/g\"\nattach = \"clsact\"\n")).unwrap();
        assert_eq!(guard.guard.pin_dir, PathBuf::from("/sys/fs/bpf/g"));
        assert_eq!(guard.guard.attach, AttachMode::Clsact);
        let old = parse(&format!("{MINIMAL}[datapath]\npin_dir = \"/sys/fs/bpf/g\"\nattach = \"clsact\"\n"))
            .unwrap();
        assert_eq!(old.guard, guard.guard);
        let both = parse(&format!("{MINIMAL}[guard]\npin_dir = \"/a\"\n[datapath]\npin_dir = \"/b\"\n"));
        assert!(both.is_err(), "one section, not two: {both:?}");
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        assert_eq!(
            message("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngatway = \"10.0.0.1\"\n"),
            "mhr.toml:4:1: uplink `ens3`: unknown key `gatway`; did you mean `gateway`?"
        );
    }

    #[test]
    fn malformed_toml_reports_line_and_column() {
        let err = parse("[[uplink]]\ninterface = \"ens3\nprimary = true\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err:?}");
        assert!(err.to_string().starts_with("mhr.toml:2:"), "{err}");
    }

    #[test]
    fn bad_addresses_are_rejected_with_position() {
        let with =
            |line: &str| message(&format!("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{line}\n"));
        assert_eq!(
            with("gateway = \"10.0.0.300\""),
            "mhr.toml:4:11: uplink `ens3`: gateway must be an IPv4 address such as \"192.0.2.1\", not \"10.0.0.300\""
        );
        assert_eq!(
            with("gateway = \"2001:db8::1\""),
            "mhr.toml:4:11: uplink `ens3`: `gateway` is IPv4; put IPv6 gateways (2001:db8::1) in `gateway6`"
        );
        assert_eq!(
            with("gateway6 = \"192.0.2.1\""),
            "mhr.toml:4:12: uplink `ens3`: `gateway6` is IPv6; put IPv4 gateways (192.0.2.1) in `gateway`"
        );
        assert_eq!(
            with("allow = [\"192.0.2.0/24\", \"192.0.2.0/33\"]"),
            "mhr.toml:4:26: uplink `ens3`: allow[1] = \"192.0.2.0/33\": prefix length 33 is more than 32 for IPv4"
        );
        assert!(
            with("allow = [\"2001:db8::/129\"]").ends_with("prefix length 129 is more than 128 for IPv6")
        );
        assert!(
            with("allow = [\"192.0.2.1\"]")
                .ends_with("no prefix length; write \"192.0.2.1/32\" for one address")
        );
        assert!(with("allow = [\"192.0.2.x/24\"]").ends_with("`192.0.2.x` is not an IPv4 or IPv6 address"));
        assert!(
            with("probe = [\"192.0.2.1\", \"ns1\"]")
                .ends_with("probe[1] = \"ns1\": not an IPv4 or IPv6 address")
        );
    }

    #[test]
    fn exactly_one_primary() {
        let none = parse("[[uplink]]\ninterface = \"ens3\"\n").unwrap_err();
        assert!(matches!(none, ConfigError::NoPrimary));
        let two = parse(
            "[[uplink]]\ninterface = \"a\"\nprimary = true\n[[uplink]]\ninterface = \"b\"\nprimary = true\n",
        )
        .unwrap_err();
        assert!(
            matches!(two, ConfigError::SeveralPrimaries { ref first, ref second, .. } if first == "a" && second == "b")
        );
    }

    #[test]
    fn duplicate_and_invalid_uplinks_are_rejected() {
        let dup =
            parse("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens3\"\n")
                .unwrap_err();
        assert!(matches!(dup, ConfigError::DuplicateUplink { ref interface, .. } if interface == "ens3"));
        let long = parse("[[uplink]]\ninterface = \"averyveryverylongname\"\nprimary = true\n").unwrap_err();
        assert!(matches!(long, ConfigError::BadInterfaceName { .. }));
        assert!(matches!(parse("").unwrap_err(), ConfigError::NoUplinks));
        let many: String = (0..65)
            .map(|i| {
                format!("[[uplink]]\ninterface = \"up{i}\"\n{}", if i == 0 { "primary = true\n" } else { "" })
            })
            .collect();
        let many = parse(&format!("{many}[routing]\npriority_range = [100, 400]\n")).unwrap_err();
        assert!(matches!(many, ConfigError::TooManyUplinks { count: 65, max: 64, .. }), "{many:?}");
    }

    #[test]
    fn kernel_tables_and_shared_tables_are_rejected() {
        for table in [0, 253, 254, 255] {
            let text = format!("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ntable = {table}\n");
            assert!(matches!(parse(&text).unwrap_err(), ConfigError::ReservedTable { .. }), "table {table}");
        }
        let shared =
            parse("[[uplink]]\ninterface = \"a\"\nprimary = true\ntable = 9\n[[uplink]]\ninterface = \"b\"\ntable = 9\n")
                .unwrap_err();
        assert!(matches!(shared, ConfigError::SharedTable { table: 9, .. }));
    }

    #[test]
    fn ranges_are_checked() {
        let with = |routing: &str| parse(&format!("{MINIMAL}[routing]\n{routing}\n"));
        assert!(matches!(
            with("table_range = [10, 5]").unwrap_err(),
            ConfigError::BadRange { key: "table_range", .. }
        ));
        assert!(matches!(with("table_range = [250, 260]").unwrap_err(), ConfigError::BadRange { .. }));
        assert!(matches!(with("priority_range = [0, 10]").unwrap_err(), ConfigError::BadRange { .. }));
        assert!(matches!(with("priority_range = [32000, 32766]").unwrap_err(), ConfigError::BadRange { .. }));
        assert!(matches!(
            with("priority_range = [100, 104]").unwrap_err(),
            ConfigError::PriorityRangeTooSmall { needed: 6, have: 5, .. }
        ));
        assert!(matches!(with("protocol = 4").unwrap_err(), ConfigError::ReservedProtocol { .. }));
        let dhcp = with("protocol = 16").unwrap_err();
        assert!(
            matches!(dhcp, ConfigError::ReservedProtocol { protocol: 16, owner: "dhcp", .. }),
            "{dhcp:?}"
        );
        assert!(matches!(
            with("protocol = 186").unwrap_err(),
            ConfigError::ReservedProtocol { owner: "bgp", .. }
        ));
        // Written before mhr kept its default in its own table: accepted, unused.
        assert_eq!(with("main_metric = 0").map(|c| c.routing.main_metric), Ok(Some(0)));
        assert!(matches!(
            with("default_table = 254").unwrap_err(),
            ConfigError::ReservedDefaultTable { table: 254, .. }
        ));
        let taken = parse("[[uplink]]\ninterface = \"a\"\nprimary = true\ntable = 7199\n").unwrap_err();
        assert!(
            matches!(&taken, ConfigError::UplinkOnDefaultTable { table: 7199, interface, .. } if interface == "a"),
            "{taken:?}"
        );
        assert_eq!(with("default_table = 500").map(|c| c.routing.default_table()), Ok(500));
        let top = parse(&format!("{MINIMAL}[metrics]\ntop_offenders = 11\n")).unwrap_err();
        assert!(matches!(top, ConfigError::TooManyTopOffenders { value: 11, .. }));
        let listen =
            parse(&format!("{MINIMAL}[metrics]\nlisten = \"0.0.0.0:9100\"\ntop_offenders = 10\n")).unwrap();
        assert_eq!(listen.metrics.listen.port(), 9100);
        assert_eq!(
            with("priority_range = [100, 105]").map(|c| c.routing.default_priorities()),
            Ok((104, 105))
        );
    }

    #[test]
    fn a_reserved_protocol_is_accepted_only_when_forced() {
        let forced = parse(&format!("{MINIMAL}[routing]\nprotocol = 16\nforce_protocol = true\n")).unwrap();
        assert_eq!(forced.routing.protocol, 16);
        assert!(!RoutingConfig::default().force_protocol, "not forced by default");
    }

    #[test]
    fn allow_prefixes_beyond_the_guards_capacity_are_refused_per_family() {
        let prefixes = |count: u32, v6: bool| -> String {
            let list: Vec<String> = (0..count)
                .map(|i| {
                    if v6 {
                        format!("\"2001:db8:{i:x}::/48\"")
                    } else {
                        format!("\"10.{}.{}.0/24\"", i / 256, i % 256)
                    }
                })
                .collect();
            list.join(", ")
        };
        let config = |v4: u32, v6: u32| {
            let allow = [prefixes(v4, false), prefixes(v6, true)]
                .iter()
                .filter(|p| !p.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            parse(&format!("[[uplink]]\ninterface = \"a\"\nprimary = true\nallow = [{allow}]\n"))
        };
        assert!(config(MAX_ALLOW, MAX_ALLOW).is_ok());
        let err = config(MAX_ALLOW + 1, 0).unwrap_err();
        assert!(
            matches!(err, ConfigError::TooManyAllow { count: 1025, family: crate::model::Family::V4, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("1025 IPv4 `allow` prefixes"), "{err}");
        assert!(matches!(
            config(0, MAX_ALLOW + 1).unwrap_err(),
            ConfigError::TooManyAllow { family: crate::model::Family::V6, .. }
        ));
    }

    #[test]
    fn health_and_failover_settings_parse_with_defaults_and_bounds() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.policy, Policy::Failover);
        assert_eq!(config.health, HealthConfig::default());
        assert_eq!(config.health.interval, Duration::from_secs(1));
        assert_eq!((config.health.down_after, config.health.up_after), (3, 5));
        assert_eq!(config.routing.default_table(), 7199);
        assert_eq!(config.routing.default_priorities(), (7298, 7299));

        let text = "policy = \"balance\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\nprobe = [\"203.0.113.1\", \"2001:db8::53\"]\nweight = 3\n[[uplink]]\ninterface = \"b\"\npriority = 7\n[health]\ninterval = \"500ms\"\ntimeout = \"300ms\"\ndown_after = 2\nup_after = 10\n";
        let config = parse(text).unwrap();
        assert_eq!(config.policy, Policy::Balance);
        assert_eq!(config.health.interval, Duration::from_millis(500));
        assert_eq!(config.uplinks[0].probes(crate::model::Family::V6).count(), 1);
        assert_eq!((config.uplinks[0].weight(), config.uplinks[1].weight()), (3, 1));
        assert_eq!(config.uplinks[1].priority, Some(7));

        let with = |extra: &str| parse(&format!("[[uplink]]\ninterface = \"a\"\nprimary = true\n{extra}"));
        let five = with("probe = [\"1.1.1.1\", \"1.1.1.2\", \"1.1.1.3\", \"1.1.1.4\", \"1.1.1.5\"]\n");
        assert!(matches!(five.unwrap_err(), ConfigError::TooManyProbes { count: 5, .. }));
        assert!(matches!(with("probe = [\"224.0.0.1\"]\n").unwrap_err(), ConfigError::BadProbe { .. }));
        assert!(matches!(with("weight = 0\n").unwrap_err(), ConfigError::BadWeight { weight: 0, .. }));
        assert!(matches!(with("weight = 257\n").unwrap_err(), ConfigError::BadWeight { .. }));
        for (health, key) in [
            ("interval = \"10ms\"", "interval"),
            ("interval = \"2s\"\ntimeout = \"3s\"", "timeout"),
            ("down_after = 0", "down_after"),
            ("up_after = 1000", "up_after"),
        ] {
            let err = with(&format!("[health]\n{health}\n")).unwrap_err();
            assert!(matches!(err, ConfigError::BadHealth { key: k, .. } if k == key), "{health}: {err:?}");
        }
        let random = message(&format!("policy = \"random\"\n{MINIMAL}"));
        assert_eq!(random, "mhr.toml:1:10: policy must be \"failover\" or \"balance\", not \"random\"");
    }

    #[test]
    fn oversized_and_unreadable_config_files_are_refused_without_reading_them_whole() {
        let err = Config::load(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
        let err = Config::load(Path::new("/nonexistent/mhr.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("mhr init"), "a missing config points to mhr init: {err}");
        let err = Config::load(Path::new("/proc/self/mem")).unwrap_err();
        assert!(err.to_string().starts_with("cannot read config /proc/self/mem"), "{err}");
    }

    /// The boundaries the validation draws, each accepted exactly at the
    /// limit and refused one past it.
    #[test]
    fn limits_hold_exactly_at_their_bounds() {
        let uplinks = |count: usize| -> String {
            (0..count)
                .map(|i| {
                    format!(
                        "[[uplink]]\ninterface = \"up{i}\"\n{}",
                        if i == 0 { "primary = true\n" } else { "" }
                    )
                })
                .collect()
        };
        let sixty_four = parse(&format!("{}[routing]\npriority_range = [100, 400]\n", uplinks(64)));
        assert_eq!(sixty_four.map(|c| c.uplinks.len()), Ok(64));
        // Two rule priorities an uplink and two for the default: three uplinks need eight.
        let three = |range: &str| parse(&format!("{}[routing]\npriority_range = {range}\n", uplinks(3)));
        assert!(three("[100, 107]").is_ok());
        let seven = three("[100, 106]").unwrap_err();
        assert!(matches!(seven, ConfigError::PriorityRangeTooSmall { needed: 8, have: 7, .. }), "{seven:?}");
        let one_table =
            parse("[[uplink]]\ninterface = \"a\"\nprimary = true\n[routing]\ntable_range = [7100, 7100]\n");
        assert_eq!(one_table.map(|c| c.routing.tables()), Ok(7100..=7100));
        let probes = |count: usize| {
            let targets: Vec<String> = (1..=count).map(|i| format!("\"192.0.2.{i}\"")).collect();
            parse(&format!(
                "[[uplink]]\ninterface = \"a\"\nprimary = true\nprobe = [{}]\n",
                targets.join(", ")
            ))
        };
        assert_eq!(
            probes(MAX_PROBES_PER_UPLINK).map(|c| c.uplinks[0].probe.len()),
            Ok(MAX_PROBES_PER_UPLINK)
        );
        assert!(matches!(probes(MAX_PROBES_PER_UPLINK + 1), Err(ConfigError::TooManyProbes { .. })));
    }

    #[test]
    fn interface_names_refuse_each_character_the_kernel_does() {
        for name in ["a/b", "a:b", "a b", "a\\tb", ".", ".."] {
            let text = format!("[[uplink]]\ninterface = \"{name}\"\nprimary = true\n");
            assert!(matches!(parse(&text), Err(ConfigError::BadInterfaceName { .. })), "{name:?}");
        }
        let text = "[[uplink]]\ninterface = \"a\\u0001b\"\nprimary = true\n";
        assert!(matches!(parse(text), Err(ConfigError::BadInterfaceName { .. })), "a control character");
        assert!(parse("[[uplink]]\ninterface = \"eth0.100\"\nprimary = true\n").is_ok());
    }

    #[test]
    fn a_config_file_of_exactly_the_limit_loads_and_one_byte_more_does_not() {
        let dir = std::env::temp_dir().join(format!("mhr-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mhr.toml");
        let padded = |size: u64| {
            let mut text = format!("{MINIMAL}#");
            text.push_str(&"x".repeat(size as usize - text.len()));
            text
        };
        std::fs::write(&path, padded(MAX_CONFIG_BYTES)).unwrap();
        let loaded = Config::load(&path).map(|c| c.uplinks.len());
        std::fs::write(&path, padded(MAX_CONFIG_BYTES + 1)).unwrap();
        let too_large = Config::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded, Ok(2));
        assert!(matches!(too_large, Err(ConfigError::TooLarge { size, .. }) if size == MAX_CONFIG_BYTES + 1));
    }

    #[test]
    fn probes_are_split_by_family_and_modes_print_as_written() {
        let text = "[[uplink]]\ninterface = \"a\"\nprimary = true\nprobe = [\"192.0.2.1\", \"2001:db8::1\", \"192.0.2.2\"]\n";
        let config = parse(text).unwrap();
        let probes = |family| config.uplinks[0].probes(family).map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(probes(crate::model::Family::V4), ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(probes(crate::model::Family::V6), ["2001:db8::1"]);
        assert_eq!(
            (GuardMode::Monitor.to_string(), GuardMode::Enforce.to_string()),
            ("monitor".into(), "enforce".into())
        );
        assert_eq!(
            (Policy::Failover.to_string(), Policy::Balance.to_string()),
            ("failover".into(), "balance".into())
        );
    }

    const UPLINK: &str = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n";

    #[test]
    fn numbers_out_of_range_say_the_range_in_words() {
        let with = |line: &str| message(&format!("{UPLINK}{line}\n"));
        assert_eq!(
            with("weight = -1"),
            "mhr.toml:4:10: uplink `ens3`: weight must be a whole number from 1 to 256, not -1"
        );
        assert_eq!(
            with("table = -5"),
            "mhr.toml:4:9: uplink `ens3`: table must be a whole number from 1 to 4294967295 other than 253–255, not -5"
        );
        assert_eq!(
            with("[routing]\nprotocol = 300"),
            "mhr.toml:5:12: [routing] protocol must be a whole number from 0 to 255, not 300"
        );
        assert_eq!(
            with("priority = \"3\""),
            "mhr.toml:4:12: uplink `ens3`: priority must be a whole number from 0 to 4294967295, not \"3\""
        );
        assert_eq!(
            with("[routing]\ntable_range = [1, 2, 3]"),
            "mhr.toml:5:15: [routing] table_range must be [first, last], two whole numbers from 1 to 4294967295, not [1, 2, 3]"
        );
        // In the field's type but outside what mhr allows: the same words, from validation.
        assert_eq!(
            with("weight = 0"),
            "mhr.toml:4:1: uplink `ens3`: weight must be a whole number from 1 to 256, not 0"
        );
        assert_eq!(
            with("[metrics]\nbasic_auth_users = [\"prometheus\"]"),
            "mhr.toml:5:20: [metrics] basic_auth_users must be a table of user = \"bcrypt hash\" pairs, not [\"prometheus\"]"
        );
        assert_eq!(
            with("optional = \"yes\""),
            "mhr.toml:4:12: uplink `ens3`: optional must be true or false, not \"yes\""
        );
    }

    #[test]
    fn a_single_bracket_uplink_says_to_write_two() {
        assert_eq!(
            message("[uplink]\ninterface = \"ens3\"\nprimary = true\n"),
            "mhr.toml:1:2: uplinks are a list of tables: write `[[uplink]]` (two brackets) above each uplink's keys"
        );
        assert_eq!(
            message(&format!("{UPLINK}[[health]]\ninterval = \"1s\"\n")),
            "mhr.toml:4:3: [health] is one table: write `[health]` on a line of its own, then its keys"
        );
    }

    #[test]
    fn bad_durations_show_what_one_looks_like() {
        assert_eq!(
            message(&format!("{UPLINK}[health]\ninterval = \"fast\"\ntimeout = 2\n")),
            "mhr.toml:5:12: [health] interval: durations look like 500ms, 2s or 1m, not \"fast\"\n\
             mhr.toml:6:11: [health] timeout: durations look like 500ms, 2s or 1m, not 2"
        );
    }

    #[test]
    fn interface_names_say_why_they_are_refused() {
        assert_eq!(
            message("[[uplink]]\ninterface = \"averyverylongname\"\nprimary = true\n"),
            "mhr.toml:2:1: uplink `averyverylongname`: interface names have at most 15 characters (Linux's IFNAMSIZ)"
        );
        assert_eq!(
            message("[[uplink]]\ninterface = \"a/b\"\nprimary = true\n"),
            "mhr.toml:2:1: uplink `a/b`: interface names cannot hold `/`, `:`, spaces or control characters"
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_at_its_line() {
        let text = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweight = 0\n\
                    [[uplink]]\ninterface = \"ens3\"\ntable = 254\n\
                    [health]\ninterval = \"10ms\"\ndown_after = 0\n";
        assert_eq!(
            message(text),
            "mhr.toml:4:1: uplink `ens3`: weight must be a whole number from 1 to 256, not 0\n\
             mhr.toml:6:1: uplink `ens3` is configured twice\n\
             mhr.toml:7:1: uplink `ens3`: table 254 is reserved by the kernel (0, 253 default, 254 main, 255 local)\n\
             mhr.toml:9:1: [health] interval must be from 100ms to 1h, not 10ms\n\
             mhr.toml:10:1: [health] down_after must be a whole number from 1 to 100, not 0"
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(text, Path::new("mhr.toml")) else {
            panic!("not Invalid")
        };
        assert!(matches!(problems[1].error, ConfigError::DuplicateUplink { .. }), "{problems:?}");
        assert_eq!(
            message("[[uplink]]\ninterface = \"a\"\n"),
            "mhr.toml:2:1: no uplink has `primary = true`; exactly one must carry the main default route"
        );
    }

    #[test]
    fn unknown_keys_at_every_level_get_the_nearest_known_one() {
        let text = "moed = \"enforce\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweigth = 2\n\
                    [heath]\n[routing]\nprotocl = 210\n[health]\nintervall = \"1s\"\n\
                    [guard]\npin_dri = \"/x\"\n[metrics]\nlisten_addr = \"127.0.0.1:1\"\nzzz = 1\n";
        assert_eq!(
            message(text),
            "mhr.toml:1:1: unknown key `moed`; did you mean `mode`?\n\
             mhr.toml:5:1: uplink `ens3`: unknown key `weigth`; did you mean `weight`?\n\
             mhr.toml:6:2: unknown key `heath`; did you mean `health`?\n\
             mhr.toml:8:1: [routing] unknown key `protocl`; did you mean `protocol`?\n\
             mhr.toml:10:1: [health] unknown key `intervall`; did you mean `interval`?\n\
             mhr.toml:12:1: [guard] unknown key `pin_dri`; did you mean `pin_dir`?\n\
             mhr.toml:14:1: [metrics] unknown key `listen_addr`; did you mean `listen`?\n\
             mhr.toml:15:1: [metrics] unknown key `zzz` in [metrics]; known keys: listen, top_offenders, tls_cert, tls_key, basic_auth_users"
        );
        assert_eq!(
            message(&format!("{UPLINK}interval = \"2s\"\n")),
            "mhr.toml:4:1: uplink `ens3`: unknown key `interval`; it belongs in [health]"
        );
    }

    #[test]
    fn a_top_level_key_after_an_uplink_header_is_named_as_such() {
        // `mode` is an uplink key too: it parses, with a warning.
        let config = Config::parse(
            "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n\nmode = \"enforce\"\n",
            Path::new("mhr.toml"),
        )
        .unwrap();
        assert_eq!(config.guard_mode(&config.uplinks[0]).0, GuardMode::Monitor);
        assert_eq!(
            config.warnings,
            [
                "mhr.toml:7:1: `mode` follows [[uplink]] `ens4`, so TOML makes it that uplink's only; to set it for every uplink, move it above the first [[uplink]] (a top-level `mode` silences this)"
            ]
        );
        assert!(
            parse(&format!("mode = \"monitor\"\n{MINIMAL}mode = \"enforce\"\n")).unwrap().warnings.is_empty()
        );
        assert!(parse(&format!("{MINIMAL}mode = \"enforce\"\nweight = 2\n")).unwrap().warnings.is_empty());
        // `policy` is not: an error that says why it landed there.
        assert_eq!(
            message(&format!("{UPLINK}policy = \"balance\"\n")),
            "mhr.toml:4:1: uplink `ens3`: unknown key `policy`; `policy` is a top-level key, and TOML puts every key after a [[uplink]] header into that table: move it above the first table"
        );
    }

    /// The key schema that words the errors and serde's structs list the
    /// same keys: a key added to one is added to the other.
    #[test]
    fn the_key_schema_matches_the_config_structs() {
        for (table, prefix) in [
            ("", ""),
            ("uplink", "[[uplink]]\ninterface = \"a\"\n"),
            ("health", "[health]\n"),
            ("routing", "[routing]\n"),
            ("guard", "[guard]\n"),
            ("metrics", "[metrics]\n"),
        ] {
            let err = toml::from_str::<RawConfig>(&format!("{prefix}not_a_key = 1\n")).unwrap_err();
            let message = err.message();
            // serde words it "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, `c`".
            let expected = message.split_once("expected ").map_or("", |(_, list)| list);
            let expected = expected.trim_start_matches("one of ").replace(" or ", ", ");
            let mut serde: Vec<&str> = expected.split(", ").map(|k| k.trim().trim_matches('`')).collect();
            let mut schema = check::known_keys(table);
            serde.sort_unstable();
            schema.sort_unstable();
            assert_eq!(serde, schema, "[{table}]: {message}");
        }
    }

    #[test]
    fn a_missing_interface_and_both_guard_names_are_named() {
        assert_eq!(
            message(&format!("{UPLINK}[[uplink]]\nprimary = false\n")),
            "mhr.toml:4:1: uplink #2: `interface` is missing: each [[uplink]] names its network interface, e.g. interface = \"eth0\""
        );
        assert_eq!(
            message(&format!("{UPLINK}[guard]\npin_dir = \"/a\"\n[datapath]\npin_dir = \"/b\"\n")),
            "mhr.toml:6:2: [datapath] is the old name of [guard]: write one of them"
        );
    }

    #[test]
    fn a_key_written_twice_is_named() {
        assert_eq!(
            message(&format!("{UPLINK}interface = \"ens4\"\n")),
            "mhr.toml:4:1: `interface` is written twice; a key (or a [table]) may appear once in its table"
        );
        assert_eq!(
            message(&format!("{UPLINK}[health]\n[health]\n")),
            "mhr.toml:5:2: `health` is written twice; a key (or a [table]) may appear once in its table"
        );
    }

    /// Every prefix of a full config (cut mid-key, mid-string, mid-table)
    /// is an error with a position or a config, never a panic.
    #[test]
    fn every_truncation_of_a_config_fails_cleanly() {
        let full = "mode = \"enforce\"\npolicy = \"balance\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\
                    gateway = \"192.0.2.1\"\ngateway6 = \"fe80::1\"\nallow = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n\
                    probe = [\"192.0.2.53\"]\nweight = 3\ntable = 300\n[[uplink]]\ninterface = \"wwan0\"\noptional = true\n\
                    [health]\ninterval = \"500ms\"\ntimeout = \"300ms\"\n[routing]\ntable_range = [400, 410]\n\
                    [metrics]\nbasic_auth_users = { prometheus = \"x\" }\n";
        for end in (0..=full.len()).filter(|&end| full.is_char_boundary(end)) {
            match Config::parse(&full[..end], Path::new("mhr.toml")) {
                Ok(_) => {}
                Err(ConfigError::Syntax { line, column, .. }) => assert!(line >= 1 && column >= 1),
                Err(ConfigError::Invalid { problems, .. }) => {
                    assert!(!problems.is_empty() && problems.iter().all(|p| p.line >= 1 && p.column >= 1))
                }
                Err(other) => panic!("{end}: {other:?}"),
            }
        }
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
