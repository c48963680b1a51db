//! `cargo xtask setup` twice: the second run installs nothing.
//!
//! The first run may install (and then needs root); either way the second
//! must find everything in place.

use std::process::Command;

fn setup() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("setup").output().expect("xtask runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "setup failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn second_setup_run_installs_nothing() {
    setup();
    let second = setup();
    let checks: Vec<&str> = second.lines().filter(|line| line.starts_with("  ")).collect();
    assert!(checks.len() >= 8, "every prerequisite is checked:\n{second}");
    assert!(
        checks.iter().all(|line| line.trim_start().starts_with("ok ")),
        "second run installed something:\n{second}"
    );
    assert!(second.contains("nothing installed"), "{second}");
}
