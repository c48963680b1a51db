//! Decisions of the daemon and of confirm that need no real kernel, on the
//! in-memory kernel model in paused time: confirmation records and the
//! guardian's liveness (recover, roll back, cancel, a daemon refusing to
//! start over a pending change), fight pacing, the guard learning an
//! address before the debounce, exiting when the guard is lost, cleanup on
//! exit, and a config reload.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{Scenario, default_via, get, metric, wait_until};
use mhr_userspace::{
    config::Config,
    confirm::{self, Pending},
    daemon::{DaemonError, DaemonOptions},
    model::Family,
    southbound::Change,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// Records a pending change for `prior` as `apply --confirm` does.
fn pending(s: &Scenario, id: &str, prior: confirm::Prior) -> Pending {
    let pending = Pending {
        id: id.to_owned(),
        deadline_ms: 1_000,
        config_path: PathBuf::from("/etc/mhr/mhr.toml"),
        config_text: "# the config as applied\n".to_owned(),
        guardian: None,
        prior,
    };
    confirm::write_pending(&s.config.routing.state_dir, &pending).expect("writes the record");
    pending
}

#[tokio::test]
async fn an_abandoned_change_is_rolled_back_and_remembered_and_a_guarded_one_is_left_alone() {
    let mut s = Scenario::new("confirm-recover", "seed-host.txt", "seed.toml");
    let engine = s.engine();
    let state_dir = s.config.routing.state_dir.clone();
    assert!(!confirm::recover(&engine).await.expect("recovers"), "nothing pending: nothing to do");

    let prior = confirm::capture(&engine).await.expect("captures");
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    s.step("mhr apply --confirm");
    let applied = s.model.render();
    let record = pending(&s, "17-1", prior);
    assert_eq!(
        confirm::read_pending(&state_dir).expect("reads"),
        Some(record.clone()),
        "the record as written"
    );

    // Its guardian runs (holds its lock): nothing is rolled back.
    let lock = confirm::liveness::take(&state_dir, "17-1").expect("takes the guardian's lock");
    assert!(confirm::guardian_alive(&state_dir, &record));
    assert!(!confirm::recover(&engine).await.expect("recovers"), "a live guardian's change is its own");
    s.step("another mhr command while the guardian runs");
    assert_eq!(s.model.render(), applied);
    assert!(confirm::read_pending(&state_dir).expect("reads").is_some(), "the record stays");

    // The guardian dies (a reboot, kill -9): the next command finishes its work.
    drop(lock);
    assert!(!confirm::guardian_alive(&state_dir, &record));
    assert!(confirm::recover(&engine).await.expect("recovers"), "rolled back");
    s.step("the guardian is gone: the next mhr command rolls the change back");
    assert_eq!(s.model.render(), s.before, "the host as before the change");
    assert_eq!(confirm::read_pending(&state_dir).expect("reads"), None, "the record is gone");
    let marker = confirm::read_rolled_back(&state_dir).expect("reads").expect("the rollback is remembered");
    assert_eq!((marker.id.as_str(), marker.cancelled), ("17-1", false));
    assert_eq!(marker.config_text, record.config_text, "mhr run can tell the config it must not apply");
    assert!(
        !confirm::liveness::lock_path(&state_dir, "17-1").exists(),
        "the guardian's lock file goes with the record"
    );
    assert!(!confirm::recover(&engine).await.expect("recovers"), "once only");
    s.finish();
}

#[tokio::test]
async fn down_cancels_a_pending_change_and_remembers_its_config_as_cancelled() {
    let s = Scenario::new("confirm-cancel", "seed-host.txt", "seed.toml");
    let state_dir = s.config.routing.state_dir.clone();
    let record = pending(&s, "18-2", confirm::Prior::default());
    confirm::cancel(&state_dir, &record).expect("cancels");
    assert_eq!(confirm::read_pending(&state_dir).expect("reads"), None, "nothing is pending any more");
    let marker = confirm::read_rolled_back(&state_dir).expect("reads").expect("remembered");
    assert_eq!((marker.id.as_str(), marker.cancelled), ("18-2", true));
    assert_eq!(marker.config_path, record.config_path);
    assert_eq!(marker.config_text, record.config_text);
}

#[tokio::test]
async fn a_pending_change_is_refused_with_its_deadline_and_a_new_apply_forgets_a_rollback() {
    let s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let state_dir = s.config.routing.state_dir.clone();
    let mut record = pending(&s, "20-4", confirm::Prior::default());
    // 2023-11-14T22:13:20.500Z: the refusal names the second.
    record.deadline_ms = 1_700_000_000_500;
    let refusal = record.refusal().to_string();
    assert!(refusal.contains(&mhr_userspace::clock::rfc3339(1_700_000_000)), "{refusal}");

    confirm::cancel(&state_dir, &record).expect("cancels");
    assert!(confirm::read_rolled_back(&state_dir).expect("reads").is_some());
    confirm::clear_rolled_back(&state_dir).expect("clears");
    assert_eq!(
        confirm::read_rolled_back(&state_dir).expect("reads").map(|r| r.id),
        None,
        "an explicit apply takes the config back: it is no longer one rolled back"
    );
}

#[tokio::test(start_paused = true)]
async fn mhr_run_does_not_start_over_a_pending_change() {
    let s = Scenario::new("confirm-daemon", "seed-host.txt", "seed.toml");
    pending(&s, "19-3", confirm::Prior::default());
    let (_reload, mut reloads) = tokio::sync::mpsc::channel(1);
    let daemon = mhr_userspace::daemon::run_engine(
        s.engine(),
        common::daemon_options(),
        std::future::pending(),
        &mut reloads,
    );
    let outcome = tokio::time::timeout(PATIENCE, daemon).await;
    assert!(matches!(outcome, Ok(Err(DaemonError::PendingConfirmation))), "{outcome:?}");
    assert_eq!(s.model.render(), s.before, "it changed nothing");
}

#[tokio::test(start_paused = true)]
async fn a_rule_another_writer_keeps_deleting_is_put_back_at_a_bounded_rate_and_in_the_end_for_good() {
    let mut s = Scenario::new("daemon-fight", "seed-host.txt", "seed.toml");
    let endpoint = s.serve_on_known_port();
    let model = s.model.clone();
    common::with_daemon(s.engine(), async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        let rule = model
            .host()
            .rules
            .into_iter()
            .find(|r| r.protocol == common::MHR && r.source.is_some())
            .expect("an mhr rule");
        // A first removal is put back at once, as any drift.
        model.foreign_change(&Change::DeleteRule(rule.clone()), 4242).expect("deleted");
        wait_until(&model, Duration::from_millis(500), "put back at once", || {
            model.host().rules.contains(&rule)
        })
        .await;
        // Then a writer deletes it whenever it is there, for ten seconds.
        let (start, mut removals) = (tokio::time::Instant::now(), 1);
        while start.elapsed() < Duration::from_secs(10) {
            if model.host().rules.contains(&rule) {
                model.foreign_change(&Change::DeleteRule(rule.clone()), 4242).expect("deleted");
                removals += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // At once, three corrections would make some 140 in ten seconds;
        // paced (the third contested, then 1 s, 2 s, 4 s apart) about 6.
        assert!((4..=8).contains(&removals), "{removals} corrections in ten seconds of constant removal");
        // What the metrics say of it: each put-back a correction, the held-back
        // ones counted, one object contested.
        let corrections =
            metric(endpoint, "mhr_drift_corrections_total{kind=\"rule_added\"}").await.unwrap_or(0.0);
        assert!(
            (f64::from(removals - 1)..=f64::from(removals)).contains(&corrections),
            "{corrections} corrections counted for {removals} removals"
        );
        let deferred = metric(endpoint, "mhr_drift_corrections_deferred_total").await.unwrap_or(0.0);
        assert!(deferred >= 1.0, "held-back corrections are counted: {deferred}");
        assert_eq!(metric(endpoint, "mhr_drift_contested_objects").await, Some(1.0));
        // The writer stops: the held-back correction is made when due,
        // without waiting for the periodic resync (a minute).
        wait_until(&model, Duration::from_secs(20), "put back for good", || {
            model.host().rules.contains(&rule)
        })
        .await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_guard_learns_a_new_address_before_the_debounced_reconcile() {
    let s = Scenario::new("daemon-guard-learns", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    // A debounce far longer than the wait below: only the early learning
    // can put the address in the guard's maps in time.
    let options = DaemonOptions {
        guard: true,
        debounce: Duration::from_secs(20),
        max_delay: Duration::from_secs(20),
        ..common::daemon_options()
    };
    let new: std::net::IpAddr = "10.0.4.11".parse().unwrap();
    common::with_daemon_options(s.engine(), options, async {
        wait_until(&model, PATIENCE, "the guard runs on ens4", || model.guard().attached.contains("ens4"))
            .await;
        model.add_address("ens4", "10.0.4.11/24".parse().unwrap());
        wait_until(&model, Duration::from_secs(2), "the guard learns the new address", || {
            model.guard().uplinks.iter().any(|u| u.interface == "ens4" && u.addresses.contains(&new))
        })
        .await;
    })
    .await;
}

/// A daemon with the guard that exits once it is lost for `deadline`.
fn exiting_when_guard_lost(deadline: Duration) -> DaemonOptions {
    DaemonOptions {
        guard: true,
        exit_when_guard_lost: true,
        guard_repair_deadline: deadline,
        ..common::daemon_options()
    }
}

#[tokio::test(start_paused = true)]
async fn mhr_run_exits_when_the_guard_stays_lost_past_the_repair_deadline() {
    let s = Scenario::new("daemon-guard-lost", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let deadline = Duration::from_secs(5);
    let options = exiting_when_guard_lost(deadline);
    let (_reload, mut reloads) = tokio::sync::mpsc::channel(1);
    let daemon = mhr_userspace::daemon::run_engine(s.engine(), options, std::future::pending(), &mut reloads);
    let lost_at = std::cell::Cell::new(None);
    let steps = async {
        wait_until(&model, PATIENCE, "the guard runs on ens3", || model.guard().attached.contains("ens3"))
            .await;
        model.refuse_guard("ens3", true);
        model.detach_guard("ens3");
        lost_at.set(Some(tokio::time::Instant::now()));
    };
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(120), daemon), steps);
    let lost_for = lost_at.get().expect("the guard was lost").elapsed();
    match outcome {
        Ok(Err(DaemonError::GuardLost(after, error))) => {
            assert_eq!(after, deadline);
            assert!(error.contains("ens3"), "names the uplink: {error}");
        }
        other => panic!("expected mhr run to exit with GuardLost, got {other:?}"),
    }
    assert!(lost_for >= deadline, "exited {lost_for:?} after the loss, before the repair deadline");
    assert!(lost_for <= deadline + Duration::from_secs(3), "exited only {lost_for:?} after the loss");
    let state_dir = &s.config.routing.state_dir;
    assert!(!mhr_userspace::paths::health(state_dir).exists(), "its health view is retired");
    assert!(mhr_userspace::paths::retired_health(state_dir).exists(), "its health view is retired");
}

/// The guard failure `mhr status` and /healthz report, from the daemon's
/// health view.
fn reported_guard_error(state_dir: &std::path::Path) -> Option<String> {
    let view: mhr_userspace::health::snapshot::HealthSnapshot =
        mhr_userspace::state::read_health(state_dir).unwrap_or_default();
    view.guard_error
}

/// /healthz as one line: status and body.
async fn healthz(address: std::net::SocketAddr) -> String {
    let (status, body) = get(address, "/healthz").await;
    format!("{status} | {}", body.trim())
}

#[tokio::test(start_paused = true)]
async fn a_guard_failure_is_reported_while_it_lasts_and_forgotten_once_the_guard_runs() {
    let mut s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let free = s.serve_on_known_port();
    let model = s.model.clone();
    let state_dir = s.config.routing.state_dir.clone();
    model.refuse_guard_load(true);
    let options = DaemonOptions { guard: true, ..common::daemon_options() };
    common::with_daemon_options(s.engine(), options, async {
        wait_until(&model, PATIENCE, "routing runs without the guard", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        // Reconciles that succeed without a guard do not make its failure go away.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let reported = reported_guard_error(&state_dir);
        assert!(reported.as_deref().is_some_and(|e| e.contains("bpffs")), "the load failure: {reported:?}");
        assert!(model.guard().attached.is_empty());
        let health = healthz(free).await;
        assert!(
            health.contains(" 503 ") && health.contains("the source guard is not running"),
            "routing runs, but /healthz fails while the guard does not: {health}"
        );

        model.refuse_guard_load(false);
        wait_until(&model, PATIENCE, "the guard loads, attaches and the failure is forgotten", || {
            model.guard().attached.len() == 2 && reported_guard_error(&state_dir).is_none()
        })
        .await;
        let health = healthz(free).await;
        assert!(health.contains(" 200 ") && health.ends_with("| ok"), "{health}");

        model.refuse_guard("ens3", true);
        model.detach_guard("ens3");
        wait_until(&model, PATIENCE, "the attach failure is reported", || {
            reported_guard_error(&state_dir).is_some_and(|e| e.contains("ens3"))
        })
        .await;
        model.refuse_guard("ens3", false);
        wait_until(&model, PATIENCE, "ens3 is guarded again and the failure forgotten", || {
            model.guard().attached.contains("ens3") && reported_guard_error(&state_dir).is_none()
        })
        .await;
        let repairs = metric(free, "mhr_guard_repairs_total{kind=\"link\"}").await;
        assert_eq!(repairs, Some(1.0), "the link someone removed is counted as repaired, once");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_guard_in_place_costs_no_reconcile_and_a_failing_one_still_running_is_not_lost() {
    let mut s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let endpoint = s.serve_on_known_port();
    let model = s.model.clone();
    let deadline = Duration::from_secs(5);
    let options = exiting_when_guard_lost(deadline);
    let (_reload, mut reloads) = tokio::sync::mpsc::channel(1);
    let daemon = mhr_userspace::daemon::run_engine(s.engine(), options, std::future::pending(), &mut reloads);
    let steps = async {
        wait_until(&model, PATIENCE, "the guard runs on both uplinks", || model.guard().attached.len() == 2)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let reconciles = || metric(endpoint, "mhr_reconciles_total{result=\"ok\"}");
        let before = reconciles().await;
        // Ten guard checks (one a second) with nothing to repair.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(reconciles().await, before, "an intact guard is checked, not reconciled");

        // Attaching to ens3 fails from now on, but the guard still runs
        // there: failing, not lost.
        model.refuse_guard("ens3", true);
        model.add_address("ens4", "10.0.4.11/24".parse().unwrap());
        tokio::time::sleep(deadline * 4).await;
        assert!(model.guard().attached.contains("ens3"));
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            outcome = daemon => Some(outcome),
            () = steps => None,
        }
    })
    .await;
    match outcome {
        Ok(None) => {}
        Ok(Some(exited)) => panic!("mhr run exited though its guard still runs: {exited:?}"),
        Err(_) => panic!("the steps did not finish"),
    }
}

#[tokio::test(start_paused = true)]
async fn cleanup_on_exit_removes_routing_and_the_guard() {
    let mut s = Scenario::new("daemon-cleanup", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let options = DaemonOptions { guard: true, cleanup_on_exit: true, ..common::daemon_options() };
    common::with_daemon_options(s.engine(), options, async {
        wait_until(&model, PATIENCE, "mhr run routes and guards", || {
            default_via(&model, Family::V4) == ["ens3"] && model.guard().attached.len() == 2
        })
        .await;
        s.step("mhr run starts with --cleanup-on-exit");
    })
    .await;
    s.step("mhr run stops");
    assert_eq!(s.model.render(), s.before, "routing removed: the host as before");
    assert!(s.model.guard().attached.is_empty(), "the guard removed: {:?}", s.model.guard());
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_drops_an_uplink_drops_its_metric_series_and_keeps_the_others() {
    let mut s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let endpoint = s.serve_on_known_port();
    let model = s.model.clone();
    let mut reloaded: Config = s.config.clone();
    reloaded.uplinks.retain(|uplink| uplink.interface == "ens3");
    let (reload, mut reloads) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = mhr_userspace::daemon::run_engine(
        s.engine(),
        common::daemon_options(),
        async {
            let _ = stopped.await;
        },
        &mut reloads,
    );
    let series = |uplink: &'static str| async move {
        let (_, body) = get(endpoint, "/metrics").await;
        body.lines().filter(|line| line.contains(&format!("uplink=\"{uplink}\""))).count()
    };
    let steps = async {
        wait_until(&model, PATIENCE, "mhr run routes both uplinks", || {
            model.host().rules.iter().any(|r| r.table == 7101)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (ens3, ens4) = (series("ens3").await, series("ens4").await);
        assert!(ens3 > 0 && ens4 > 0, "both uplinks have series: {ens3}, {ens4}");
        let healthy = "mhr_uplink_healthy{uplink=\"ens3\",family=\"ipv4\"}";
        let loss = "mhr_probe_loss_ratio{uplink=\"ens3\",target=\"192.0.2.1\"}";
        assert_eq!((metric(endpoint, healthy).await, metric(endpoint, loss).await), (Some(1.0), Some(0.0)));
        reload.send(Ok(reloaded)).await.expect("sends");
        wait_until(&model, PATIENCE, "ens4's table is gone", || {
            !model.host().rules.iter().any(|r| r.table == 7101)
        })
        .await;
        assert_eq!(series("ens4").await, 0, "nothing is exported for an uplink no longer configured");
        assert!(series("ens3").await > 0, "ens3 keeps its series");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            (metric(endpoint, healthy).await, metric(endpoint, loss).await),
            (Some(1.0), Some(0.0)),
            "ens3 is still exported healthy, its target answering"
        );
        assert_eq!(series("ens4").await, 0, "and nothing of ens4 came back");
        let _ = stop.send(());
    };
    let (outcome, ()) = tokio::join!(daemon, steps);
    outcome.expect("the daemon ran and stopped cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_reload_takes_the_new_primary_and_keeps_what_waits_for_a_restart() {
    let mut s = Scenario::new("daemon-reload", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let mut reloaded: Config = s.config.clone();
    for uplink in &mut reloaded.uplinks {
        uplink.primary = uplink.interface == "ens4";
    }
    // What marks mhr's objects waits for a restart: taken live, every
    // object would look foreign and be installed twice.
    reloaded.routing.protocol = 211;
    let (reload, mut reloads) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = mhr_userspace::daemon::run_engine(
        s.engine(),
        common::daemon_options(),
        async {
            let _ = stopped.await;
        },
        &mut reloads,
    );
    let steps = async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");
        let broken = Config::parse("line 3: not a config", std::path::Path::new("mhr.toml"));
        reload.send(Err(broken.expect_err("not a config"))).await.expect("sends");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(default_via(&model, Family::V4), ["ens3"], "a refused reload changes nothing");
        s.step("a reload with a broken config");
        reload.send(Ok(reloaded)).await.expect("sends");
        wait_until(&model, PATIENCE, "ens4 becomes the primary", || {
            default_via(&model, Family::V4) == ["ens4"] && default_via(&model, Family::V6) == ["ens4"]
        })
        .await;
        s.step("a reload making ens4 the primary");
        let _ = stop.send(());
    };
    let (outcome, ()) = tokio::join!(daemon, steps);
    outcome.expect("the daemon ran and stopped cleanly");
    let host = s.model.host();
    assert!(
        !host.rules.iter().any(|r| r.protocol == 211) && !host.routes.iter().any(|r| r.protocol == 211),
        "the protocol waits for a restart:\n{}",
        s.model.render()
    );
    s.finish();
}

#[tokio::test(start_paused = true)]
async fn a_rollback_puts_the_guards_modes_back_and_removes_a_guard_the_change_installed() {
    use mhr_userspace::{guard::Enforcement, southbound::Southbound as _};
    let s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let model = s.model.clone();
    let pin_dir = s.config.guard.pin_dir.clone();
    let options = DaemonOptions { guard: true, ..common::daemon_options() };
    common::with_daemon_options(s.engine(), options, async {
        wait_until(&model, PATIENCE, "the guard runs on both uplinks", || model.guard().attached.len() == 2)
            .await;
    })
    .await;
    let engine = s.engine();
    let prior = confirm::capture(&engine).await.expect("captures");
    let modes = prior.guard.clone().expect("the installed guard's modes are captured");
    assert_eq!(modes.values().copied().collect::<Vec<_>>(), [Enforcement::Monitor; 2]);
    // The change to roll back: the guard enforcing.
    let enforced = modes.keys().map(|ifindex| (*ifindex, Enforcement::DropSpoofed)).collect();
    assert!(model.set_guard_enforcement(&pin_dir, &enforced).expect("sets"));
    let report = confirm::restore(&engine, &prior).await.expect("restores");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(model.guard_enforcement(&pin_dir).expect("reads"), Some(modes), "the modes as before");

    // Before a change that installed the guard there was none: it goes.
    let bare = confirm::Prior { guard: None, ..prior };
    confirm::restore(&engine, &bare).await.expect("restores");
    assert!(model.guard().attached.is_empty(), "{:?}", model.guard());
    assert_eq!(model.guard_enforcement(&pin_dir).expect("reads"), None);
}
