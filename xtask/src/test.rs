//! `cargo xtask test`: everything CI runs, in order, stopping at the first
//! failure. Privileged tests need root; they are never skipped silently.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Run everything except the privileged (root) tests. Refused when CI=true.
    #[arg(long)]
    skip_privileged: bool,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci && args.skip_privileged {
        bail!("CI=true: nothing may be skipped, --skip-privileged is refused");
    }

    section("format");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;

    section("clippy (host crates)");
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "mhr-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    section("clippy (eBPF crate, bpfel-unknown-none)");
    cmd::run(cmd::nightly_cargo()?.args([
        "clippy",
        "--package",
        "mhr-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;

    section("alert rules and scrape config (promtool)");
    let prometheus = cmd::workspace_root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "scrape.yml"],
    ] {
        cmd::run(Command::new("promtool").args(args).current_dir(&prometheus))?;
    }

    section("Kubernetes manifests (kubernetes-validate, strict)");
    let manifests = cmd::workspace_root().join("deploy/kubernetes/daemonset.yaml");
    cmd::run(
        crate::setup::kubernetes_validate()
            .args(["--kubernetes-version", "1.30.0", "--strict"])
            .arg(&manifests),
    )?;

    section("unit tests");
    let mut passed = cargo_test(cmd::cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "mhr-tests",
        "--exclude",
        "mhr-ebpf",
        // Fuzz targets run under `cargo xtask fuzz`; clippy checks them.
        "--exclude",
        "mhr-fuzz",
    ]))?;

    section("privileged tests (network namespaces, bpf)");
    if !cmd::is_root() {
        if args.skip_privileged {
            println!("SKIPPED: privileged tests need root (--skip-privileged given)");
            println!("\n{passed} tests passed; privileged tests NOT run");
            return Ok(());
        }
        bail!(
            "the privileged tests need root (network namespaces, bpf): rerun as root, e.g. `sudo -E env PATH=$PATH cargo xtask test`, or pass --skip-privileged to run only the rest"
        );
    }
    // The daemon's restart test runs `mhr run` as a real process.
    cmd::run(cmd::cargo().args(["build", "--package", "mhr-userspace", "--bin", "mhr"]))?;
    let mhr = cmd::workspace_root().join("target/debug/mhr");
    passed += cargo_test(
        cmd::cargo().args(["test", "--package", "mhr-tests", "--", "--test-threads=1"]).env("MHR_BIN", mhr),
    )?;
    println!("\nall checks passed: {passed} tests");
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title}");
}

/// Runs `cargo test`, echoing its output, and returns how many tests passed.
fn cargo_test(command: &mut Command) -> anyhow::Result<usize> {
    let shown = cmd::describe(command);
    println!("$ {shown}");
    let mut child =
        command.stdout(Stdio::piped()).spawn().with_context(|| format!("could not start `{shown}`"))?;
    let stdout = child.stdout.take().context("capturing test output")?;
    let mut passed = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        passed += passed_count(&line).unwrap_or(0);
    }
    let status = child.wait().with_context(|| format!("waiting for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(passed)
}

/// `test result: ok. 12 passed; 0 failed; ...` → 12.
fn passed_count(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("test result: ")?;
    let (_, rest) = rest.split_once(". ")?;
    rest.split_once(" passed")?.0.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::passed_count;

    #[test]
    fn passed_count_reads_the_libtest_summary() {
        let line =
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(passed_count(line), Some(12));
        assert_eq!(passed_count("running 3 tests"), None);
    }
}
