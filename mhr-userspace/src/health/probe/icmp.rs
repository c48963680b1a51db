//! ICMP echo probes. The socket is an unprivileged ICMP socket where
//! `net.ipv4.ping_group_range` allows it (systemd's default), else a raw
//! one (CAP_NET_RAW); one per uplink and source, kept across rounds.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use surge_ping::{Client, Config as PingConfig, ICMP, PingIdentifier, PingSequence};

use super::ProbePlan;
use crate::model::Family;

const PAYLOAD: &[u8] = b"mhr health probe";

/// A socket bound to the plan's uplink and source.
pub(super) fn client(plan: &ProbePlan) -> std::io::Result<Client> {
    let kind = match plan.family {
        Family::V4 => ICMP::V4,
        Family::V6 => ICMP::V6,
    };
    let config = PingConfig::builder()
        .kind(kind)
        .interface(&plan.interface)
        .bind(SocketAddr::new(plan.source, 0))
        .build();
    Client::new(&config)
}

/// One echo; the round trip when the reply came in time.
pub(super) async fn echo(
    client: &Client,
    target: IpAddr,
    identifier: u16,
    sequence: u16,
    timeout: Duration,
) -> std::io::Result<Duration> {
    let mut pinger = client.pinger(target, PingIdentifier(identifier)).await;
    pinger.timeout(timeout);
    pinger.ping(PingSequence(sequence), PAYLOAD).await.map(|(_, rtt)| rtt).map_err(std::io::Error::other)
}
