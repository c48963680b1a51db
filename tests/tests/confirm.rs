//! `apply --confirm`: a change made over the uplinks it rewires undoes
//! itself unless confirmed, whatever happens to the session that made it.
//! The applying `mhr` runs as a real process (its guardian is a real
//! process of its own) inside the namespace.

mod common;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{
    daemon::{METRICS_PORT, eventually, mhr_binary, wait_healthy},
    mhr, snapshot, write_config,
};
use mhr_tests::{Netns, TempDir, many_uplinks::ManyUplinks, require_root};
use mhr_userspace::guard::GuardMaps;

struct Host {
    host: ManyUplinks,
    dir: TempDir,
    config: PathBuf,
    /// The host with the old config applied.
    before: String,
}

/// Two uplinks under mhr (monitor mode), then the config file changed to
/// enforce mode with the seed's `to` rules: the change to try.
fn host_with_a_change_to_try() -> Host {
    require_root();
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let dir = TempDir::new("confirm").unwrap();
    let old = host.mhr_config(dir.path());
    let config = write_config(&dir, &old);
    assert!(mhr(&host.host, &config, &["apply"]).succeeded());
    let before = snapshot(&host.host);
    let new = format!("mode = \"enforce\"\n{}", old.replace("[routing]\n", "[routing]\nto_rules = true\n"));
    std::fs::write(&config, new).unwrap();
    Host { host, dir, config, before }
}

/// `mhr apply --confirm WITHIN` as a process in a process group of its own,
/// like a command in an SSH session.
fn apply_with_confirm(host: &Host, within: &str, stdin: Stdio) -> Child {
    spawn(&host.host.host, &host.config, &["apply", "--confirm", within], stdin)
}

fn spawn(netns: &Netns, config: &Path, args: &[&str], stdin: Stdio) -> Child {
    netns
        .command(mhr_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("mhr starts")
}

fn wait_applied(host: &Host) {
    eventually("the change is applied", Duration::from_secs(10), || {
        let rules = host.host.host.ip(["rule"]).unwrap_or_default();
        if rules.contains("from all to") { Ok(()) } else { Err(rules) }
    });
}

fn enforcing(host: &Host) -> bool {
    let maps = GuardMaps::from_pins(&host.dir.pin_dir()).unwrap().expect("guard installed");
    maps.enforcement().unwrap().values().any(|enforcement| enforcement.enforces())
}

fn pending_file(host: &Host) -> PathBuf {
    host.dir.path().join("state/pending-confirm.json")
}

/// Waits for `child` to exit (bounded); its exit code and output.
fn finish(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < within, "mhr did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

fn hang_up_and_kill(child: &mut Child) {
    let group = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on the child's process group.
    unsafe { libc::kill(-group, libc::SIGHUP) };
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_unconfirmed_change_is_rolled_back_exactly_after_the_session_hangs_up() {
    let host = host_with_a_change_to_try();
    let mut applying = apply_with_confirm(&host, "3s", Stdio::null());
    wait_applied(&host);
    eventually("the change reached the guard", Duration::from_secs(5), || {
        if enforcing(&host) { Ok(()) } else { Err("monitor".into()) }
    });
    let changed = snapshot(&host.host.host);
    assert!(changed.contains("from all to 10.100.0.10 lookup"), "the trial's to rules are in: {changed}");
    assert!(!host.before.contains("from all to"), "and were not before");

    // The SSH session drops: SIGHUP to its process group, then the process is gone.
    hang_up_and_kill(&mut applying);
    eventually("the state before the change is back", Duration::from_secs(8), || {
        let now = snapshot(&host.host.host);
        if now == host.before { Ok(()) } else { Err(now) }
    });
    assert!(!enforcing(&host), "the guard is back in monitor mode");
    assert!(!pending_file(&host).exists());

    // mhr run does not apply the rolled-back config again …
    let (code, output) =
        finish(spawn(&host.host.host, &host.config, &["run"], Stdio::null()), Duration::from_secs(10));
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("was rolled back at"), "{output}");
    let confirm = mhr(&host.host.host, &host.config, &["confirm"]);
    assert!(confirm.error().contains("nothing to confirm"), "{confirm:?}");
    // … until someone applies it explicitly.
    assert!(mhr(&host.host.host, &host.config, &["apply"]).succeeded());
    assert_eq!(snapshot(&host.host.host), changed);
    assert!(!host.dir.path().join("state/rolled-back.json").exists());
}

#[test]
fn confirm_keeps_the_change_and_nothing_else_may_change_the_host_meanwhile() {
    let host = host_with_a_change_to_try();
    let applying = apply_with_confirm(&host, "20s", Stdio::null());
    wait_applied(&host);
    let changed = snapshot(&host.host.host);

    for args in [&["apply"][..], &["apply", "--confirm", "30s"]] {
        let refused = mhr(&host.host.host, &host.config, args);
        assert!(refused.error().contains("is pending confirmation until"), "{args:?}: {refused:?}");
    }
    // mhr run (say, restarted by systemd meanwhile) waits for the verdict.
    let mut daemon = spawn(&host.host.host, &host.config, &["run"], Stdio::null());
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.try_wait().unwrap().is_none(), "mhr run waits instead of exiting");
    // Waiting, it is alive and says why (a liveness probe passes), and
    // the guard's counters are still exported.
    let healthz = mhr_tests::probe::http_get(&host.host.host, METRICS_PORT, "/healthz");
    let (status, body) = healthz.expect("/healthz is served while mhr run waits");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("waiting: a change from") && body.contains("pending confirmation"), "{body}");
    let metrics = mhr_tests::probe::http_get(&host.host.host, METRICS_PORT, "/metrics");
    let (status, body) = metrics.expect("/metrics is served while mhr run waits");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("mhr_guard_packets_total{"), "the guard's counters: {body}");

    let confirmed = mhr(&host.host.host, &host.config, &["confirm"]);
    assert!(confirmed.succeeded(), "{confirmed:?}");
    let (code, output) = finish(applying, Duration::from_secs(5));
    assert_eq!(code, Some(0), "the waiting apply ends well: {output}");
    assert!(output.contains("confirmed"), "{output}");
    assert!(!pending_file(&host).exists());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(snapshot(&host.host.host), changed, "the change stays");
    assert!(enforcing(&host));
    // mhr run starts once confirmed.
    wait_healthy(&host.host.host, Duration::from_secs(10));
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn enter_on_the_terminal_that_applied_confirms_a_piped_line_does_not() {
    use std::io::Write as _;
    let host = host_with_a_change_to_try();
    // A script piped into the session: its next line is no confirmation.
    let mut piped = apply_with_confirm(&host, "20s", Stdio::piped());
    wait_applied(&host);
    piped.stdin.take().unwrap().write_all(b"\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(piped.try_wait().unwrap().is_none(), "still waiting for a confirmation");
    assert!(pending_file(&host).exists());
    assert!(mhr(&host.host.host, &host.config, &["confirm"]).succeeded());
    let (code, _) = finish(piped, Duration::from_secs(5));
    assert_eq!(code, Some(0));

    // On a terminal (a pty from `script`), Enter confirms.
    std::fs::write(
        &host.config,
        std::fs::read_to_string(&host.config).unwrap().replace("mode = \"enforce\"\n", ""),
    )
    .unwrap();
    let command = format!(
        "nsenter --net=/run/netns/{} {} --config {} apply --confirm 20s",
        host.host.host.name(),
        mhr_binary().display(),
        host.config.display()
    );
    let mut terminal = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the change is pending", Duration::from_secs(10), || {
        if pending_file(&host).exists() && !enforcing(&host) { Ok(()) } else { Err("not yet".into()) }
    });
    std::thread::sleep(Duration::from_millis(300));
    terminal.stdin.take().unwrap().write_all(b"\n").unwrap();
    let (code, output) = finish(terminal, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("confirm within 20s") && output.contains("confirmed"), "{output}");
    assert!(!pending_file(&host).exists());
}

#[test]
fn the_waiting_apply_exits_non_zero_naming_the_rollback() {
    let host = host_with_a_change_to_try();
    let started = Instant::now();
    let applying = apply_with_confirm(&host, "2s", Stdio::null());
    let (code, output) = finish(applying, Duration::from_secs(10));
    assert!(started.elapsed() >= Duration::from_secs(2), "not before the deadline: {:?}", started.elapsed());
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("not confirmed by"), "{output}");
    assert_eq!(snapshot(&host.host.host), host.before);
}

#[test]
fn after_a_reboot_before_the_deadline_the_next_mhr_command_rolls_back() {
    let host = host_with_a_change_to_try();
    let mut applying = apply_with_confirm(&host, "60s", Stdio::null());
    wait_applied(&host);
    // A reboot: the applying process and the guardian die at once.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pending_file(&host)).unwrap()).unwrap();
    let guardian = i32::try_from(record["guardian"].as_u64().expect("guardian pid recorded")).unwrap();
    // SAFETY: plain kill(2) on the guardian this test started.
    unsafe { libc::kill(guardian, libc::SIGKILL) };
    let _ = applying.kill();
    let _ = applying.wait();
    std::thread::sleep(Duration::from_millis(300));

    let status = mhr(&host.host.host, &host.config, &["status"]);
    assert!(status.output.contains("rolled back an unconfirmed change"), "{status:?}");
    assert_eq!(snapshot(&host.host.host), host.before);
    assert!(!pending_file(&host).exists());
}

/// The guardian's liveness is its lock, not its pid: a change applied from
/// a container (a PID namespace of its own) records a pid that names
/// another process outside, yet an mhr command there sees its guardian
/// alive and leaves the change pending.
#[test]
fn a_guardian_in_another_pid_namespace_is_alive_to_commands_outside() {
    let host = host_with_a_change_to_try();
    let applying = host
        .host
        .host
        .command("unshare")
        .args(["--pid", "--fork"])
        .arg(mhr_binary())
        .arg("--config")
        .arg(&host.config)
        .args(["apply", "--confirm", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("mhr starts in a PID namespace of its own");
    wait_applied(&host);
    eventually("the guardian is recorded", Duration::from_secs(5), || {
        let record = std::fs::read_to_string(pending_file(&host)).unwrap_or_default();
        if record.contains("\"guardian\":null") || record.is_empty() { Err(record) } else { Ok(()) }
    });
    let changed = snapshot(&host.host.host);
    // Every routing command first finishes abandoned rollbacks.
    let status = mhr(&host.host.host, &host.config, &["status"]);
    assert!(
        !status.output.contains("rolled back an unconfirmed change"),
        "the guardian is alive: {status:?}"
    );
    assert!(pending_file(&host).exists(), "the change is still pending");
    assert_eq!(snapshot(&host.host.host), changed);
    let confirmed = mhr(&host.host.host, &host.config, &["confirm"]);
    assert!(confirmed.succeeded(), "{confirmed:?}");
    let (code, output) = finish(applying, Duration::from_secs(5));
    assert_eq!(code, Some(0), "the waiting apply ends well: {output}");
    assert_eq!(snapshot(&host.host.host), changed, "the change stays");
}

#[test]
fn down_cancels_a_pending_change_and_mhr_run_does_not_bring_it_back() {
    let host = host_with_a_change_to_try();
    let applying = apply_with_confirm(&host, "30s", Stdio::null());
    wait_applied(&host);
    let down = mhr(&host.host.host, &host.config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    assert!(down.output.contains("cancelled the pending confirmation"), "{}", down.output);
    assert!(!pending_file(&host).exists());
    let (code, output) = finish(applying, Duration::from_secs(5));
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("cancelled by `mhr down`"), "the waiting apply says why: {output}");
    let (code, output) =
        finish(spawn(&host.host.host, &host.config, &["run"], Stdio::null()), Duration::from_secs(10));
    assert_ne!(code, Some(0), "{output}");
    assert!(output.contains("was rolled back at"), "{output}");
    // Applying it again with a confirmation takes responsibility for it.
    let again = apply_with_confirm(&host, "30s", Stdio::null());
    eventually("the change is applied again", Duration::from_secs(10), || {
        let rules = host.host.host.ip(["rule"]).unwrap_or_default();
        if pending_file(&host).exists() && rules.contains("lookup 7101") { Ok(()) } else { Err(rules) }
    });
    let confirmed = mhr(&host.host.host, &host.config, &["confirm"]);
    assert!(confirmed.succeeded(), "{confirmed:?}");
    assert_eq!(finish(again, Duration::from_secs(5)).0, Some(0));
    assert!(!host.dir.path().join("state/rolled-back.json").exists(), "confirming clears the marker");
}
