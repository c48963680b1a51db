//! `failback = "reset"` on the in-memory kernel model, in paused time:
//! when main's default returns to the primary, the outgoing connections
//! the failover put on the backup are closed, and nothing else is (not a
//! connection that was on the backup before, not one that came in on a
//! listening port, not one on the primary). With the default, `keep`,
//! nothing is closed. Golden transcripts in `tests/scenarios/`.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Scenario, default_via, wait_until, with_daemon};
use mhr_userspace::model::{Connection, Family};

const PATIENCE: Duration = Duration::from_secs(30);

fn address(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Fails ens3 over to ens4 and back, opening connections on the way; the
/// connections left at the end.
async fn fail_over_and_back(s: &mut Scenario) -> Vec<Connection> {
    let model = s.model.clone();
    model.listen(22);
    // On the backup before any failover (an application bound to it).
    model.connect(address("10.0.4.10:40000"), address("192.0.2.9:443"));
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");
        model.silence("ens3", true);
        wait_until(&model, PATIENCE, "fails over", || default_via(&model, Family::V4) == ["ens4"]).await;
        s.step("ens3's upstream goes silent");
        // While failed over: an outgoing connection by the backup, one that
        // came in on ssh, one on the primary's address.
        model.connect(address("10.0.4.10:40001"), address("203.0.113.5:443"));
        model.connect(address("10.0.4.10:22"), address("198.51.100.7:6000"));
        model.connect(address("10.0.3.10:40002"), address("203.0.113.6:80"));
        model.silence("ens3", false);
        wait_until(&model, PATIENCE, "fails back", || default_via(&model, Family::V4) == ["ens3"]).await;
        s.step("ens3's upstream answers again");
    })
    .await;
    model.open_connections()
}

#[tokio::test(start_paused = true)]
async fn reset_closes_only_the_outgoing_connections_the_failover_put_on_the_backup() {
    let mut s = Scenario::new("failback-reset", "seed-host.txt", "failback.toml");
    let left = fail_over_and_back(&mut s).await;
    let closed = Connection { local: address("10.0.4.10:40001"), remote: address("203.0.113.5:443") };
    assert!(!left.contains(&closed), "the failover's connection is closed: {left:?}");
    assert_eq!(left.len(), 3, "the others stay: {left:?}");
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn keep_closes_nothing() {
    let mut s = Scenario::new("failback-keep", "seed-host.txt", "seed.toml");
    let left = fail_over_and_back(&mut s).await;
    assert_eq!(left.len(), 4, "failback = \"keep\" (the default): {left:?}");
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn reset_leaves_a_connection_a_steering_rule_keeps_on_the_backup() {
    let mut s = Scenario::new("failback-steer", "seed-host.txt", "failback-steer.toml");
    let left = fail_over_and_back(&mut s).await;
    assert_eq!(left.len(), 4, "TCP 443 goes by ens4 whatever the default: not closed: {left:?}");
    s.finish();
}
