//! Passive health on the in-memory kernel model, in paused time: an
//! uplink that keeps sending and receives nothing for `rx_silence` fails
//! at once instead of after `down_after` probe rounds, and comes back by
//! probes once its upstream answers again; without `passive` the same
//! silence waits for the probe rounds. TCP retransmitting over the
//! threshold fails an uplink the same way; `probe_when_idle` spares an
//! uplink that carries traffic. Golden transcripts in `tests/scenarios/`.

mod common;

use std::time::Duration;

use common::{Scenario, default_via, wait_until, with_daemon, with_daemon_options};
use mhr_userspace::{daemon::DaemonOptions, model::Family};

const PATIENCE: Duration = Duration::from_secs(60);

/// Silences ens3's upstream under a live stream; returns how long main's
/// IPv4 default took to move to ens4.
async fn silence_under_a_stream(model: &mhr_userspace::southbound::model::KernelModel) -> Duration {
    wait_until(model, PATIENCE, "mhr run installs the default", || {
        default_via(model, Family::V4) == ["ens3"]
    })
    .await;
    model.stream("ens3", true);
    // A healthy stream fails nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(default_via(model, Family::V4), ["ens3"], "a stream that is answered is no silence");
    model.silence("ens3", true);
    let silent_at = tokio::time::Instant::now();
    wait_until(model, PATIENCE, "failover to ens4", || default_via(model, Family::V4) == ["ens4"]).await;
    silent_at.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_under_live_traffic_fails_over_within_rx_silence_and_comes_back_by_probes() {
    let mut s = Scenario::new("passive-silence", "seed-host.txt", "passive.toml");
    let model = s.model.clone();
    with_daemon(s.engine(), async {
        let took = silence_under_a_stream(&model).await;
        s.step("ens3's upstream goes silent under a live stream");
        // rx_silence 500 ms, sampled every 125 ms; probes alone need 3 rounds of 1 s.
        assert!(took >= Duration::from_millis(500), "failed over after {took:?}");
        assert!(took < Duration::from_millis(1000), "failed over after {took:?}, not within rx_silence");

        // The stream follows main's default; ens3 only sends its probes.
        model.stream("ens3", false);
        model.stream("ens4", true);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(default_via(&model, Family::V4), ["ens4"], "nothing shows ens3 is back yet");
        model.silence("ens3", false);
        let back_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "fail-back to ens3", || default_via(&model, Family::V4) == ["ens3"])
            .await;
        s.step("ens3's upstream answers again");
        let took = back_at.elapsed();
        assert!(took >= Duration::from_secs(2), "fail-back after {took:?}: up_after rounds of probes");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn without_passive_the_same_silence_waits_for_the_probe_rounds() {
    let mut s = Scenario::new("passive-off", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    with_daemon(s.engine(), async {
        let took = silence_under_a_stream(&model).await;
        s.step("ens3's upstream goes silent under a live stream, passive off");
        assert!(took >= Duration::from_secs(2), "failed over after {took:?}: by probe rounds only");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn tcp_retransmitting_over_the_threshold_fails_over_within_a_window_and_comes_back_once_it_is_not() {
    let mut s = Scenario::new("passive-retransmit", "seed-host.txt", "passive-retransmit.toml");
    let model = s.model.clone();
    // The guard carries the TCP counters.
    let options = DaemonOptions { guard: true, ..common::daemon_options() };
    with_daemon_options(s.engine(), options, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        assert!(model.guard().tcp_watch, "passive attaches the TCP tracepoints");
        model.stream("ens3", true);
        // 10 % is the mark: at it, nothing fails (over, not at).
        model.tcp_loss("ens3", 10);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(default_via(&model, Family::V4), ["ens3"], "10 % retransmitted is not over 10 %");
        s.step("a stream on ens3 retransmits 10 % of its segments");

        model.tcp_loss("ens3", 30);
        let lossy_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "failover to ens4", || default_via(&model, Family::V4) == ["ens4"])
            .await;
        let took = lossy_at.elapsed();
        s.step("it retransmits 30 %");
        // Judged at the end of a 2 s window: the one under way, or the next.
        assert!(took <= Duration::from_millis(4200), "failed over after {took:?}");

        // Its connections stay on their source's uplink; the loss ends.
        model.tcp_loss("ens3", 0);
        let clean_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "fail-back to ens3", || default_via(&model, Family::V4) == ["ens3"])
            .await;
        let took = clean_at.elapsed();
        s.step("the loss ends");
        // A clean window, then up_after good probe rounds.
        assert!(took >= Duration::from_secs(3), "fail-back after {took:?}");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn probe_when_idle_spares_a_healthy_uplink_that_carries_traffic_and_probes_a_failed_one() {
    let mut s = Scenario::new("passive-idle", "seed-host.txt", "passive-idle.toml");
    let model = s.model.clone();
    with_daemon(s.engine(), async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        model.stream("ens3", true);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (busy, idle) = (model.probes_sent("ens3"), model.probes_sent("ens4"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(model.probes_sent("ens3"), busy, "no probes while ens3 carries traffic");
        assert!(model.probes_sent("ens4") >= idle + 9, "the idle uplink is probed every round");
        s.step("a stream on ens3: only the idle ens4 is probed");

        // Silence under the stream fails it passively, probes or not.
        model.silence("ens3", true);
        wait_until(&model, PATIENCE, "failover to ens4", || default_via(&model, Family::V4) == ["ens4"])
            .await;
        s.step("ens3's upstream goes silent under the stream");
        // Its upstream answers again. A failed uplink is probed, busy or
        // not: its probes bring it back after up_after rounds.
        let probes = model.probes_sent("ens3");
        model.silence("ens3", false);
        wait_until(&model, PATIENCE, "fail-back to ens3", || default_via(&model, Family::V4) == ["ens3"])
            .await;
        assert!(
            model.probes_sent("ens3") >= probes + 3,
            "a failed uplink is probed while it carries traffic"
        );
        s.step("ens3's upstream answers the stream again");

        // Healthy and busy again: spared, its traffic vouching for it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let probes = model.probes_sent("ens3");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(model.probes_sent("ens3"), probes, "a healthy busy uplink is not probed");
        assert_eq!(default_via(&model, Family::V4), ["ens3"], "and stays healthy without probes");

        model.stream("ens3", false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(model.probes_sent("ens3") >= probes + 3, "an idle ens3 is probed again");
        s.step("the stream ends: ens3 is probed again");
    })
    .await;
    s.finish();
}
