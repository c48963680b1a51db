//! The configuration file: TOML, validated before anything touches the
//! kernel. Unknown keys are errors.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;

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
/// Protocols the kernel and iproute2 assign (unspec, redirect, kernel, boot, static).
const RESERVED_PROTOCOLS: RangeInclusive<u8> = 0..=4;
const MAX_INTERFACE_NAME: usize = 15;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: no [[uplink]] configured")]
    NoUplinks { path: PathBuf },
    #[error("{path}: {count} uplinks configured; the source guard tells at most {max} apart")]
    TooManyUplinks { path: PathBuf, count: usize, max: u32 },
    #[error("{path}: uplink `{interface}` is configured twice")]
    DuplicateUplink { path: PathBuf, interface: String },
    #[error("{path}: `{interface}` is not a valid interface name")]
    BadInterfaceName { path: PathBuf, interface: String },
    #[error("{path}: no uplink has `primary = true`; exactly one must carry the main default route")]
    NoPrimary { path: PathBuf },
    #[error("{path}: uplinks `{first}` and `{second}` both have `primary = true`; exactly one may")]
    SeveralPrimaries { path: PathBuf, first: String, second: String },
    #[error(
        "{path}: uplink `{interface}`: table {table} is reserved by the kernel (0, 253 default, 254 main, 255 local)"
    )]
    ReservedTable { path: PathBuf, interface: String, table: u32 },
    #[error("{path}: uplinks `{first}` and `{second}` both use table {table}")]
    SharedTable { path: PathBuf, table: u32, first: String, second: String },
    #[error("{path}: [routing] {key} = [{start}, {end}] is not a valid range: {reason}")]
    BadRange { path: PathBuf, key: &'static str, start: u32, end: u32, reason: &'static str },
    #[error("{path}: [routing] priority_range holds {have} priorities, {needed} are needed (two per uplink)")]
    PriorityRangeTooSmall { path: PathBuf, needed: usize, have: u64 },
    #[error("{path}: [routing] protocol {protocol} is reserved (0–4 belong to the kernel and iproute2)")]
    ReservedProtocol { path: PathBuf, protocol: u8 },
    #[error(
        "{path}: [metrics] top_offenders = {value}: at most {MAX_TOP_OFFENDERS} (label sets stay bounded)"
    )]
    TooManyTopOffenders { path: PathBuf, value: usize },
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
    #[serde(default, rename = "uplink")]
    uplinks: Vec<UplinkConfig>,
    #[serde(default)]
    routing: RoutingConfig,
    #[serde(default)]
    datapath: DatapathConfig,
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
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9847";
pub const MAX_TOP_OFFENDERS: usize = 10;

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9847)), top_offenders: 0 }
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

/// `[datapath]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// bpffs directory for pinned maps and links; several instances can
    /// coexist with different directories.
    pub pin_dir: PathBuf,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self { pin_dir: PathBuf::from(DEFAULT_PIN_DIR) }
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
    /// Add the seed's `to ADDR lookup TABLE` rules next to `from ADDR`.
    pub to_rules: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            table_range: DEFAULT_TABLE_RANGE,
            priority_range: DEFAULT_PRIORITY_RANGE,
            protocol: DEFAULT_PROTOCOL,
            rt_tables_dir: PathBuf::from(DEFAULT_RT_TABLES_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            to_rules: true,
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
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub mode: GuardMode,
    pub enforce_asymmetric: bool,
    pub uplinks: Vec<UplinkConfig>,
    pub routing: RoutingConfig,
    pub datapath: DatapathConfig,
    pub metrics: MetricsConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::Read { path: path.to_owned(), reason: err.to_string() })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| {
            let (line, column) = err.span().map_or((1, 1), |span| line_column(text, span.start));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: err.message().trim().to_owned(),
            }
        })?;
        let config = Self {
            path: path.to_owned(),
            mode: raw.mode,
            enforce_asymmetric: raw.enforce_asymmetric,
            uplinks: raw.uplinks,
            routing: raw.routing,
            datapath: raw.datapath,
            metrics: raw.metrics,
        };
        config.validate()?;
        Ok(config)
    }

    /// The guard mode and asymmetric enforcement of one uplink.
    pub fn guard_mode(&self, uplink: &UplinkConfig) -> (GuardMode, bool) {
        (uplink.mode.unwrap_or(self.mode), uplink.enforce_asymmetric.unwrap_or(self.enforce_asymmetric))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let path = || self.path.clone();
        if self.uplinks.is_empty() {
            return Err(ConfigError::NoUplinks { path: path() });
        }
        let max = mhr_common::guard::MAX_UPLINKS;
        if self.uplinks.len() > max as usize {
            return Err(ConfigError::TooManyUplinks { path: path(), count: self.uplinks.len(), max });
        }
        let mut seen = BTreeSet::new();
        for uplink in &self.uplinks {
            if !valid_interface_name(&uplink.interface) {
                return Err(ConfigError::BadInterfaceName {
                    path: path(),
                    interface: uplink.interface.clone(),
                });
            }
            if !seen.insert(uplink.interface.as_str()) {
                return Err(ConfigError::DuplicateUplink {
                    path: path(),
                    interface: uplink.interface.clone(),
                });
            }
        }
        let mut primaries = self.uplinks.iter().filter(|u| u.primary);
        match (primaries.next(), primaries.next()) {
            (None, _) => return Err(ConfigError::NoPrimary { path: path() }),
            (Some(first), Some(second)) => {
                return Err(ConfigError::SeveralPrimaries {
                    path: path(),
                    first: first.interface.clone(),
                    second: second.interface.clone(),
                });
            }
            (Some(_), None) => {}
        }
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let Some(table) = uplink.table else { continue };
            if RESERVED_TABLES.contains(&table) {
                return Err(ConfigError::ReservedTable {
                    path: path(),
                    interface: uplink.interface.clone(),
                    table,
                });
            }
            if let Some(other) = self.uplinks[..index].iter().find(|u| u.table == Some(table)) {
                return Err(ConfigError::SharedTable {
                    path: path(),
                    table,
                    first: other.interface.clone(),
                    second: uplink.interface.clone(),
                });
            }
        }
        let routing = &self.routing;
        for (key, [start, end]) in
            [("table_range", routing.table_range), ("priority_range", routing.priority_range)]
        {
            let bad = |reason| ConfigError::BadRange { path: path(), key, start, end, reason };
            if start > end {
                return Err(bad("start is after end"));
            }
            if start == 0 {
                return Err(bad("0 is reserved"));
            }
            if key == "table_range" && RESERVED_TABLES.iter().any(|t| (start..=end).contains(t)) {
                return Err(bad("it includes the kernel's tables 253–255"));
            }
            if key == "priority_range" && end >= 32766 {
                return Err(bad("rules must sit before the main rule (32766)"));
            }
        }
        let have = u64::from(routing.priority_range[1] - routing.priority_range[0]) + 1;
        let needed = self.uplinks.len() * 2;
        if have < needed as u64 {
            return Err(ConfigError::PriorityRangeTooSmall { path: path(), needed, have });
        }
        if RESERVED_PROTOCOLS.contains(&routing.protocol) {
            return Err(ConfigError::ReservedProtocol { path: path(), protocol: routing.protocol });
        }
        if self.metrics.top_offenders > MAX_TOP_OFFENDERS {
            return Err(ConfigError::TooManyTopOffenders { path: path(), value: self.metrics.top_offenders });
        }
        Ok(())
    }
}

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
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

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("mhr.toml"))
    }

    const MINIMAL: &str =
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n";

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.uplinks.len(), 2);
        assert!(config.uplinks[0].primary && !config.uplinks[1].primary);
        assert_eq!(config.routing, RoutingConfig::default());
        assert_eq!(config.datapath.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9847");
        assert_eq!(config.metrics.top_offenders, 0);
        assert_eq!(config.guard_mode(&config.uplinks[0]), (GuardMode::Monitor, false));
        assert!(config.routing.to_rules);
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
protocol = 99
rt_tables_dir = "/tmp/rt"
state_dir = "/tmp/state"
to_rules = false
"#;
        let config = parse(text).unwrap();
        assert_eq!(config.uplinks[0].table, Some(300));
        assert_eq!(config.uplinks[0].allow.len(), 2);
        assert_eq!(config.routing.tables(), 400..=410);
        assert!(!config.routing.to_rules);
    }

    #[test]
    fn guard_modes_default_globally_and_per_uplink() {
        let text = "mode = \"enforce\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\n[[uplink]]\ninterface = \"b\"\nmode = \"monitor\"\nenforce_asymmetric = true\n[datapath]\npin_dir = \"/sys/fs/bpf/x\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config.guard_mode(&config.uplinks[0]), (GuardMode::Enforce, false));
        assert_eq!(config.guard_mode(&config.uplinks[1]), (GuardMode::Monitor, true));
        assert_eq!(config.datapath.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
        let bad = parse("mode = \"block\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\n").unwrap_err();
        assert!(matches!(bad, ConfigError::Syntax { line: 1, .. }), "{bad:?}");
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let err =
            parse("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngatway = \"10.0.0.1\"\n").unwrap_err();
        let ConfigError::Syntax { line, column, message, .. } = err else { panic!("{err:?}") };
        assert_eq!((line, column), (4, 1));
        assert!(message.contains("gatway"), "{message}");
    }

    #[test]
    fn malformed_toml_reports_line_and_column() {
        let err = parse("[[uplink]]\ninterface = \"ens3\nprimary = true\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err:?}");
        assert!(err.to_string().starts_with("mhr.toml:2:"), "{err}");
    }

    #[test]
    fn bad_addresses_are_rejected_with_position() {
        let err = parse("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.0.0.300\"\n")
            .unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 4, .. }), "{err:?}");
        let err = parse("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"2001:db8::1\"\n")
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 4, .. }),
            "an IPv6 gateway is not an IPv4 one: {err:?}"
        );
        let err = parse("[[uplink]]\ninterface = \"ens3\"\nprimary = true\nallow = [\"10.0.0.0/33\"]\n")
            .unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 4, .. }), "{err:?}");
    }

    #[test]
    fn exactly_one_primary() {
        let none = parse("[[uplink]]\ninterface = \"ens3\"\n").unwrap_err();
        assert!(matches!(none, ConfigError::NoPrimary { .. }));
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
        assert!(matches!(parse("").unwrap_err(), ConfigError::NoUplinks { .. }));
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
            with("priority_range = [100, 102]").unwrap_err(),
            ConfigError::PriorityRangeTooSmall { needed: 4, have: 3, .. }
        ));
        assert!(matches!(with("protocol = 4").unwrap_err(), ConfigError::ReservedProtocol { .. }));
        let top = parse(&format!("{MINIMAL}[metrics]\ntop_offenders = 11\n")).unwrap_err();
        assert!(matches!(top, ConfigError::TooManyTopOffenders { value: 11, .. }));
        let listen =
            parse(&format!("{MINIMAL}[metrics]\nlisten = \"0.0.0.0:9100\"\ntop_offenders = 10\n")).unwrap();
        assert_eq!(listen.metrics.listen.port(), 9100);
        assert!(with("priority_range = [100, 103]").is_ok());
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
