//! Gateways: where an uplink's default route goes, where mhr learned it,
//! and the ones it remembers across link flaps and restarts.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::Family;

/// A default gateway: an address, or the link itself (point-to-point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gateway {
    Via(IpAddr),
    OnLink,
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Via(address) => write!(f, "{address}"),
            Self::OnLink => f.write_str("on-link (point-to-point)"),
        }
    }
}

/// Who wrote a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKeeper {
    Dhclient,
    Dhcpcd,
    Networkd,
    NetworkManager,
}

impl fmt::Display for LeaseKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dhclient => "dhclient",
            Self::Dhcpcd => "dhcpcd",
            Self::Networkd => "systemd-networkd",
            Self::NetworkManager => "NetworkManager",
        })
    }
}

/// Where a gateway came from, for status and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewaySource {
    Config,
    MainTable,
    OtherTable,
    /// A DHCP client's lease file, when no route names the gateway.
    Lease(LeaseKeeper),
    Owned,
    Moved,
    /// Recorded under state_dir when last seen (the link flapped, the
    /// DHCP client has not renewed yet).
    Remembered,
    PointToPoint,
}

impl fmt::Display for GatewaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Self::Lease(keeper) = self {
            return write!(f, "{keeper}'s lease");
        }
        f.write_str(match self {
            Self::Lease(_) => "a lease",
            Self::Config => "config",
            Self::MainTable => "main table",
            Self::OtherTable => "another table",
            Self::Owned => "mhr's table",
            Self::Moved => "the route an earlier mhr moved out of main",
            Self::Remembered => "remembered",
            Self::PointToPoint => "point-to-point link",
        })
    }
}

/// The last gateway seen per uplink (by name) and family.
pub type RememberedGateways = BTreeMap<String, BTreeMap<Family, RememberedGateway>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedGateway {
    pub gateway: IpAddr,
    /// Where it was learned the last time it was seen.
    pub learned_from: GatewaySource,
}
