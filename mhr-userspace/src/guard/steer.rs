//! Steer mode's view of each uplink: whether packets whose source it owns
//! may be sent to it, and through which gateway. Decided from the plan
//! (link state, health, gateways) and written to the `MHR_STEER` map by
//! owner slot.

use std::net::IpAddr;

use mhr_common::guard::SteerTarget;

use crate::{
    model::{Family, Framing, Gateway, GatewaySource},
    plan::UplinkPlan,
};

/// How a steered packet reaches an uplink's next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerVia {
    /// An L3 uplink: straight onto the device.
    Device,
    /// An Ethernet uplink: to this gateway's MAC address.
    Gateway(IpAddr),
}

/// Per family, where steered packets go; `None` when they cannot be
/// steered there (down, unhealthy, no gateway known), so the guard
/// counts them `steer_failed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerRoute {
    pub ipv4: Option<SteerVia>,
    pub ipv6: Option<SteerVia>,
}

impl std::fmt::Display for SteerRoute {
    /// `IPv4 via 192.0.2.1, IPv6 onto the device`, or `nothing`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (family, via) in [("IPv4", self.ipv4), ("IPv6", self.ipv6)] {
            match via {
                Some(SteerVia::Gateway(gateway)) => parts.push(format!("{family} via {gateway}")),
                Some(SteerVia::Device) => parts.push(format!("{family} onto the device")),
                None => {}
            }
        }
        if parts.is_empty() { f.write_str("nothing") } else { f.write_str(&parts.join(", ")) }
    }
}

impl SteerRoute {
    /// From the uplink's plan: up with carrier, healthy for the family (or
    /// not judged), and with a gateway unless packets start at IP.
    pub fn of(plan: &UplinkPlan) -> Self {
        if !plan.up || !plan.carrier {
            return Self::default();
        }
        let via = |family: Family, gateway: &Option<(Gateway, GatewaySource)>| {
            if plan.verdict(family).is_some_and(|verdict| !verdict.healthy) {
                return None;
            }
            match (plan.framing, gateway) {
                (Framing::Ip, _) => Some(SteerVia::Device),
                (_, Some((Gateway::Via(address), _))) => Some(SteerVia::Gateway(*address)),
                _ => None,
            }
        };
        Self { ipv4: via(Family::V4, &plan.gateway4), ipv6: via(Family::V6, &plan.gateway6) }
    }

    /// The map entry for an uplink at `ifindex`.
    pub fn entry(&self, ifindex: u32, l3: bool) -> SteerTarget {
        let mut entry = SteerTarget { ifindex, l3: u8::from(l3), ..SteerTarget::NONE };
        if let Some(via) = self.ipv4 {
            entry.v4 = 1;
            if let SteerVia::Gateway(IpAddr::V4(gateway)) = via {
                entry.gateway_v4 = gateway.octets();
            }
        }
        if let Some(via) = self.ipv6 {
            entry.v6 = 1;
            if let SteerVia::Gateway(IpAddr::V6(gateway)) = via {
                entry.gateway_v6 = gateway.octets();
            }
        }
        entry
    }
}
