//! The config file's shape: the serde structs and enums of every section,
//! and the accessors on them.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    path::PathBuf,
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

use super::target::ProbeTarget;

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

/// What the source guard does with packets whose source is not the uplink's.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// Count and flag; every packet passes.
    #[default]
    Monitor,
    /// Drop `spoofed` (and `asymmetric` with `enforce_asymmetric`).
    Enforce,
    /// Drop `spoofed`; send `asymmetric` packets out of the uplink that
    /// owns their source (`steered`), or, when that cannot be done, count
    /// them `steer_failed` and pass them (drop with `enforce_asymmetric`).
    Steer,
}

impl std::fmt::Display for GuardMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Monitor => "monitor",
            Self::Enforce => "enforce",
            Self::Steer => "steer",
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
    /// A default over every healthy uplink, by `weight` (a resilient
    /// nexthop group); a flow stays on one uplink (`balance_hash`).
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

/// What `policy = "balance"` hashes a packet on to pick its uplink.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BalanceHash {
    /// The destination address alone: every connection to one destination
    /// leaves by one uplink, with one source address (sites that tie a
    /// session to the client's address keep working).
    #[default]
    Destination,
    /// Addresses, protocol and ports: connections to one destination
    /// spread over the uplinks.
    Flow,
}

/// What happens to connections a failover put on a backup when the
/// primary is healthy again.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Failback {
    /// They stay on the backup until they end.
    #[default]
    Keep,
    /// They are closed (the kernel resets them), so applications
    /// reconnect through the primary.
    Reset,
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
    /// Probe targets that must answer for a good round (per uplink:
    /// `quorum`); capped by the targets an uplink has in a family.
    pub quorum: u32,
    /// The period each probe target's loss, average round trip and jitter
    /// are computed over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// An uplink whose average probe round trip over `window` passes this
    /// turns degraded; it is healthy again only under `latency_low`.
    #[serde(with = "humantime_serde::option")]
    pub latency_high: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub latency_low: Option<Duration>,
    /// The same for probe loss over `window`, in whole percent.
    pub loss_high: Option<u32>,
    pub loss_low: Option<u32>,
    /// Judge uplinks from live traffic too: one that keeps sending and
    /// receives nothing for `rx_silence` is failed at once, without waiting
    /// for probe rounds.
    pub passive: bool,
    #[serde(with = "humantime_serde")]
    pub rx_silence: Duration,
    /// With `passive`: an uplink whose TCP connections retransmit more than
    /// this percentage of the segments they send over `retransmit_window`
    /// is failed at once (0: retransmissions judge nothing).
    pub retransmit_percent: u32,
    #[serde(with = "humantime_serde")]
    pub retransmit_window: Duration,
    /// With `passive`: probe an uplink only while it receives no traffic
    /// (what it receives vouches for it), to spare metered links.
    pub probe_when_idle: bool,
}

impl HealthConfig {
    /// How many rounds `window` holds (at least one).
    pub fn window_rounds(&self) -> usize {
        self.window_rounds_every(self.interval)
    }

    /// How many probe rounds `window` holds for an uplink probed every
    /// `interval` (its `probe_interval`; at least one).
    pub fn window_rounds_every(&self, interval: Duration) -> usize {
        let interval = interval.as_millis().max(1);
        (self.window.as_millis().div_ceil(interval)).clamp(1, MAX_WINDOW_ROUNDS as u128) as usize
    }
}

/// Bounds each target's remembered rounds (36,000 = 1 h at 100 ms).
const MAX_WINDOW_ROUNDS: usize = 36_000;

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
    /// Targets probed from this uplink's own address, out of this uplink,
    /// every health interval (at most 8): an address (ICMP echo),
    /// `tcp:ADDRESS:PORT`, `dns:ADDRESS` or `http://ADDRESS/PATH`.
    #[serde(default)]
    pub probe: Vec<ProbeTarget>,
    /// Targets that must answer for a good round (default: `[health] quorum`).
    pub quorum: Option<u32>,
    /// How often this uplink's probes are sent (default and minimum:
    /// `[health] interval`; at most 1h): a metered backup probed less
    /// often. Its judge counts only the rounds it was probed in.
    #[serde(default, with = "humantime_serde::option")]
    pub probe_interval: Option<Duration>,
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

    /// How often this uplink's probes are sent: its `probe_interval`, never
    /// less than `[health] interval` (a reload keeps the running interval).
    pub fn probe_interval(&self, health: &HealthConfig) -> Duration {
        self.probe_interval.unwrap_or(health.interval).max(health.interval)
    }

    pub fn probes(&self, family: crate::model::Family) -> impl Iterator<Item = &ProbeTarget> + '_ {
        self.probe.iter().filter(move |target| target.family() == family)
    }

    /// How many of its targets in `family` must answer for a good round:
    /// the uplink's (or `[health]`'s) quorum, at most the targets there are
    /// in that family (a global quorum of 2 still lets an uplink with one
    /// IPv6 target be judged in IPv6).
    pub fn quorum(&self, health: &HealthConfig, family: crate::model::Family) -> usize {
        let wanted = self.quorum.unwrap_or(health.quorum).max(1) as usize;
        wanted.min(self.probes(family).count().max(1))
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
    pub balance_hash: BalanceHash,
    pub failback: Failback,
    pub uplinks: Vec<UplinkConfig>,
    /// Steering rules (`[[rule]]`), in order.
    pub rules: Vec<super::SteeringRule>,
    /// Hooks (`[[hook]]`), in order.
    pub hooks: Vec<super::HookConfig>,
    pub health: HealthConfig,
    pub routing: RoutingConfig,
    pub guard: GuardConfig,
    pub metrics: MetricsConfig,
    /// Things that parse but are likely not meant, `path:line:column: …`
    /// each (a top-level key written after an `[[uplink]]` header lands in
    /// that uplink). [`Config::load`] logs them.
    pub warnings: Vec<String>,
}

/// How the guard attaches (`[guard] attach`); `Auto` tries TCX and falls
/// back to clsact when the kernel does not support TCX links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    #[default]
    Auto,
    Tcx,
    Clsact,
}
