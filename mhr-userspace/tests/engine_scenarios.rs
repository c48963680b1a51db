//! More of the engine on the kernel model: one-shot judgement (probes,
//! or a running daemon's view while it is fresh), down past objects that
//! are gone or refused, records beside the kernel, balance.

mod common;

use common::{Scenario, default_via};
use mhr_userspace::{model::Family, southbound::Change};

/// A daemon's health view (`health.json`) written `age` seconds ago that
/// judges ens3's IPv4 side unhealthy and ens4's healthy.
fn daemon_view(s: &Scenario, age: u64) {
    let written = mhr_userspace::clock::unix_seconds() - age;
    let family = |interface: &str, healthy: bool| {
        serde_json::json!({
            "interface": interface, "family": "v4", "healthy": healthy,
            "fault": if healthy { serde_json::Value::Null } else { "probes_failing".into() },
            "since": written, "good_rounds": 0, "failed_rounds": 3,
            "probe_loss": null, "probe_rtt_seconds": null,
        })
    };
    let view = serde_json::json!({
        "pid": 1, "written": written,
        "uplinks": [family("ens3", false), family("ens4", true)],
        "active": { "v4": ["ens4"] },
    });
    std::fs::write(s.config.routing.state_dir.join("health.json"), view.to_string()).expect("written");
}

#[tokio::test]
async fn a_one_shot_plan_probes_and_keeps_a_silent_primary_out_of_the_default() {
    let mut s = Scenario::new("one-shot-silent-primary", "seed-host.txt", "seed.toml");
    s.model.silence("ens3", true);
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("ens3's upstream is silent; mhr apply");
    assert_eq!(default_via(&s.model, Family::V4), ["ens4"], "one probe round judged ens3");
    assert_eq!(default_via(&s.model, Family::V6), ["ens3"], "IPv6 has no probe target: its link decides");
    s.finish();
}

#[tokio::test]
async fn a_fresh_daemon_view_wins_over_one_shot_probes_and_a_stale_one_does_not() {
    let mut s = Scenario::new("daemon-view", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    daemon_view(&s, 0);
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("a running daemon judges ens3 down (probes answer here); mhr apply");
    assert_eq!(default_via(&s.model, Family::V4), ["ens4"], "apply never undoes the daemon's failover");

    // interval 1 s: a view is fresh for 3 intervals and 3 s more.
    daemon_view(&s, 7);
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("the view is 7 s old (the daemon is gone); mhr apply");
    assert_eq!(default_via(&s.model, Family::V4), ["ens3"], "a stale view is ignored");

    daemon_view(&s, 5);
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("a view 5 s old, still fresh; mhr apply");
    assert_eq!(default_via(&s.model, Family::V4), ["ens4"]);
    s.finish();
}

#[tokio::test]
async fn down_goes_past_objects_already_gone_and_names_a_refused_one() {
    let mut s = Scenario::new("down-gone-and-refused", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply");
    let host = s.model.host();
    let mhr_rules: Vec<_> = host.rules.iter().filter(|r| r.protocol == common::MHR).cloned().collect();
    // Gone between down's look and its delete: the kernel answers ENOENT.
    s.model.refuse(Change::DeleteRule(mhr_rules[0].clone()), libc::ENOENT);
    s.model.refuse(Change::DeleteRule(mhr_rules[1].clone()), libc::EPERM);
    let down = engine.down().await.expect("down runs to the end");
    s.step(
        "one of mhr's rules goes while down runs (ENOENT), the kernel refuses to delete another; mhr down",
    );
    for failure in &down.failed {
        s.say(failure);
    }
    assert_eq!(down.failed.len(), 1, "only the refused one failed: {:?}", down.failed);
    assert!(down.failed[0].contains("Operation not permitted"), "{:?}", down.failed);
    let left: Vec<_> = s.model.host().rules.into_iter().filter(|r| r.protocol == common::MHR).collect();
    assert_eq!(left, mhr_rules[..2].to_vec(), "everything else is gone (the model keeps the ENOENT one)");
    s.finish();
}

#[tokio::test]
async fn apply_remembers_the_gateways_it_learned() {
    let s = Scenario::new("remembered-gateways", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    let remembered = mhr_userspace::state::read_gateways(&s.config.routing.state_dir).expect("read");
    let ens4 = remembered.get("ens4").expect("ens4's gateways are remembered");
    assert_eq!(ens4.get(&Family::V4).map(|g| g.gateway), Some("10.0.4.1".parse().unwrap()));
    assert_eq!(ens4.get(&Family::V6).map(|g| g.gateway), Some("2001:db8:4::1".parse().unwrap()));
}

#[tokio::test]
async fn balance_spreads_host_traffic_by_weight_and_hashes_on_the_destination() {
    let mut s = Scenario::new("balance", "seed-host.txt", "balance.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply under policy = \"balance\"");
    assert_eq!(default_via(&s.model, Family::V4), ["ens3", "ens4"]);
    assert_eq!(
        s.model.multipath_hash(),
        Some(mhr_userspace::config::BalanceHash::Destination),
        "fib_multipath_hash_policy is set to hash on the destination"
    );
    s.finish();

    let failover = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let engine = failover.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    assert_eq!(failover.model.multipath_hash(), None, "failover leaves the host's hash policy alone");
}

#[tokio::test(start_paused = true)]
async fn the_daemon_routes_the_uplinks_it_has_while_one_is_missing() {
    let mut s = Scenario::new("daemon-missing-uplink", "seed-host.txt", "missing-uplink.toml");
    let model = s.model.clone();
    let engine = s.engine();
    common::with_daemon(engine, async {
        common::wait_until(&model, std::time::Duration::from_secs(30), "ens3 and ens4 are routed", || {
            default_via(&model, Family::V4) == ["ens3"]
                && model.host().rules.iter().any(|r| r.table == 7101 && r.protocol == common::MHR)
        })
        .await;
        s.step("mhr run with ens5 missing");
    })
    .await;
    s.finish();
}

#[tokio::test]
async fn the_ipv6_route_cache_is_flushed_after_changes_only() {
    let s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    assert_eq!(s.model.ipv6_flushes(), 1, "after apply changed routes");
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    assert_eq!(s.model.ipv6_flushes(), 1, "an apply that changes nothing flushes nothing");
    engine.down().await.expect("down");
    assert_eq!(s.model.ipv6_flushes(), 2, "after down removed routes");
    engine.down().await.expect("down");
    assert_eq!(s.model.ipv6_flushes(), 2, "a down with nothing to remove flushes nothing");
}

#[tokio::test]
async fn records_that_cannot_be_written_never_hold_routing_back_and_say_where() {
    let mut s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let planned = s.engine().plan().await.expect("plans");
    // A directory that cannot exist: its parent is a file.
    let blocked = s.config.routing.state_dir.join("not-a-dir");
    std::fs::write(&blocked, "").expect("a file");
    s.config.routing.rt_tables_dir = blocked.join("rt_tables.d");
    let engine = s.engine();
    let refused = engine.preflight().expect_err("preflight finds the directory unwritable");
    assert!(
        mhr_userspace::error_chain(&refused).contains("not-a-dir"),
        "names it: {}",
        mhr_userspace::error_chain(&refused)
    );
    let applied = engine.apply(&planned).await.expect("routing goes in regardless");
    assert_eq!(default_via(&s.model, Family::V4), ["ens3"]);
    let reason = applied.unrecorded.expect("the record that failed is reported");
    assert!(reason.contains("not-a-dir/rt_tables.d"), "says where, with the cause: {reason}");
}

#[tokio::test]
async fn two_refused_uplinks_are_each_left_as_they_were_with_nothing_of_theirs_half_installed() {
    let s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    let mut planned = engine.plan().await.expect("plans");
    let from_rule = |table: u32, family: Family| {
        planned
            .actions
            .iter()
            .find_map(|action| match action {
                mhr_userspace::plan::Action::AddRule { rule }
                    if rule.table == table && rule.family == family && rule.source.is_some() =>
                {
                    Some(rule.clone())
                }
                _ => None,
            })
            .expect("a from rule")
    };
    // Different families: the first refusal is of one uplink, the other's
    // changes in that round stay, and it is refused in the next.
    s.model.refuse(Change::AddRule(from_rule(7101, Family::V4)), libc::EPERM);
    s.model.refuse(Change::AddRule(from_rule(7100, Family::V6)), libc::EPERM);
    engine.apply_isolating(&mut planned).await.expect("applies what it can");
    let host = s.model.host();
    let theirs: Vec<String> = host
        .routes
        .iter()
        .filter(|r| [7100, 7101].contains(&r.table))
        .map(|r| format!("{r:?}"))
        .chain(host.rules.iter().filter(|r| [7100, 7101].contains(&r.table)).map(|r| format!("{r:?}")))
        .collect();
    assert!(theirs.is_empty(), "both uplinks as they were before (nothing): {theirs:#?}");
    let blocked: Vec<&str> = planned
        .desired
        .uplinks
        .iter()
        .filter(|u| u.blocked.is_some())
        .map(|u| u.interface.as_str())
        .collect();
    assert_eq!(blocked, ["ens3", "ens4"]);
}
