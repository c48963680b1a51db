//! `mhr drain` on the in-memory kernel model, in paused time: a drained
//! primary gives main's default (failover and balance) to the others while
//! its table and `from` rules stay; undrained, it takes it back; a drain is
//! kept across a daemon restart; a drained uplink is still used when it is
//! the only healthy one. Golden transcripts in `tests/scenarios/`.

mod common;

use std::time::Duration;

use common::{Scenario, default_via, metric, wait_until, with_daemon};
use mhr_userspace::model::Family;

const PATIENCE: Duration = Duration::from_secs(30);

fn now() -> u64 {
    mhr_userspace::clock::unix_seconds()
}

#[tokio::test(start_paused = true)]
async fn a_drained_primary_hands_main_to_the_backup_keeps_its_rules_and_comes_back() {
    let mut s = Scenario::new("drain-primary", "seed-host.txt", "seed.toml");
    let endpoint = s.serve_on_known_port();
    let model = s.model.clone();
    let state_dir = s.config.routing.state_dir.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");

        mhr_userspace::drain::drain(&state_dir, "ens3", now(), None).unwrap();
        let drained_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "drained", || {
            default_via(&model, Family::V4) == ["ens4"] && default_via(&model, Family::V6) == ["ens4"]
        })
        .await;
        assert!(
            drained_at.elapsed() <= Duration::from_secs(2),
            "within a health round: {:?}",
            drained_at.elapsed()
        );
        s.step("mhr drain ens3");
        let drained = |uplink: &str| {
            format!("mhr_uplink_state{{uplink=\"{uplink}\",family=\"ipv4\",state=\"drained\"}}")
        };
        let states = (metric(endpoint, &drained("ens3")).await, metric(endpoint, &drained("ens4")).await);
        assert_eq!(states, (Some(1.0), Some(0.0)), "the state metric says which one is drained");
        let rules = model.render();
        assert!(
            rules.contains("ip -4 rule add from 10.0.3.0/24 lookup 7100"),
            "its from rule stays:\n{rules}"
        );
        assert!(
            rules.contains("ip -4 route add default via 10.0.3.1 dev ens3 proto 210 table 7100"),
            "{rules}"
        );

        // Every other uplink down: the drained one is the way out left.
        model.set_link("ens4", false, false);
        wait_until(&model, PATIENCE, "the drained uplink as last resort", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("ens4 goes down: the drained ens3 is all that is left");
        model.set_link("ens4", true, true);
        wait_until(&model, PATIENCE, "off the drained one again", || {
            default_via(&model, Family::V4) == ["ens4"]
        })
        .await;
        s.step("ens4 comes back");
    })
    .await;

    // A new daemon (a restart) keeps the drain.
    // On the same port: the first daemon's endpoint stopped serving with it
    // (at the runtime's next turn).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(std::net::TcpListener::bind(endpoint).is_ok(), "the stopped daemon's endpoint is gone");
    let engine = s.engine();
    with_daemon(engine, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(default_via(&model, Family::V4), ["ens4"], "the drain survives a restart");
        s.step("mhr run restarts");
        assert!(mhr_userspace::drain::undrain(&state_dir, "ens3", now()).unwrap());
        wait_until(&model, PATIENCE, "undrained", || default_via(&model, Family::V4) == ["ens3"]).await;
        s.step("mhr undrain ens3");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn under_balance_a_drained_uplink_takes_no_flows() {
    let mut s = Scenario::new("drain-balance", "seed-host.txt", "balance.toml");
    let model = s.model.clone();
    let state_dir = s.config.routing.state_dir.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "both carry main", || default_via(&model, Family::V4).len() == 2).await;
        s.step("mhr run starts");
        mhr_userspace::drain::drain(&state_dir, "ens4", now(), Some(Duration::from_secs(3600))).unwrap();
        wait_until(&model, PATIENCE, "ens4 out of the multipath", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr drain ens4 --for 1h");
    })
    .await;
    s.finish();
}
