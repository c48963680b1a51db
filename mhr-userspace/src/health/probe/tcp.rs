//! TCP connect probes: an accepted connection or a refused one (a reset
//! from the target's host) both prove the path; the round trip is the
//! handshake's.

use std::{net::SocketAddr, time::Duration};

use super::{ProbePlan, socket};

pub(super) async fn connect(
    plan: &ProbePlan,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Duration> {
    let started = tokio::time::Instant::now();
    match socket::connect(plan, to, timeout).await? {
        Ok(_stream) => Ok(started.elapsed()),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => Ok(started.elapsed()),
        Err(err) => Err(err),
    }
}
