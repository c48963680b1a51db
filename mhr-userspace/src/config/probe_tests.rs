//! Probe targets, quorum and the statistics window in the config.

use std::{path::Path, time::Duration};

use super::*;

const UPLINK: &str = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n";

fn message(text: &str) -> String {
    match Config::parse(text, Path::new("mhr.toml")) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    }
}

#[test]
fn every_probe_method_reads_into_its_target_and_family() {
    let text = format!(
        "{UPLINK}probe = [\"192.0.2.1\", \"tcp:192.0.2.2:443\", \"dns:2001:db8::53\", \"http://192.0.2.4/health\"]\nquorum = 2\n"
    );
    let config = Config::parse(&text, Path::new("mhr.toml")).unwrap();
    let uplink = &config.uplinks[0];
    let methods: Vec<&str> = uplink.probe.iter().map(ProbeTarget::method).collect();
    assert_eq!(methods, ["icmp", "tcp", "dns", "http"]);
    assert_eq!(uplink.probes(crate::model::Family::V4).count(), 3);
    assert_eq!(uplink.probes(crate::model::Family::V6).count(), 1);
    // Quorum 2, but the one IPv6 target can still make a good IPv6 round.
    assert_eq!(uplink.quorum(&config.health, crate::model::Family::V4), 2);
    assert_eq!(uplink.quorum(&config.health, crate::model::Family::V6), 1);
    assert_eq!(config.health.quorum, 1, "default");
    assert_eq!(config.health.window, Duration::from_secs(60), "default");
    assert_eq!(config.health.window_rounds(), 60);
}

#[test]
fn bad_probe_targets_name_the_element_and_what_is_wrong() {
    let with = |probe: &str| message(&format!("{UPLINK}probe = [\"192.0.2.1\", \"{probe}\"]\n"));
    let unknown = with("udp:192.0.2.1:53");
    assert!(unknown.contains("mhr.toml:4:"), "{unknown}");
    assert!(unknown.contains("probe[1] = \"udp:192.0.2.1:53\": unknown probe scheme \"udp\""), "{unknown}");
    assert!(with("tcp:192.0.2.1:0").ends_with("port 0 cannot be probed (ports are 1-65535)"));
    assert!(with("tcp:192.0.2.1").contains("tcp: needs a port"));
    assert!(with("http://gateway.example/").contains("not names"));
    let multicast = with("tcp:224.0.0.1:80");
    assert!(multicast.contains("probe target tcp:224.0.0.1:80 is not a unicast address"), "{multicast}");
}

#[test]
fn quorum_and_window_are_refused_out_of_range_naming_the_key() {
    let uplink_quorum = |quorum: u32| {
        message(&format!("{UPLINK}probe = [\"192.0.2.1\", \"192.0.2.2\"]\nquorum = {quorum}\n"))
    };
    let three = uplink_quorum(3);
    assert!(
        three.contains("uplink `ens3`: quorum must be a whole number from 1 to its 2 probe targets, not 3"),
        "{three}"
    );
    assert!(uplink_quorum(0).contains("not 0"));
    let health = |line: &str| message(&format!("{UPLINK}[health]\n{line}\n"));
    assert!(health("quorum = 9").contains("[health] quorum must be a whole number from 1 to 8, not 9"));
    assert!(health("quorum = 0").contains("not 0"));
    let short = health("interval = \"2s\"\nwindow = \"1s\"");
    assert!(short.contains("[health] window must be from `interval` (2s) to 1h, not 1s"), "{short}");
    assert!(health("window = \"2h\"").contains("not 2h"));
    let ok = format!(
        "{UPLINK}probe = [\"192.0.2.1\", \"192.0.2.2\"]\nquorum = 2\n[health]\ninterval = \"500ms\"\ntimeout = \"500ms\"\nwindow = \"10s\"\n"
    );
    let config = Config::parse(&ok, Path::new("mhr.toml")).unwrap();
    assert_eq!(config.health.window_rounds(), 20);
}

#[test]
fn quality_marks_come_in_pairs_with_low_under_high() {
    let health = |lines: &str| message(&format!("{UPLINK}probe = [\"192.0.2.1\"]\n[health]\n{lines}\n"));
    let inverted = health("latency_high = \"200ms\"\nlatency_low = \"500ms\"");
    assert!(
        inverted.contains("[health] latency_low must be at most latency_high (200ms), not 500ms"),
        "{inverted}"
    );
    assert!(health("latency_high = \"500ms\"").contains("[health] latency_low must go with latency_high"));
    assert!(health("loss_low = 10").contains("[health] loss_high must go with loss_low"));
    assert!(
        health("loss_high = 10\nloss_low = 20")
            .contains("[health] loss_low must be at most loss_high (10), not 20")
    );
    assert!(
        health("loss_high = 120\nloss_low = 10")
            .contains("loss_high must be a whole percentage from 0 to 100, not 120")
    );
    assert!(health("loss_high = -5\nloss_low = 1").contains("loss_high"), "negative: the key is named");
    let text = format!(
        "{UPLINK}[health]\nlatency_high = \"500ms\"\nlatency_low = \"200ms\"\nloss_high = 20\nloss_low = 10\n"
    );
    let config = Config::parse(&text, Path::new("mhr.toml")).unwrap();
    assert_eq!(config.health.latency_high, Some(Duration::from_millis(500)));
    assert_eq!((config.health.loss_high, config.health.loss_low), (Some(20), Some(10)));
    assert_eq!(
        Config::parse(UPLINK, Path::new("mhr.toml")).unwrap().health.latency_high,
        None,
        "off by default"
    );
}

#[test]
fn passive_health_keys_are_checked_and_probe_when_idle_needs_passive() {
    let health = |lines: &str| message(&format!("{UPLINK}probe = [\"192.0.2.1\"]\n[health]\n{lines}\n"));
    let idle = health("probe_when_idle = true");
    assert!(idle.contains("[health] probe_when_idle needs `passive = true`"), "{idle}");
    let percent = health("passive = true\nretransmit_percent = 100");
    assert!(
        percent.contains("retransmit_percent must be a whole percentage from 0 (off) to 99, not 100"),
        "{percent}"
    );
    let short = health("passive = true\nretransmit_window = \"500ms\"");
    assert!(short.contains("[health] retransmit_window must be from 1s to 1h, not 500ms"), "{short}");
    assert!(health("retransmit_window = \"2h\"").contains("not 2h"));
    let text = format!(
        "{UPLINK}[health]\npassive = true\nprobe_when_idle = true\nretransmit_percent = 0\nretransmit_window = \"1s\"\n"
    );
    let config = Config::parse(&text, Path::new("mhr.toml")).unwrap();
    assert!(config.health.probe_when_idle);
    assert_eq!(config.health.retransmit_percent, 0, "0: retransmissions judge nothing");
    let defaults = Config::parse(UPLINK, Path::new("mhr.toml")).unwrap().health;
    assert_eq!(
        (defaults.retransmit_percent, defaults.retransmit_window, defaults.probe_when_idle),
        (10, Duration::from_secs(10), false)
    );
}

#[test]
fn steering_rules_are_refused_before_any_change_naming_the_rule_and_key() {
    let two = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n";
    let with = |rules: &str| message(&format!("{two}{rules}"));
    let unknown = with("[[rule]]\nproto = \"tcp\"\ndport = 443\nuplink = [\"ens9\"]\n");
    assert!(unknown.contains("mhr.toml:9:1: rule #1: uplink names `ens9`, which is not a configured uplink (uplinks: ens3, ens4)"), "{unknown}");
    let port = with("[[rule]]\nproto = \"tcp\"\ndport = 0\nuplink = [\"ens4\"]\n");
    assert!(port.contains("rule #1: dport must be a port from 1 to 65534"), "{port}");
    let everything = with("[[rule]]\nuplink = [\"ens4\"]\n");
    assert!(everything.contains("rule #1: to or another selector is needed"), "{everything}");
    let shadowed = with(
        "[[rule]]\nproto = \"tcp\"\nuplink = [\"ens4\"]\n[[rule]]\nproto = \"tcp\"\ndport = 443\nuplink = [\"ens4\"]\n",
    );
    assert!(shadowed.contains("rule #2: to can never match: rule #1 selects all it does"), "{shadowed}");
    let typo = with("[[rule]]\nprot = \"tcp\"\nuplink = [\"ens4\"]\n");
    assert!(typo.contains("did you mean `proto`?"), "{typo}");
    let single = with("[rule]\nproto = \"tcp\"\n");
    assert!(single.contains("write `[[rule]]`"), "{single}");
    let ok = format!(
        "{two}[[rule]]\nproto = \"tcp\"\ndport = 443\nuplink = [\"ens4\", \"ens3\"]\n[[rule]]\nto = [\"198.18.0.0/15\"]\nuid = \"1000-1999\"\nuplink = [\"ens4\"]\n"
    );
    let config = Config::parse(&ok, Path::new("mhr.toml")).unwrap();
    assert_eq!(config.rules.len(), 2);
    assert_eq!(config.rules[1].selectors().unwrap().uid, Some((1000, 1999)));
}

#[test]
fn probe_interval_defaults_to_the_health_interval_and_is_bounded_by_it_and_an_hour() {
    let parse = |text: &str| Config::parse(text, Path::new("mhr.toml"));
    let config = parse(&format!("{UPLINK}[health]\ninterval = \"2s\"\n")).unwrap();
    assert_eq!(config.uplinks[0].probe_interval, None);
    assert_eq!(config.uplinks[0].probe_interval(&config.health), Duration::from_secs(2), "default");
    for (written, value) in [("2s", 2), ("30s", 30), ("1h", 3600)] {
        let text = format!("{UPLINK}probe_interval = \"{written}\"\n[health]\ninterval = \"2s\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.uplinks[0].probe_interval(&config.health), Duration::from_secs(value));
    }
    // Each bound, just past it, named with the key, the uplink and the range.
    for (written, shown) in [("1999ms", "1s 999ms"), ("3601s", "1h 1s"), ("0s", "0s")] {
        let text = format!("{UPLINK}probe_interval = \"{written}\"\n[health]\ninterval = \"2s\"\n");
        assert_eq!(
            message(&text),
            format!(
                "mhr.toml:4:1: uplink `ens3`: probe_interval must be from `[health] interval` (2s) to 1h, not {shown}"
            )
        );
    }
    let text = format!("{UPLINK}probe_interval = \"often\"\n");
    let bad = message(&text);
    assert!(bad.contains("mhr.toml:4:") && bad.contains("probe_interval: durations look like"), "{bad}");
    // The window of a slower uplink holds fewer of its rounds.
    let health = parse(UPLINK).unwrap().health;
    assert_eq!(health.window_rounds_every(Duration::from_secs(10)), 6);
    assert_eq!(health.window_rounds_every(Duration::from_secs(600)), 1);
}
