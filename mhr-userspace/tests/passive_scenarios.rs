//! Passive health on the in-memory kernel model, in paused time: an
//! uplink that keeps sending and receives nothing for `rx_silence` fails
//! at once instead of after `down_after` probe rounds, and comes back by
//! probes once its upstream answers again; without `passive` the same
//! silence waits for the probe rounds. Golden transcripts in
//! `tests/scenarios/`.

mod common;

use std::time::Duration;

use common::{Scenario, default_via, wait_until, with_daemon};
use mhr_userspace::model::Family;

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
