//! `[[hook]]` wiring in the daemon, on the in-memory kernel model in paused
//! time: a silent primary fires `down` for it and `failover` naming the
//! backup as the active uplink, and a hook that runs far longer than a
//! reconcile does not hold the failover back.

mod common;

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use common::{Scenario, default_via, wait_until, with_daemon_options};
use mhr_userspace::{
    config::{HookConfig, HookEvent},
    daemon::{DaemonOptions, hooks::HookRun},
    model::Family,
};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn a_silent_primary_fires_down_and_failover_to_the_backup_without_waiting_for_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("daemon-hooks", "seed-host.txt", "seed.toml");
    // Runs for ten minutes (its timeout), far longer than any reconcile.
    let events = vec![HookEvent::Down, HookEvent::Up, HookEvent::Failover];
    s.config.hooks = vec![hook(dir.path(), "exec sleep 600", events, Duration::from_secs(600))];
    let model = s.model.clone();
    let engine = s.engine();
    let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel::<HookRun>();
    let options = DaemonOptions { hook_events: Some(sender), ..common::daemon_options() };
    with_daemon_options(engine, options, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        // Whatever start-up fired (uplinks proving themselves) is not under test.
        tokio::time::sleep(Duration::from_secs(5)).await;
        while seen.try_recv().is_ok() {}

        model.silence("ens3", true);
        let silent_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "fails over", || default_via(&model, Family::V4) == ["ens4"]).await;
        let took = silent_at.elapsed();
        // As without hooks (daemon_scenarios): down_after = 3 rounds of 1 s.
        assert!(took <= Duration::from_secs(5), "failed over after {took:?}: a hook held the reconcile");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut runs = Vec::new();
        while let Ok(run) = seen.try_recv() {
            runs.push(run);
        }
        let down = HookRun {
            event: HookEvent::Down,
            uplink: "ens3".to_owned(),
            family: Family::V4,
            state: "down",
            previous: "healthy",
            active: "ens4".to_owned(),
        };
        let failover = HookRun {
            event: HookEvent::Failover,
            uplink: "ens3".to_owned(),
            family: Family::V4,
            state: "down",
            previous: "healthy",
            active: "ens4".to_owned(),
        };
        assert_eq!(runs, vec![down, failover]);
        assert_eq!(run_env(&runs[1], "MHR_ACTIVE_UPLINK"), "ens4");

        model.silence("ens3", false);
        wait_until(&model, PATIENCE, "fails back", || default_via(&model, Family::V4) == ["ens3"]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut back = Vec::new();
        while let Ok(run) = seen.try_recv() {
            back.push((run.event, run.uplink, run.state, run.active));
        }
        assert_eq!(
            back,
            vec![
                (HookEvent::Up, "ens3".to_owned(), "healthy", "ens3".to_owned()),
                (HookEvent::Failover, "ens4".to_owned(), "healthy", "ens3".to_owned()),
            ]
        );
    })
    .await;
}

/// A hook on `on` running the shell line `body`, written under `dir`.
fn hook(dir: &std::path::Path, body: &str, on: Vec<HookEvent>, timeout: Duration) -> HookConfig {
    let exec = dir.join("hook");
    std::fs::write(&exec, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).unwrap();
    HookConfig { on, exec, args: Vec::new(), timeout: Some(timeout), uplink: Vec::new() }
}

fn run_env(run: &HookRun, name: &str) -> String {
    run.environment().into_iter().find(|(key, _)| *key == name).map(|(_, value)| value).unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn draining_the_primary_fires_drained_once_and_a_failover_leaving_a_drained_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::new("unused", "seed-host.txt", "seed.toml");
    let events = vec![HookEvent::Drained, HookEvent::Failover];
    s.config.hooks = vec![hook(dir.path(), "exit 0", events, Duration::from_secs(10))];
    let model = s.model.clone();
    let state_dir = s.config.routing.state_dir.clone();
    let engine = s.engine();
    let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel::<HookRun>();
    let options = DaemonOptions { hook_events: Some(sender), ..common::daemon_options() };
    with_daemon_options(engine, options, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        while seen.try_recv().is_ok() {}

        let now = mhr_userspace::clock::unix_seconds();
        mhr_userspace::drain::drain(&state_dir, "ens3", now, None).unwrap();
        wait_until(&model, PATIENCE, "drained", || default_via(&model, Family::V4) == ["ens4"]).await;
        // Rounds and reconciles go on: a drain fires once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut runs = Vec::new();
        while let Ok(run) = seen.try_recv() {
            runs.push((run.event, run.uplink, run.family, run.state, run.previous, run.active));
        }
        let expected: Vec<_> = [Family::V4, Family::V6]
            .into_iter()
            .flat_map(|family| {
                [
                    (HookEvent::Drained, "ens3".to_owned(), family, "drained", "healthy", "ens4".to_owned()),
                    (HookEvent::Failover, "ens3".to_owned(), family, "drained", "drained", "ens4".to_owned()),
                ]
            })
            .collect();
        let mut sorted = runs.clone();
        sorted.sort_by_key(|run| (run.2, run.0 != HookEvent::Drained));
        assert_eq!(sorted, expected, "as fired: {runs:#?}");
        // Another reconcile (an address appears): the drain is not news.
        model.add_address("ens4", "10.0.4.11/24".parse().unwrap());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again: Vec<HookRun> = std::iter::from_fn(|| seen.try_recv().ok()).collect();
        assert!(again.is_empty(), "nothing more fires: {again:#?}");
    })
    .await;
}
