//! `mhr status` agrees with `plan` on every error, lists every configured
//! uplink (a missing one too), and gives a summary scripts can read.

mod common;

use common::{mhr, write_config};
use mhr_tests::{SeedLab, TempDir, require_root, seed_lab::routing_section};
use mhr_userspace::cli::Outcome;

fn config(dir: &TempDir, ens5: &str) -> std::path::PathBuf {
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\n[[uplink]]\ninterface = \"ens4\"\n\n[[uplink]]\ninterface = \"ens5\"   # an LTE modem, unplugged\n{ens5}\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

#[test]
fn a_missing_uplink_is_the_same_error_in_plan_and_status_and_optional_lets_everything_go_on() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("status").unwrap();
    let strict = config(&dir, "");

    let plan = mhr(&lab.host, &strict, &["plan"]);
    let refusal = plan.error();
    assert!(refusal.contains("uplink `ens5` does not exist on this host"), "{plan:?}");
    let status = mhr(&lab.host, &strict, &["status"]);
    assert!(status.succeeded(), "{status:?}");
    assert!(status.output.contains(&format!("error: {refusal}")), "the same words:\n{}", status.output);
    assert!(!status.output.contains("in sync: apply would change nothing"), "{}", status.output);
    assert!(status.output.contains("ens5: MISSING, no such interface\n"), "{}", status.output);
    let check = mhr(&lab.host, &strict, &["status", "--check"]);
    assert!(matches!(check.result, Ok(Outcome::ChecksFailed)), "{check:?}");
    let only = mhr(&lab.host, &strict, &["status", "ens5", "--fields", "uplink,role,state"]);
    assert_eq!(only.output, "ens5\tbackup\tMISSING\n", "{only:?}");
    let json = mhr(&lab.host, &strict, &["status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json.output).unwrap();
    assert_eq!(parsed["version"], 3);
    assert_eq!(parsed["uplinks"][2]["interface"], "ens5");
    assert_eq!(parsed["uplinks"][2]["missing"], true);
    assert_eq!(parsed["errors"][0], refusal.as_str());
    assert_eq!(parsed["daemon"]["running"], false);

    let optional = config(&dir, "optional = true\n");
    let applied = mhr(&lab.host, &optional, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "{applied:?}");
    assert!(
        applied.output.contains("ens5 (optional): no such interface, planned without it"),
        "{}",
        applied.output
    );
    assert!(mhr(&lab.host, &optional, &["check"]).succeeded(), "check goes on without it");
    let check = mhr(&lab.host, &optional, &["status", "--check"]);
    assert!(check.succeeded(), "an optional uplink missing needs no attention: {}", check.output);
    let brief = mhr(&lab.host, &optional, &["status", "--brief"]);
    let lines: Vec<&str> = brief.output.lines().collect();
    assert!(lines[0].starts_with("UPLINK  ROLE"), "{}", brief.output);
    assert!(
        lines[1].starts_with("ens3") && lines[1].contains("primary") && lines[1].contains("healthy"),
        "{}",
        brief.output
    );
    assert!(lines[1].contains("ipv4,ipv6"), "ens3 holds both defaults: {}", brief.output);
    assert!(lines[3].contains("backup, optional") && lines[3].contains("MISSING"), "{}", brief.output);
    assert!(brief.output.contains("daemon: not running"), "{}", brief.output);
    assert!(!brief.output.contains("table 7100"), "brief: the summary only");
    let bad = mhr(&lab.host, &optional, &["status", "--fields", "uplink,colour"]);
    assert!(bad.error().contains("unknown field `colour`; the fields are uplink, role, state"), "{bad:?}");
}
