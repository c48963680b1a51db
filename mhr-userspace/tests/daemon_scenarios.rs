//! The daemon's decisions on the in-memory kernel model, in paused time:
//! failover on a silent upstream and on a link going down, fail-back after
//! the hysteresis, and drift put back. Golden transcripts in
//! `tests/scenarios/`.

mod common;

use std::time::Duration;

use common::{Scenario, default_via, wait_until, with_daemon};
use mhr_userspace::{model::Family, southbound::Change};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_fails_over_after_down_after_rounds_and_back_after_up_after() {
    let mut s = Scenario::new("daemon-silent-upstream", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");

        model.silence("ens3", true);
        let silent_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "fails over", || default_via(&model, Family::V4) == ["ens4"]).await;
        let took = silent_at.elapsed();
        s.step("ens3's upstream goes silent");
        // down_after = 3 rounds of 1 s: not before the third failed round.
        assert!(took >= Duration::from_secs(2), "failed over after {took:?}, before down_after rounds");
        assert!(took <= Duration::from_secs(5), "failed over after {took:?}");
        // IPv6 has no probe target: judged by its link, it stays.
        assert_eq!(default_via(&model, Family::V6), ["ens3"]);

        model.silence("ens3", false);
        wait_until(&model, PATIENCE, "fails back", || default_via(&model, Family::V4) == ["ens3"]).await;
        s.step("ens3's upstream answers again");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn a_primary_link_going_down_fails_over_at_once_and_comes_back_with_its_table() {
    let mut s = Scenario::new("daemon-link-down", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");
        let installed = common::owned(&model);

        model.set_link("ens3", false, false);
        let down_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "fails over", || {
            default_via(&model, Family::V4) == ["ens4"] && default_via(&model, Family::V6) == ["ens4"]
        })
        .await;
        s.step("ens3 goes down (the kernel takes its routes)");
        assert!(down_at.elapsed() < Duration::from_secs(1), "a link fault needs no probe rounds");

        model.set_link("ens3", true, true);
        wait_until(&model, PATIENCE, "fails back", || default_via(&model, Family::V4) == ["ens3"]).await;
        // The DHCP client's default in main went with the link (nothing
        // here re-adds it); mhr's objects are all back.
        wait_until(&model, PATIENCE, "all back", || common::owned(&model) == installed).await;
        s.step("ens3 comes back up");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn a_rule_another_writer_deletes_is_put_back_and_their_port_does_not_matter() {
    let mut s = Scenario::new("daemon-drift", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");
        let installed = model.render();
        let rule = model
            .host()
            .rules
            .into_iter()
            .find(|r| r.protocol == common::MHR && r.source.is_some())
            .expect("an mhr rule");
        model.foreign_change(&Change::DeleteRule(rule.clone()), 4242).expect("deleted");
        wait_until(&model, PATIENCE, "put back", || model.host().rules.contains(&rule)).await;
        s.step("another writer (port 4242) deletes one of mhr's rules");
        assert_eq!(model.render(), installed, "exactly what was there is back");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn a_change_the_kernel_refuses_for_one_uplink_leaves_that_uplink_alone_and_routes_the_others() {
    let mut s = Scenario::new("daemon-refused-uplink", "seed-host.txt", "seed.toml");
    let endpoint = s.serve_on_known_port();
    let model = s.model.clone();
    let ens4_rule = mhr_userspace::model::Rule {
        family: Family::V4,
        priority: 7103,
        table: 7101,
        source: Some("10.0.4.0/24".parse().unwrap()),
        destination: None,
        protocol: common::MHR,
        suppress_prefixlength: None,
        selectors: Default::default(),
        other_selectors: false,
    };
    model.refuse(Change::AddRule(ens4_rule.clone()), libc::EPERM);
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "ens3 and the default are routed", || {
            default_via(&model, Family::V4) == ["ens3"]
                && model.host().rules.iter().any(|r| r.table == 7100 && r.protocol == common::MHR)
        })
        .await;
        let changes = s.step("mhr run starts; the kernel refuses ens4's IPv4 rule (EPERM)");
        // Only ens4's changes are undone: nothing of ens3 or of main's
        // default is deleted on the way (no churn for the working uplink).
        let deleted: Vec<&String> = changes.iter().filter(|c| c.contains(" del ")).collect();
        assert!(!deleted.is_empty(), "ens4's changes are undone: {changes:#?}");
        assert!(
            deleted.iter().all(|c| c.contains("ens4") || c.contains("7101") || c.contains("2001:db8:4::")),
            "only ens4's objects are deleted: {deleted:#?}"
        );
        let host = model.host();
        assert!(
            !host.rules.iter().any(|r| r.table == 7101) && !host.routes.iter().any(|r| r.table == 7101),
            "ens4 is left as it was: nothing of its table half-installed"
        );
        let blocked = |uplink: &str| format!("mhr_uplink_blocked{{uplink=\"{uplink}\"}}");
        let metric = |series: String| async move { common::metric(endpoint, &series).await };
        assert_eq!((metric(blocked("ens3")).await, metric(blocked("ens4")).await), (Some(0.0), Some(1.0)));
        // Where main's default is, per uplink; no failover counted for a start.
        let active = |uplink: &str| format!("mhr_uplink_active{{uplink=\"{uplink}\",family=\"ipv4\"}}");
        assert_eq!((metric(active("ens3")).await, metric(active("ens4")).await), (Some(1.0), Some(0.0)));
        let failovers = "mhr_failovers_total{family=\"ipv4\"}".to_owned();
        assert_eq!(metric(failovers.clone()).await.unwrap_or(0.0), 0.0, "a start is no failover");

        model.clear_refusals();
        // The next notification (here: an address appearing) retries it.
        model.add_address("ens4", "10.0.4.11/24".parse().unwrap());
        wait_until(&model, PATIENCE, "ens4 is routed once the kernel takes it", || {
            model.host().rules.contains(&ens4_rule)
        })
        .await;
        s.step("the kernel takes it again; an address appears on ens4");
        assert_eq!(metric(blocked("ens4")).await, Some(0.0), "ens4 is no longer blocked");
        assert_eq!(metric(failovers).await.unwrap_or(0.0), 0.0, "nor is a reconcile");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn the_guard_follows_the_uplinks_learns_a_new_address_and_is_attached_again_where_someone_removed_it() {
    let mut s = Scenario::new("daemon-guard", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let engine = s.engine();
    let options = mhr_userspace::daemon::DaemonOptions { guard: true, ..common::daemon_options() };
    let guard_on = |interface: &str| model.guard().attached.contains(interface);
    common::with_daemon_options(engine, options, async {
        wait_until(&model, PATIENCE, "the guard runs on both uplinks", || {
            guard_on("ens3") && guard_on("ens4")
        })
        .await;
        s.step("mhr run starts with the guard");
        let guard = model.guard();
        assert_eq!(guard.loads, 1);
        let ens4 = guard.uplinks.iter().find(|u| u.interface == "ens4").expect("ens4 is guarded");
        assert!(ens4.addresses.contains(&"10.0.4.10".parse().unwrap()), "{ens4:?}");

        model.add_address("ens4", "10.0.4.11/24".parse().unwrap());
        wait_until(&model, PATIENCE, "the guard learns the new address", || {
            model.guard().uplinks.iter().any(|u| u.addresses.contains(&"10.0.4.11".parse().unwrap()))
        })
        .await;

        model.detach_guard("ens3");
        wait_until(&model, PATIENCE, "attached again", || guard_on("ens3")).await;
        s.step("someone detaches the guard from ens3");
        assert_eq!(model.guard().loads, 1, "repaired in place, not reloaded");
    })
    .await;
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn a_failed_gateway_neighbour_entry_fails_the_uplink_over_rounds_and_its_recovery_brings_it_back() {
    let mut s = Scenario::new("daemon-gateway-neighbour", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let gateway: std::net::IpAddr = "10.0.3.1".parse().unwrap();
    with_daemon(s.engine(), async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        // Probes still answer here: only the neighbour entry says the
        // gateway is gone.
        model.fail_neighbour("ens3", gateway, true);
        let failed_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "fails over", || default_via(&model, Family::V4) == ["ens4"]).await;
        assert!(failed_at.elapsed() >= Duration::from_secs(2), "down_after rounds, not at once");
        s.step("ens3's gateway neighbour entry fails");
        model.fail_neighbour("ens3", gateway, false);
        wait_until(&model, PATIENCE, "fails back", || default_via(&model, Family::V4) == ["ens3"]).await;
        s.step("the entry recovers");
    })
    .await;
    s.finish();
}
