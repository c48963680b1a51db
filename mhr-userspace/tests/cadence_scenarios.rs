//! A per-uplink probe cadence on the in-memory kernel model, in paused
//! time: a backup with `probe_interval = "10s"` is probed a tenth as often
//! as the primary at `[health] interval = "1s"`, and judged down after
//! `down_after` of its own rounds (about 30 s), not `down_after` seconds.
//! Golden transcript in `tests/scenarios/`.

mod common;

use std::time::Duration;

use common::{Scenario, default_via, wait_until, with_daemon};
use mhr_userspace::{health::snapshot::HealthSnapshot, model::Family};

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_backup_with_a_longer_probe_interval_is_probed_less_and_judged_by_its_own_rounds() {
    let mut s = Scenario::new("cadence", "seed-host.txt", "cadence.toml");
    let model = s.model.clone();
    let state_dir = s.config.routing.state_dir.clone();
    let backup_healthy = move || {
        let snapshot: HealthSnapshot = mhr_userspace::state::read_health(&state_dir).unwrap_or_default();
        snapshot.get("ens4", Family::V4).map(|health| health.healthy)
    };
    let engine = s.engine();
    let checker = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"] && backup_healthy() == Some(true)
        })
        .await;
        s.step("mhr run starts");

        // (a) Over 100 s: about 100 probes out of ens3, about 10 out of ens4.
        let (primary, backup) = (model.probes_sent("ens3"), model.probes_sent("ens4"));
        tokio::time::sleep(Duration::from_secs(100)).await;
        let primary = model.probes_sent("ens3") - primary;
        let backup = model.probes_sent("ens4") - backup;
        assert!((99..=101).contains(&primary), "ens3 (every 1 s) probed {primary} times in 100 s");
        assert!((9..=11).contains(&backup), "ens4 (every 10 s) probed {backup} times in 100 s");
        s.say(&format!("in 100 s: {primary} probes out of ens3, {backup} out of ens4"));

        // (b) Silent: down after down_after (3) of its 10 s rounds, not 3 s.
        model.silence("ens4", true);
        let silent_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "ens4 judged down", || backup_healthy() == Some(false)).await;
        let took = silent_at.elapsed();
        assert!(took >= Duration::from_secs(20), "ens4 down after {took:?}, before 3 of its rounds");
        assert!(took <= Duration::from_secs(31), "ens4 down after {took:?}");
        assert_eq!(default_via(&model, Family::V4), ["ens3"], "the primary keeps main's default");
        s.step("ens4's upstream goes silent: down after 3 rounds of 10 s");

        // Back after up_after (3) of its rounds, again about 30 s.
        model.silence("ens4", false);
        let answers_at = tokio::time::Instant::now();
        wait_until(&model, PATIENCE, "ens4 healthy again", || backup_healthy() == Some(true)).await;
        let took = answers_at.elapsed();
        assert!(took >= Duration::from_secs(20), "ens4 healthy after {took:?}, before 3 of its rounds");
        s.step("ens4's upstream answers again");
    })
    .await;
    // `mhr check` names the backup's own cadence, not the primary's.
    let report = checker.check(false).await.expect("checks");
    let health: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.check.ends_with("is healthy for IPv4"))
        .map(|f| f.observed.as_str())
        .collect();
    assert_eq!(health, ["healthy (probes from 10.0.3.10)", "healthy (probes from 10.0.4.10 every 10s)"]);
    s.finish();
}
