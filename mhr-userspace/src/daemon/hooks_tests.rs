//! The hook runner with real scripts in a temporary directory.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use super::*;

fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn hook(exec: PathBuf, timeout: Duration) -> HookConfig {
    HookConfig {
        on: vec![HookEvent::Failover, HookEvent::Down],
        exec,
        args: vec!["one".to_owned()],
        timeout: Some(timeout),
        uplink: Vec::new(),
    }
}

fn run() -> HookRun {
    HookRun {
        event: HookEvent::Failover,
        uplink: "ens3".to_owned(),
        family: Family::V4,
        state: "down",
        previous: "healthy",
        active: "ens4".to_owned(),
    }
}

fn count(runs: &MetricFamily<Labels, Counter>, event: &str, result: &str) -> u64 {
    runs.get_or_create(&labels([("event", event), ("result", result)])).get()
}

#[tokio::test]
async fn a_hook_gets_the_environment_and_its_output_is_kept_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(
        &dir,
        "env.sh",
        "echo \"$MHR_EVENT $MHR_UPLINK $MHR_FAMILY $MHR_STATE $MHR_PREVIOUS_STATE $MHR_ACTIVE_UPLINK $1\"\necho to-stderr >&2\necho \"stdin=$(readlink /proc/$$/fd/0)\"\nexit 0",
    );
    let runs = MetricFamily::default();
    let hooks = Hooks::new(vec![hook(exec, Duration::from_secs(5))], runs.clone(), None);
    let mut started = hooks.fire(&run());
    assert_eq!(started.len(), 1);
    let report = started.remove(0).await.unwrap();
    assert_eq!(report.outcome, Outcome::Ok);
    assert!(
        report.lines.contains(&"failover ens3 ipv4 down healthy ens4 one".to_owned()),
        "{:?}",
        report.lines
    );
    assert!(report.lines.contains(&"to-stderr".to_owned()), "{:?}", report.lines);
    assert!(report.lines.contains(&"stdin=/dev/null".to_owned()), "{:?}", report.lines);
    assert_eq!(count(&runs, "failover", "ok"), 1);
}

#[tokio::test]
async fn the_environment_is_clean_but_for_path() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(&dir, "clean.sh", "echo \"home=${HOME:-unset} path=$PATH\"");
    let report = execute(&hook(exec, Duration::from_secs(5)), &run()).await;
    assert_eq!(report.lines, vec![format!("home=unset path={HOOK_PATH}")]);
}

#[tokio::test]
async fn a_failing_hook_is_counted_failed() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(&dir, "fail.sh", "echo oops; exit 3");
    let runs = MetricFamily::default();
    let hooks = Hooks::new(vec![hook(exec, Duration::from_secs(5))], runs.clone(), None);
    let report = hooks.fire(&run()).remove(0).await.unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.lines, vec!["oops".to_owned()]);
    assert_eq!(count(&runs, "failover", "failed"), 1);
    assert_eq!(count(&runs, "failover", "ok"), 0);
}

#[tokio::test]
async fn a_hook_over_its_timeout_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("survived");
    let exec =
        script(&dir, "slow.sh", &format!("echo started\n(sleep 3; touch {}) &\nsleep 30", marker.display()));
    let runs = MetricFamily::default();
    let hooks = Hooks::new(vec![hook(exec, Duration::from_secs(1))], runs.clone(), None);
    let begun = std::time::Instant::now();
    let report = hooks.fire(&run()).remove(0).await.unwrap();
    assert!(begun.elapsed() < Duration::from_secs(5), "took {:?}", begun.elapsed());
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(report.lines, vec!["started".to_owned()]);
    assert_eq!(count(&runs, "failover", "timeout"), 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the hook's background process outlived its timeout");
}

#[tokio::test]
async fn output_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(&dir, "chatty.sh", "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done");
    let report = execute(&hook(exec, Duration::from_secs(5)), &run()).await;
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(report.lines.len(), MAX_LINES);
}

#[tokio::test]
async fn when_every_slot_is_busy_a_run_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(&dir, "busy.sh", "sleep 2");
    let runs = MetricFamily::default();
    let many = (0..MAX_RUNNING + 2).map(|_| hook(exec.clone(), Duration::from_secs(5))).collect();
    let hooks = Hooks::new(many, runs.clone(), None);
    let started = hooks.fire(&run());
    assert_eq!(started.len(), MAX_RUNNING);
    assert_eq!(count(&runs, "failover", "skipped"), 2);
    for handle in started {
        assert_eq!(handle.await.unwrap().outcome, Outcome::Ok);
    }
    // The slots are free again.
    assert_eq!(hooks.fire(&run()).len(), MAX_RUNNING);
}

#[tokio::test]
async fn only_the_hooks_for_the_event_and_uplink_run() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(&dir, "ok.sh", "true");
    let mut only_ens4 = hook(exec.clone(), Duration::from_secs(5));
    only_ens4.uplink = vec!["ens4".to_owned()];
    let mut only_up = hook(exec, Duration::from_secs(5));
    only_up.on = vec![HookEvent::Up];
    let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks::new(vec![only_ens4, only_up], MetricFamily::default(), Some(sender));
    assert!(hooks.fire(&run()).is_empty());
    assert_eq!(seen.recv().await, Some(run()));
}

#[tokio::test]
async fn fire_returns_before_the_hook_ends() {
    let dir = tempfile::tempdir().unwrap();
    let exec = script(&dir, "sleepy.sh", "sleep 3");
    let hooks = Hooks::new(vec![hook(exec, Duration::from_secs(10))], MetricFamily::default(), None);
    let begun = std::time::Instant::now();
    let started = hooks.fire(&run());
    assert!(begun.elapsed() < Duration::from_millis(500), "fire waited {:?}", begun.elapsed());
    for handle in started {
        handle.abort();
    }
}
