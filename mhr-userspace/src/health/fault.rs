//! Why an uplink is (or is becoming) unhealthy.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an uplink is (or is becoming) unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    AdminDown,
    NoCarrier,
    NoAddress,
    NoGateway,
    /// The gateway's neighbour entry (ARP/ND) failed.
    GatewayUnreachable,
    ProbesFailing,
    /// First seen, with probes, under `assume = "unhealthy"`: not yet
    /// `up_after` good rounds.
    Unproven,
    /// `[health] passive`: it kept sending and received nothing for
    /// `rx_silence`.
    RxSilent,
    /// `[health] passive`: more than `retransmit_percent` of the TCP
    /// segments it sent over `retransmit_window` were retransmissions.
    Retransmitting,
}

impl Fault {
    /// Faults of the link itself: they need no confirmation.
    pub fn is_immediate(self) -> bool {
        matches!(self, Self::AdminDown | Self::NoCarrier | Self::NoAddress | Self::NoGateway)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AdminDown => "admin_down",
            Self::NoCarrier => "no_carrier",
            Self::NoAddress => "no_address",
            Self::NoGateway => "no_gateway",
            Self::GatewayUnreachable => "gateway_unreachable",
            Self::ProbesFailing => "probes_failing",
            Self::Unproven => "unproven",
            Self::RxSilent => "rx_silent",
            Self::Retransmitting => "retransmitting",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AdminDown => "link administratively down",
            Self::NoCarrier => "no carrier",
            Self::NoAddress => "no address",
            Self::NoGateway => "no gateway known",
            Self::GatewayUnreachable => "gateway unreachable (neighbour entry failed)",
            Self::ProbesFailing => "probes failing",
            Self::Unproven => "not proven yet (waiting for up_after good probe rounds)",
            Self::RxSilent => "sending but receiving nothing (rx_silence)",
            Self::Retransmitting => "TCP retransmitting over retransmit_percent",
        })
    }
}
