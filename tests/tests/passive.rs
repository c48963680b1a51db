//! Passive health on the seed lab: a TCP stream runs through ens3, then
//! ens3's router stops forwarding (link, carrier and ARP stay fine). With
//! `[health] passive`, the stream's unanswered retransmissions fail ens3
//! within `rx_silence`, well before the probe rounds could; once the
//! router forwards again, probes bring ens3 back. The guard's TCP
//! tracepoints count the stream's round trips and retransmissions.

mod common;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{
    daemon::{DaemonThread, METRICS_PORT, mhr_default_v4, sample, wait_default_v4},
    mhr, write_config,
};
use mhr_tests::{
    TempDir,
    probe::http_get,
    require_root,
    seed_lab::{CLIENT, SeedLab, routing_section},
    traffic::{StopOnDrop, stream_until},
};
use mhr_userspace::daemon::DaemonOptions;

const INTERVAL_MS: u64 = 1000;
/// Probes alone need at least 4 s. Passive needs `rx_silence`, twice
/// when the router's unicast ARP exchange with the host (its neighbour
/// entry expiring) lands in the silence and restarts it (seen: 1.3 and
/// 2.3 s in about one run of ten).
const DOWN_AFTER: u64 = 5;
const RX_SILENCE_MS: u64 = 500;

fn config(dir: &TempDir, passive: bool) -> std::path::PathBuf {
    config_with(dir, &format!("passive = {passive}\nrx_silence = \"{RX_SILENCE_MS}ms\"\n"))
}

fn config_with(dir: &TempDir, passive_keys: &str) -> std::path::PathBuf {
    let probe = format!("probe = [\"{CLIENT}\"]\n");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{probe}\n[[uplink]]\ninterface = \"ens4\"\n{probe}\n[health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"500ms\"\ndown_after = {DOWN_AFTER}\nup_after = 3\n{passive_keys}\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

/// Starts the lab, the daemon and a stream through ens3; silences ens3's
/// upstream and returns how long main's default took to reach ens4.
fn failover_under_a_stream(passive: bool, check: impl FnOnce(&SeedLab, &std::path::Path)) -> Duration {
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("passive").unwrap();
    let config = config(&dir, passive);
    // The guard carries the TCP tracepoints.
    let options = DaemonOptions { resync: Duration::from_secs(3600), ..DaemonOptions::default() };
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(10));
    let stop = AtomicBool::new(false);
    let took = std::thread::scope(|scope| {
        scope.spawn(|| stream_until(&lab.host, &lab.client, CLIENT.into(), &stop));
        let _stop = StopOnDrop(&stop);
        // The stream runs, answered: nothing fails.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(mhr_default_v4(&lab.host), "ens3", "an answered stream is no silence");
        lab.silence_upstream(0).unwrap();
        let silent_at = Instant::now();
        wait_default_v4(&lab.host, "ens4", Duration::from_secs(10));
        let took = silent_at.elapsed();
        check(&lab, &config);
        stop.store(true, Ordering::Relaxed);
        took
    });
    lab.restore_upstream(0).unwrap();
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(15));
    took
}

#[test]
fn a_silent_upstream_under_a_tcp_stream_fails_over_within_rx_silence_and_comes_back_by_probes() {
    require_root();
    let took = failover_under_a_stream(true, |lab, config| {
        let status = mhr(&lab.host, config, &["status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status.output).expect("status --json");
        assert_eq!(json["uplinks"][0]["health"][0]["fault"], "rx_silent", "{}", status.output);
        let body = http_get(&lab.host, METRICS_PORT, "/metrics").expect("metrics served").1;
        let silence = sample(&body, "mhr_uplink_rx_silence_seconds", "uplink=\"ens3\"");
        assert!(silence.is_some_and(|s| s >= RX_SILENCE_MS as f64 / 1000.0), "{silence:?}");
        // The stream's segments gave ens3 round trips (a veth: well under
        // 100 ms each) and its unanswered ones retransmissions.
        let ens3 = "uplink=\"ens3\"";
        let samples = sample(&body, "mhr_uplink_tcp_rtt_seconds_count", ens3).unwrap_or_default();
        let total = sample(&body, "mhr_uplink_tcp_rtt_seconds_sum", ens3).unwrap_or_default();
        assert!(samples > 10.0 && total / samples < 0.1, "{samples} samples, {total} s in all\n{body}");
        let fast = sample(&body, "mhr_uplink_tcp_rtt_seconds_bucket", "uplink=\"ens3\",le=\"0.064\"");
        assert!(fast.is_some_and(|f| f > 0.0), "{fast:?}");
        let retransmits = sample(&body, "mhr_uplink_tcp_retransmits_total", ens3);
        assert!(retransmits.is_some_and(|r| r >= 1.0), "{retransmits:?}");
        // The guard counted the stream's segments, its retransmissions among them.
        let sent = sample(&body, "mhr_uplink_tcp_segments_sent_total", ens3).unwrap_or_default();
        assert!(sent > 100.0 && sent > retransmits.unwrap_or_default(), "{sent} segments sent\n{body}");
        assert_eq!(
            sample(&body, "mhr_uplink_tcp_rtt_seconds_count", "uplink=\"ens4\""),
            Some(0.0),
            "no TCP on ens4"
        );
        let healthy = sample(&body, "mhr_uplink_rx_silence_seconds", "uplink=\"ens4\"");
        assert!(
            healthy.is_some_and(|s| s < RX_SILENCE_MS as f64 / 1000.0),
            "ens4 receives what it sends: {healthy:?}"
        );
    });
    let probes_alone = Duration::from_millis(INTERVAL_MS * (DOWN_AFTER - 1));
    eprintln!(
        "passive failover took {took:?} (rx_silence {RX_SILENCE_MS} ms; probes alone need {probes_alone:?}+)"
    );
    assert!(took >= Duration::from_millis(RX_SILENCE_MS), "{took:?}");
    assert!(took < probes_alone, "{took:?}: not before the probe rounds could have");
}

/// A router that drops a fifth of what it forwards upstream: probes
/// mostly get through (five lost in a row are needed to fail), while the
/// stream retransmits far over 5 % of its segments. Silence is judged
/// only after an hour here, so retransmissions alone fail ens3.
#[test]
fn a_lossy_upstream_under_a_tcp_stream_fails_over_by_its_retransmissions() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("passive-loss").unwrap();
    let keys = "passive = true\nrx_silence = \"1h\"\nretransmit_percent = 5\nretransmit_window = \"2s\"\n";
    let config = config_with(&dir, keys);
    let options = DaemonOptions { resync: Duration::from_secs(3600), ..DaemonOptions::default() };
    // Loss per segment, as on a wire: a veth hands GSO packets on whole,
    // and the router's drop would take dozens of segments at once.
    lab.host.ip(["link", "set", "dev", "ens3", "gso_max_segs", "1"]).unwrap();
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(10));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| stream_until(&lab.host, &lab.client, CLIENT.into(), &stop));
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(mhr_default_v4(&lab.host), "ens3", "a clean stream retransmits next to nothing");
        let tcp = |body: &str| {
            let ens3 = "uplink=\"ens3\"";
            let sent = sample(body, "mhr_uplink_tcp_segments_sent_total", ens3).unwrap_or_default();
            (sent, sample(body, "mhr_uplink_tcp_retransmits_total", ens3).unwrap_or_default())
        };
        let before = tcp(&http_get(&lab.host, METRICS_PORT, "/metrics").expect("metrics served").1);
        lab.lossy_upstream(0, 20).unwrap();
        wait_default_v4(&lab.host, "ens4", Duration::from_secs(20));
        let status = mhr(&lab.host, &config, &["status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status.output).expect("status --json");
        assert_eq!(json["uplinks"][0]["health"][0]["fault"], "retransmitting", "{}", status.output);
        let body = http_get(&lab.host, METRICS_PORT, "/metrics").expect("metrics served").1;
        let after = tcp(&body);
        let (sent, retransmits) = (after.0 - before.0, after.1 - before.1);
        eprintln!("while lossy: {retransmits} retransmitted of {sent} segments sent");
        // The daemon judged a window over 5 %; from the loss's start on
        // (its first window partly clean), well over the clean stream's.
        assert!(sent >= 100.0 && retransmits > 0.03 * sent, "{retransmits} of {sent}\n{body}");
        stop.store(true, Ordering::Relaxed);
    });
    lab.restore_upstream(0).unwrap();
    // Nothing holds it failed once the stream is gone: probes bring it back.
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(30));
}
