//! The routers' side of the seed lab: 1:1 NAT for the floating IP and
//! anti-spoofing (nftables), and reachability between neighbours.

use std::{net::IpAddr, time::Duration};

use super::Uplink;
use crate::{Netns, Result};

pub(super) fn router_suffix(router: &Netns) -> &str {
    router.name().rsplit('-').next().unwrap_or("r")
}

pub(super) fn router_ruleset(uplink: &Uplink) -> String {
    let (address, floating) = (uplink.address, uplink.floating);
    let (subnet, subnet6) = (uplink.subnet(), uplink.subnet6());
    format!(
        r#"table ip mhr_lab_nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" ip daddr {floating} dnat to {address}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr {address} snat to {floating}
    }}
}}
table inet mhr_lab_filter {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "lan" ip saddr != {subnet} counter drop
        iifname "lan" ip6 saddr != {subnet6} counter drop
    }}
}}
"#
    )
}

pub(super) fn nft(netns: &Netns, ruleset: &str) -> Result<()> {
    crate::checked_with_input(netns.command("nft").args(["-f", "-"]), ruleset).map(drop)
}

/// Pings each `(from, to)` pair until it answers (up to 5 tries of 1 s).
pub(super) fn reach_all(pairs: &[(&Netns, IpAddr)]) -> Result<()> {
    for (from, to) in pairs {
        let reachable =
            (0..5).any(|_| crate::probe::ping(from, *to, Duration::from_secs(1)).unwrap_or(false));
        if !reachable {
            return Err(crate::LabError::Parse {
                command: format!("ping {to} from {}", from.name()),
                output: "no answer after 5 tries".into(),
            });
        }
    }
    Ok(())
}
