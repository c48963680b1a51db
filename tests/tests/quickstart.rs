//! The README's quick start, run on the lab host: every `mhr` line of it,
//! in order (`--config` pointing into the test's directory instead of
//! /etc/mhr). `dpkg` and `systemctl` lines are the package test's and the
//! unit's; `apply --confirm` waits while `confirm` runs, as in two shells.

mod common;

use common::{mhr, snapshot};
use mhr_tests::{SeedLab, TempDir, require_root};

/// The shell lines between the quick-start markers.
fn quick_start() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("<!-- quickstart -->").expect("the README has a quick start");
    let end = readme.find("<!-- /quickstart -->").expect("the quick start ends");
    readme[start..end]
        .lines()
        .filter(|line| line.starts_with("mhr "))
        .map(|line| {
            line.split('#').next().unwrap_or("").split_whitespace().skip(1).map(str::to_owned).collect()
        })
        .collect()
}

/// The `mhr status --brief` sample the README shows after the quick start:
/// its header and uplink lines.
fn readme_status_sample() -> Vec<&'static str> {
    let readme = include_str!("../../README.md");
    let after = readme.find("mhr status --brief` once applied").expect("the README shows status");
    let block = readme[after..].split("```").nth(1).expect("a sample block");
    block.lines().filter(|line| line.starts_with("UPLINK") || line.starts_with("ens")).collect()
}

#[test]
fn the_readmes_quick_start_works_step_by_step() {
    require_root();
    let steps = quick_start();
    let names: Vec<&str> = steps.iter().map(|s| s[0].as_str()).collect();
    assert_eq!(names, ["init", "plan", "apply", "confirm", "check", "status"], "the quick start's commands");
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("quickstart").unwrap();
    // Where /etc/mhr would be: init creates the directory.
    let config = dir.path().join("etc/mhr/mhr.toml");
    let before = snapshot(&lab.host);
    let host = &lab.host;
    // Each step as the real binary, as a shell would run it.
    let command = |args: &[&str]| {
        let mut command = host.command(common::daemon::mhr_binary());
        command.arg("--config").arg(&config).args(args);
        command
    };
    let mut applying = None;
    for step in &steps {
        let mut args: Vec<&str> = step.iter().map(String::as_str).collect();
        if args[0] == "apply" {
            args.push("--no-guard");
            let child = command(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            applying = Some(child);
            // Confirm only once the change is pending.
            let pending = dir.path().join("state/pending-confirm.json");
            let start = std::time::Instant::now();
            while !pending.exists() {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(20),
                    "apply --confirm never became pending"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            continue;
        }
        let run = command(&args).output().unwrap();
        let output = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(run.status.success(), "{args:?}: {output}\n{}", String::from_utf8_lossy(&run.stderr));
        match args[0] {
            "init" => {
                // The lab's files stay in the test's directory.
                let text = std::fs::read_to_string(&config).unwrap();
                let routing = mhr_tests::seed_lab::routing_section(dir.path());
                std::fs::write(&config, format!("{text}\n{routing}")).unwrap();
            }
            "confirm" => {
                let applied = applying.take().expect("apply ran first").wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&applied.stdout);
                assert!(
                    applied.status.success(),
                    "apply --confirm: {text}\n{}",
                    String::from_utf8_lossy(&applied.stderr)
                );
                assert!(text.contains("applied"), "{text}");
            }
            "status" => {
                // The README's sample has the real columns and uplinks.
                let sample = readme_status_sample();
                let words = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
                let lines: Vec<&str> = output.lines().collect();
                assert_eq!(words(lines[0]), words(sample[0]), "the sample's header\n{output}");
                for (real, shown) in lines[1..].iter().zip(&sample[1..]) {
                    assert_eq!(words(real)[..3], words(shown)[..3], "uplink, role, state\n{output}");
                }
            }
            _ => {}
        }
    }
    assert_ne!(snapshot(&lab.host), before, "the quick start changed the host");
    // The way back.
    assert!(mhr(&lab.host, &config, &["down"]).succeeded());
    assert_eq!(snapshot(&lab.host), before, "down leaves the host as it was");
}
