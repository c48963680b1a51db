//! Default values: the paths, ranges and protocol mhr uses unless the
//! config says otherwise, and the `Default` impls serde fills sections from.

use std::{path::PathBuf, time::Duration};

use super::AttachMode;
use super::{Assume, GuardConfig, HealthConfig, MetricsConfig, RoutingConfig, SourceRules};

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

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9847";

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

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            down_after: 3,
            up_after: 5,
            assume: Assume::default(),
            quorum: 1,
            window: Duration::from_secs(60),
            latency_high: None,
            latency_low: None,
            loss_high: None,
            loss_low: None,
            passive: false,
            rx_silence: Duration::from_secs(2),
            retransmit_percent: 10,
            retransmit_window: Duration::from_secs(10),
            probe_when_idle: false,
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { pin_dir: PathBuf::from(DEFAULT_PIN_DIR), attach: AttachMode::Auto }
    }
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
