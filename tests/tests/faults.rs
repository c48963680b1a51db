//! The fault suite: what an unlucky or hostile operator does to a host
//! running mhr, each in namespaces against the real kernel, and what mhr
//! must still guarantee afterwards.

mod common;

use std::time::Duration;

use common::{
    daemon::{DaemonThread, eventually},
    mhr, snapshot, write_config,
};
use mhr_tests::{TempDir, many_uplinks::ManyUplinks, require_root};
use mhr_userspace::daemon::DaemonOptions;

fn quiet_daemon() -> DaemonOptions {
    DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() }
}

#[test]
fn two_applies_at_once_take_turns_and_both_succeed() {
    require_root();
    let host = ManyUplinks::start(40, 2, 1).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    for round in 0..3 {
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| mhr(&host.host, &config, &["apply", "--no-guard"]));
            let second = scope.spawn(|| mhr(&host.host, &config, &["apply", "--no-guard"]));
            (first.join().unwrap(), second.join().unwrap())
        });
        assert!(first.succeeded(), "round {round}: {first:?}");
        assert!(second.succeeded(), "round {round}: {second:?}");
        // One did the work, the other found the host as desired.
        let idle = [&first, &second].iter().filter(|run| run.output.starts_with("no changes")).count();
        assert_eq!(idle, 1, "round {round}:\n{}\n{}", first.output, second.output);
        let check = mhr(&host.host, &config, &["check"]);
        assert!(check.succeeded(), "{}", check.output);
        assert!(mhr(&host.host, &config, &["down"]).succeeded());
    }
}

#[test]
fn apply_and_down_beside_the_daemon_are_refused_naming_it_and_change_nothing() {
    require_root();
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let dir = TempDir::new("faults").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let daemon = DaemonThread::start(&host.host, &config, quiet_daemon());
    eventually("the daemon applied", Duration::from_secs(10), || {
        let rules = host.host.ip(["rule"]).unwrap_or_default();
        if rules.contains("lookup 7101") { Ok(()) } else { Err(rules) }
    });
    let before = snapshot(&host.host);
    for command in ["apply", "down"] {
        let started = std::time::Instant::now();
        let refused = mhr(&host.host, &config, &[command]);
        assert!(started.elapsed() < Duration::from_secs(2), "{command} is refused at once");
        let error = refused.error();
        assert!(
            error.contains(&format!("mhr run (pid {}, mhr run)", std::process::id()))
                && error.contains("stop it"),
            "{command}: {refused:?}"
        );
        assert_eq!(snapshot(&host.host), before, "{command} changed nothing");
    }
    // Read-only commands still work beside it.
    assert!(mhr(&host.host, &config, &["status"]).result.is_ok());
    daemon.stop();
    let down = mhr(&host.host, &config, &["down"]);
    assert!(down.succeeded(), "once the daemon stopped: {down:?}");
}
