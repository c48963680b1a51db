//! Scenario tests without root: apply, plan, down, check, confirm's
//! restore and status on the in-memory kernel model, each with a golden
//! transcript in `tests/scenarios/`. The namespace tests (crate
//! `mhr-tests`) show what only the real kernel can.

mod common;

use common::{Scenario, default_via};
use mhr_userspace::{
    apply::{ActionError, ApplyError},
    engine::EngineError,
    model::Family,
    southbound::{Change, KernelError, Lookup, Southbound as _},
};

#[tokio::test]
async fn apply_installs_the_seed_procedure_planning_again_changes_nothing_and_down_restores_the_host() {
    let mut s = Scenario::new("seed-apply-down", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    let applied = engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply");
    assert!(applied.changed > 0 && applied.unrecorded.is_none(), "{applied:?}");
    assert_eq!(default_via(&s.model, Family::V4), ["ens3"], "the primary carries host traffic");
    assert_eq!(default_via(&s.model, Family::V6), ["ens3"]);

    // Replies from each uplink's address leave by that uplink, whatever main says.
    for (source, interface) in [("10.0.3.10", 2), ("10.0.4.10", 3), ("2001:db8:4::10", 3)] {
        let destination = if source.contains(':') { "2001:db8:ffff::1" } else { "203.0.113.1" };
        let route = s
            .model
            .lookup(Lookup {
                destination: destination.parse().unwrap(),
                source: Some(source.parse().unwrap()),
                iif: None,
                flow: Default::default(),
            })
            .await
            .expect("a route");
        assert_eq!(route.interface, Some(interface), "from {source}");
    }

    let again = engine.plan().await.expect("plans");
    assert!(again.actions.is_empty(), "planning again changes nothing: {:?}", again.actions);

    let down = engine.down().await.expect("down");
    s.step("mhr down");
    assert!(down.failed.is_empty(), "{:?}", down.failed);
    assert_eq!(down.changed, down.actions.len(), "every removal changed the kernel: {:?}", down.actions);
    assert_eq!(s.model.render(), s.before, "down leaves the host exactly as it was");
    s.finish();
}

#[tokio::test]
async fn a_change_the_kernel_refuses_undoes_the_whole_apply_and_names_the_object_and_errno() {
    let mut s = Scenario::new("apply-refused", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    let planned = engine.plan().await.expect("plans");
    let rule = planned
        .desired
        .rules
        .iter()
        .find(|r| {
            r.family == Family::V4
                && r.source.is_some_and(|net| net.contains(&"10.0.4.10".parse::<std::net::IpAddr>().unwrap()))
        })
        .expect("a from rule for ens4")
        .clone();
    s.model.refuse(Change::AddRule(rule.clone()), libc::EPERM);
    let err = engine.apply(&planned).await.expect_err("the refusal fails the apply");
    s.step("mhr apply, the kernel refusing ens4's IPv4 rule (EPERM)");
    s.say(&err.to_string());
    match &err {
        EngineError::Apply(ApplyError::Action { action, error, rollback, .. }) => {
            assert!(action.contains("from 10.0.4.0/24 lookup 7101"), "names the rule: {action}");
            assert!(
                matches!(error, ActionError::Kernel(KernelError::Refused(libc::EPERM))),
                "the kernel's EPERM: {error:?}"
            );
            assert!(rollback.is_empty(), "every earlier change was undone: {rollback:?}");
        }
        other => panic!("expected an action error, got {other:?}"),
    }
    assert_eq!(s.model.render(), s.before, "nothing of the failed apply is left");
    s.finish();
}

#[tokio::test]
async fn check_passes_after_apply_and_names_a_rule_another_writer_deleted() {
    let mut s = Scenario::new("check-missing-rule", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply");
    let report = engine.check(false).await.expect("checks");
    let failed: Vec<_> = report.findings.iter().filter(|f| !f.ok).collect();
    assert!(failed.is_empty(), "check passes after apply: {failed:#?}");

    let host = s.model.host();
    let rule = host
        .rules
        .iter()
        .find(|r| {
            r.protocol == common::MHR
                && r.source.is_some_and(|n| n.contains(&"10.0.4.10".parse::<std::net::IpAddr>().unwrap()))
        })
        .expect("ens4's rule")
        .clone();
    s.model.foreign_change(&Change::DeleteRule(rule), 4242).expect("the rule was there");
    let report = engine.check(false).await.expect("checks");
    s.step("another writer deletes ens4's IPv4 rule; mhr check");
    let failed: Vec<_> = report.findings.iter().filter(|f| !f.ok).collect();
    assert_eq!(failed.len(), 1, "exactly the one lookup fails: {failed:#?}");
    s.say(&format!("{}: {} ({})", failed[0].check, failed[0].observed, failed[0].advice));
    assert!(failed[0].check.contains("10.0.4.10"), "{failed:?}");
    assert!(failed[0].advice.contains("from 10.0.4.0/24 lookup 7101"), "names the missing rule: {failed:?}");
    s.finish();
}

#[tokio::test]
async fn check_reads_the_network_managers_of_the_scenarios_host_not_of_this_machine() {
    let s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    let failed = |report: &mhr_userspace::check::CheckReport| {
        report
            .findings
            .iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{}: {}", f.check, f.advice))
            .collect::<Vec<_>>()
    };
    let quiet = failed(&engine.check(false).await.expect("checks"));
    assert!(quiet.is_empty(), "whatever this machine runs, the scenario's host runs no manager: {quiet:#?}");
    // The scenario's host gets a systemd-networkd config, at its defaults.
    let network = s.host_root().join("etc/systemd/network");
    std::fs::create_dir_all(&network).expect("creates");
    std::fs::write(network.join("10-ens3.network"), "[Match]\nName=ens3\n").expect("writes");
    let warned = failed(&engine.check(false).await.expect("checks"));
    assert!(
        warned.iter().any(|f| f.contains("ManageForeignRoutes=no")),
        "networkd at its defaults is named: {warned:#?}"
    );
}

#[tokio::test]
async fn a_rollback_restores_what_mhr_had_before_an_apply() {
    let mut s = Scenario::new("confirm-restore", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    let prior = mhr_userspace::confirm::capture(&engine).await.expect("captures");
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply --confirm (captured the host before)");
    let report = mhr_userspace::confirm::restore(&engine, &prior).await.expect("restores");
    s.step("no confirmation: the rollback");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(s.model.render(), s.before, "the rollback leaves the host as it was before the apply");
    s.finish();
}

#[tokio::test]
async fn a_rollback_puts_back_the_routing_mhr_had_before_not_a_bare_host() {
    let s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    let routed = s.model.render();
    let prior = mhr_userspace::confirm::capture(&engine).await.expect("captures");
    assert!(!prior.rules.is_empty() && !prior.routes.is_empty(), "mhr's rules and routes are captured");
    // The change to roll back: everything of mhr's gone.
    engine.down().await.expect("down");
    assert_ne!(s.model.render(), routed);
    let report = mhr_userspace::confirm::restore(&engine, &prior).await.expect("restores");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(s.model.render(), routed, "mhr's earlier rules and routes are back, exactly");
}

#[tokio::test]
async fn status_reports_in_sync_after_apply_and_pending_changes_after_a_link_went_down() {
    let mut s = Scenario::new("status", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    let before = engine.status().await.expect("status");
    assert!(!before.in_sync && !before.pending.is_empty(), "before apply: {:?}", before.pending);
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply");
    let status = engine.status().await.expect("status");
    assert!(status.in_sync, "in sync after apply: {:?}", status.pending);
    assert_eq!(status.active.get(&Family::V4).map(Vec::as_slice), Some(&["ens3".to_owned()][..]));

    s.model.set_link("ens3", false, true);
    let status = engine.status().await.expect("status");
    s.step("ens3 goes down (the kernel drops its routes); mhr status");
    assert!(!status.in_sync, "a down primary leaves work to do");
    for line in &status.pending {
        s.say(line);
    }
    let ens3 = status.uplinks.iter().find(|u| u.interface == "ens3").expect("ens3 is reported");
    assert!(!ens3.up, "status shows the link down");
    s.finish();
}

#[tokio::test]
async fn a_failed_apply_puts_a_restored_legacy_default_back_aside_and_keeps_one_record_per_route() {
    use mhr_userspace::model::{MovedRoute, Route};
    let mut s = Scenario::new("legacy-restore-undone", "seed-host.txt", "seed.toml");
    // An earlier mhr moved ens4's DHCP default out of main (its record is
    // on disk, the route is not in the kernel), and one of a link that is
    // gone now (its record must survive untouched).
    let host = s.model.host();
    let ens4_default = host
        .routes
        .iter()
        .find(|r| r.is_default() && r.family() == Family::V4 && r.interface == Some(3))
        .expect("ens4's default")
        .clone();
    s.model.foreign_change(&Change::DeleteRoute(ens4_default.clone()), 0).expect("removed");
    let records = vec![
        MovedRoute { interface: "ens4".into(), route: ens4_default.clone() },
        MovedRoute { interface: "ens9".into(), route: Route { interface: Some(9), ..ens4_default.clone() } },
    ];
    let state_dir = s.config.routing.state_dir.clone();
    mhr_userspace::state::write_moved(&state_dir, &records).expect("records written");
    let before = s.model.render();

    let engine = s.engine();
    let planned = engine.plan().await.expect("plans");
    assert!(
        planned.actions.iter().any(|a| matches!(a, mhr_userspace::plan::Action::RestoreDefault { .. })),
        "the plan restores ens4's default: {:?}",
        planned.actions
    );
    let rule = planned.desired.rules.iter().find(|r| r.table == 7101).expect("an ens4 rule").clone();
    s.model.refuse(Change::AddRule(rule), libc::EPERM);
    engine.apply(&planned).await.expect_err("the refusal fails the apply");
    s.step("mhr apply restores ens4's legacy default, then the kernel refuses a rule: all undone");
    assert_eq!(s.model.render(), before, "the restored default went back aside with the rest");
    let left = mhr_userspace::state::read_moved(&state_dir).expect("records read");
    assert_eq!(left.len(), 2, "one record per route, the other link's kept: {left:?}");
    assert!(left.contains(&records[0]) && left.contains(&records[1]), "{left:?}");

    s.model.clear_refusals();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply again, the kernel taking everything");
    let left = mhr_userspace::state::read_moved(&state_dir).expect("records read");
    assert_eq!(left, vec![records[1].clone()], "ens4's record goes with its restore; the gone link's stays");
    assert!(s.model.host().routes.contains(&ens4_default), "ens4's default is back in main");

    engine.down().await.expect("down");
    s.step("mhr down: ens9's route cannot go back yet");
    let left = mhr_userspace::state::read_moved(&state_dir).expect("records read");
    assert_eq!(left, vec![records[1].clone()], "the record waits for a later down");
    s.finish();
}
