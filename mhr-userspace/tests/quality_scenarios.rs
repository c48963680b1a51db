//! Link quality on the in-memory kernel model, in paused time: an uplink
//! over `latency_high` or `loss_high` turns degraded and gives main's
//! default to a healthy one; it is healthy again only under the low marks;
//! with every uplink degraded, main's default stays on one. Golden
//! transcripts in `tests/scenarios/`.

mod common;

use std::time::Duration;

use common::{Scenario, default_via, wait_until, with_daemon};
use mhr_userspace::model::Family;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_slow_primary_turns_degraded_and_comes_back_only_under_latency_low() {
    let mut s = Scenario::new("quality-latency", "seed-host.txt", "quality.toml");
    let model = s.model.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");

        model.set_rtt("ens3", Duration::from_millis(900));
        let slow_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "ens3 degraded", || default_via(&model, Family::V4) == ["ens4"]).await;
        let took = slow_at.elapsed();
        s.step("ens3's round trips rise to 900 ms (latency_high 500 ms)");
        // The 5 s window's average passes 500 ms at the third slow round.
        assert!(took >= Duration::from_secs(2), "degraded after {took:?}");
        assert!(took <= Duration::from_secs(5), "degraded after {took:?}");

        // 300 ms: under latency_high, not under latency_low: still degraded.
        model.set_rtt("ens3", Duration::from_millis(300));
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(default_via(&model, Family::V4), ["ens4"], "300 ms is not under latency_low 200 ms");
        s.step("ens3 at 300 ms for 15 s");

        model.set_rtt("ens3", Duration::from_millis(50));
        let good_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "ens3 healthy again", || default_via(&model, Family::V4) == ["ens3"])
            .await;
        s.step("ens3 at 50 ms");
        // The window's average falls under 200 ms once most of it is fast.
        assert!(good_at.elapsed() >= Duration::from_secs(2), "recovered after {:?}", good_at.elapsed());
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn with_every_uplink_degraded_main_keeps_a_default_and_loss_degrades_too() {
    let mut s = Scenario::new("quality-all-degraded", "seed-host.txt", "quality.toml");
    let model = s.model.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");

        // One of ens4's two targets dies: 50 % loss, but quorum 1 keeps it up.
        model.silence_target("192.0.2.2".parse().unwrap(), true);
        model.set_rtt("ens3", Duration::from_millis(900));
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Both degraded (ens3 by latency, both by loss): the primary keeps it.
        assert_eq!(default_via(&model, Family::V4), ["ens3"], "every uplink degraded: the first in order");
        s.step("ens3 slow, and target 192.0.2.2 dead for both");

        model.silence_target("192.0.2.2".parse().unwrap(), false);
        wait_until(&model, PATIENCE, "ens4 takes over, healthy again", || {
            default_via(&model, Family::V4) == ["ens4"]
        })
        .await;
        s.step("192.0.2.2 answers again");
    })
    .await;
    s.finish();
}
