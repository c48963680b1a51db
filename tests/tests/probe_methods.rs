//! Probe methods and quorum on the seed lab, with real servers behind the
//! routers: an upstream that drops ICMP keeps a healthy uplink healthy on
//! its TCP, DNS and HTTP probes (a refused TCP connection counts), one dead
//! target among several does not fail it, and it fails over when fewer
//! than its quorum answer; an upstream that answers late turns degraded
//! and hands main's default to the backup until it is fast again.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use common::{
    daemon::{DaemonThread, METRICS_PORT, eventually, mhr_default_v4, sample, wait_default_v4},
    mhr, write_config,
};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    probe::{TcpResponder, http_get},
    require_root,
    seed_lab::{CLIENT, CLIENT6, UPLINKS, routing_section},
    servers::{DnsServer, HttpServer, SlowDnsResponder},
};
use mhr_userspace::daemon::DaemonOptions;

const INTERVAL_MS: u64 = 200;
const DOWN_AFTER: u64 = 3;
const TCP_PORT: u16 = 8443;
/// Nothing listens there: the client's kernel refuses the connection.
const CLOSED_PORT: u16 = 9;
const HTTP_PORT: u16 = 8080;

fn metrics(host: &Netns) -> String {
    http_get(host, METRICS_PORT, "/metrics").expect("metrics served").1
}

fn loss(body: &str, target: &str) -> Option<f64> {
    sample(body, "mhr_probe_loss_ratio", &format!("uplink=\"ens3\",target=\"{target}\""))
}

#[test]
fn an_upstream_dropping_icmp_stays_healthy_on_tcp_dns_and_http_and_fails_over_below_its_quorum() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("probe-methods").unwrap();
    let _tcp = TcpResponder::start(&lab.client, TCP_PORT).unwrap();
    let dns = DnsServer::start(&lab.client, IpAddr::V4(CLIENT), dir.path()).unwrap();
    let http =
        HttpServer::start(&lab.client, SocketAddr::new(IpAddr::V4(CLIENT), HTTP_PORT), dir.path()).unwrap();

    let icmp = CLIENT.to_string();
    let tcp = format!("tcp:{CLIENT}:{TCP_PORT}");
    let refused = format!("tcp:{CLIENT}:{CLOSED_PORT}");
    let dns_target = format!("dns:{CLIENT}");
    let http_target = format!("http://{CLIENT}:{HTTP_PORT}/health");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\nprobe = [\"{icmp}\", \"{tcp}\", \"{refused}\", \"{dns_target}\", \"{http_target}\", \"tcp:[{CLIENT6}]:{TCP_PORT}\"]\nquorum = 3\n\n[[uplink]]\ninterface = \"ens4\"\nprobe = [\"{CLIENT}\", \"{CLIENT6}\"]\n\n[health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{INTERVAL_MS}ms\"\ndown_after = {DOWN_AFTER}\nup_after = 2\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let options =
        DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() };
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(5));

    // ens3's upstream drops ICMP (both families) from now on.
    let ruleset = "table inet mhr_lab_icmp {\n  chain forward {\n    type filter hook forward priority -10; policy accept;\n    meta l4proto { icmp, ipv6-icmp } counter drop\n  }\n}\n";
    let rules = dir.path().join("icmp.nft");
    std::fs::write(&rules, ruleset).unwrap();
    assert!(lab.routers[0].command("nft").arg("-f").arg(&rules).status().unwrap().success());
    // The ICMP target is lost, the others answer, for more than down_after rounds.
    eventually("the ICMP target is seen lost", Duration::from_secs(5), || {
        let body = metrics(&lab.host);
        match loss(&body, &icmp) {
            Some(lost) if lost >= 0.3 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 2 * DOWN_AFTER));
    let body = metrics(&lab.host);
    for target in [&tcp, &refused, &dns_target, &http_target] {
        assert_eq!(loss(&body, target), Some(0.0), "{target} answered every round:\n{body}");
        let answers =
            sample(&body, "mhr_probe_rtt_seconds_count", &format!("uplink=\"ens3\",target=\"{target}\""));
        assert!(answers.is_some_and(|n| n >= 2.0 * DOWN_AFTER as f64), "{target}'s round trips: {answers:?}");
    }
    assert_eq!(sample(&body, "mhr_failovers_total", "family=\"ipv4\""), Some(0.0), "{body}");
    assert_eq!(mhr_default_v4(&lab.host), "ens3", "one dead target among five, quorum 3: still healthy");
    // The probes left through ens3's router (which masquerades to its
    // floating address), never through ens4's.
    let (ens3, ens4) = (UPLINKS[0].floating.to_string(), UPLINKS[1].floating.to_string());
    assert!(dns.log().contains(&format!("query[SOA] . from {ens3}")), "{}", dns.log());
    assert!(!dns.log().contains(&ens4), "{}", dns.log());
    assert!(http.log().contains(&ens3) && !http.log().contains(&ens4), "{}", http.log());
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains(&format!("probe {icmp} NOT ANSWERING")), "{}", status.output);
    assert!(status.output.contains(&format!("probe {http_target} answering, loss 0%")), "{}", status.output);

    // DNS and HTTP fail too: two of five answer, below the quorum of 3.
    let failed = Instant::now();
    dns.stop();
    http.fail_health().unwrap();
    wait_default_v4(&lab.host, "ens4", Duration::from_secs(5));
    let took = failed.elapsed();
    let minimum = Duration::from_millis(INTERVAL_MS * DOWN_AFTER);
    eprintln!("failover on DNS and HTTP probes failing took {took:?} (configured minimum {minimum:?})");
    assert!(took >= minimum.saturating_sub(Duration::from_millis(INTERVAL_MS)), "{took:?}");
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("IPv4 UNHEALTHY: probes failing"), "{}", status.output);
    assert!(status.output.contains(&format!("probe {http_target} NOT ANSWERING")), "{}", status.output);
}

#[test]
fn a_slow_upstream_turns_degraded_gives_main_to_the_backup_and_recovers_under_latency_low() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("probe-quality").unwrap();
    // ens3 probes a DNS responder that answers as late as the test says
    // (no netem here); ens4 pings the client.
    let responder = SlowDnsResponder::start(&lab.client, SocketAddr::new(IpAddr::V4(CLIENT), 5353)).unwrap();
    let target = format!("dns:{CLIENT}:5353");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\nprobe = [\"{target}\"]\n\n[[uplink]]\ninterface = \"ens4\"\nprobe = [\"{CLIENT}\"]\n\n[health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{INTERVAL_MS}ms\"\ndown_after = {DOWN_AFTER}\nup_after = 2\nwindow = \"1s\"\nlatency_high = \"100ms\"\nlatency_low = \"40ms\"\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let options =
        DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() };
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    let default_on = |device| wait_default_v4(&lab.host, device, Duration::from_secs(8));
    default_on("ens3");

    // 150 ms answers: within the probe timeout (answered), over latency_high.
    responder.set_delay(Duration::from_millis(150));
    let slow_at = Instant::now();
    default_on("ens4");
    eprintln!("degraded after {:?} at 150 ms (window 1 s, latency_high 100 ms)", slow_at.elapsed());
    let body = metrics(&lab.host);
    let state = |state: &str| {
        sample(&body, "mhr_uplink_state", &format!("uplink=\"ens3\",family=\"ipv4\",state=\"{state}\""))
    };
    assert_eq!(
        (state("degraded"), state("down"), state("healthy")),
        (Some(1.0), Some(0.0), Some(0.0)),
        "{body}"
    );
    assert_eq!(loss(&body, &target), Some(0.0), "slow, not lost:\n{body}");
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("IPv4 DEGRADED: latency"), "{}", status.output);
    assert!(status.output.contains("over latency_high 100 ms"), "{}", status.output);

    // 60 ms: under latency_high, not under latency_low: still degraded.
    responder.set_delay(Duration::from_millis(60));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mhr_default_v4(&lab.host), "ens4", "60 ms is not under latency_low 40 ms");

    responder.set_delay(Duration::ZERO);
    default_on("ens3");
}
