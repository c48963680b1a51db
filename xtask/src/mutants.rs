//! `cargo xtask mutants`: cargo-mutants over the code whose root-free tests
//! must catch a broken change: the planner, the config loader, the guard's
//! userspace (map updates, flag logging), and the engine, daemon and
//! confirm against the scenario tests on the kernel model. `--privileged` mutates the
//! guard's map I/O instead and runs the guard's namespace tests against
//! each mutant (root). Optional and slow (one build per mutant); not part
//! of `cargo xtask test`. Installs cargo-mutants first.

use anyhow::Context as _;

use crate::cmd;

/// The cargo-mutants release this project runs.
const CARGO_MUTANTS_VERSION: &str = "27";

/// What is mutated by default (paths from the workspace root).
const DEFAULT_FILES: [&str; 16] = [
    "mhr-userspace/src/plan/*.rs",
    "mhr-userspace/src/config/*.rs",
    "mhr-userspace/src/engine/*.rs",
    "mhr-userspace/src/apply.rs",
    "mhr-userspace/src/confirm.rs",
    "mhr-userspace/src/confirm/liveness.rs",
    "mhr-userspace/src/daemon/mod.rs",
    "mhr-userspace/src/daemon/reconcile.rs",
    "mhr-userspace/src/daemon/reload.rs",
    "mhr-userspace/src/daemon/report.rs",
    "mhr-userspace/src/daemon/rounds.rs",
    "mhr-userspace/src/daemon/passive.rs",
    "mhr-userspace/src/guard/update.rs",
    "mhr-userspace/src/guard/configure.rs",
    "mhr-userspace/src/daemon/flags.rs",
    "mhr-userspace/src/netlink/subscribe.rs",
];

#[derive(Debug, clap::Args)]
pub struct MutantsArgs {
    /// Source files to mutate (from the workspace root), instead of the
    /// default set: the planner, config, guard map updates, engine, apply,
    /// confirm and its guardian's lock, and the daemon (event loop,
    /// reconcile, reloads, reports, health rounds, passive health, flag
    /// filters).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<String>,
    /// Mutants built and tested at once (each needs its own build
    /// directory).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Only list the mutants.
    #[arg(long)]
    list: bool,
    /// Mutate the guard's map I/O (guard/configure.rs, unless --file says
    /// otherwise) and run the guard's privileged tests (test runs, real
    /// traffic, clsact, confirmation) on each mutant instead of the unit
    /// tests. Root.
    #[arg(long)]
    privileged: bool,
}

/// The scenario tests (engine, daemon, confirm on the kernel model).
const SCENARIO_TESTS: [&str; 13] = [
    "scenarios",
    "engine_scenarios",
    "daemon_scenarios",
    "daemon_decisions",
    "cadence_scenarios",
    "drain_scenarios",
    "failback_scenarios",
    "guard_steer_scenarios",
    "hook_scenarios",
    "passive_scenarios",
    "quality_scenarios",
    "steer_scenarios",
    "cli_errors",
];

/// The guard's namespace tests a privileged run uses.
const PRIVILEGED_TESTS: [&str; 4] = ["guard_test_run", "guard_traffic", "clsact", "confirm"];

pub fn run(args: &MutantsArgs) -> anyhow::Result<()> {
    if args.privileged && !args.list && !cmd::is_root() {
        anyhow::bail!("--privileged runs namespace and bpf tests: run it as root");
    }
    cmd::ensure_cargo_tool("cargo-mutants", "cargo-mutants", CARGO_MUTANTS_VERSION)?;
    let files: Vec<&str> = match (args.files.is_empty(), args.privileged) {
        (false, _) => args.files.iter().map(String::as_str).collect(),
        (true, false) => DEFAULT_FILES.to_vec(),
        (true, true) => vec!["mhr-userspace/src/guard/configure.rs"],
    };
    let output = if args.privileged { "target/mutants-privileged" } else { "target/mutants" };
    let mut command = cmd::cargo();
    command.args(["mutants", "--output", output]);
    for file in &files {
        command.args(["--file", file]);
    }
    command.args(["--jobs", &args.jobs.to_string()]);
    if args.list {
        command.arg("--list");
    }
    if args.privileged {
        // cargo-mutants 27.1 runs its baseline on the mutated package's own
        // tests whatever --test-package says: skip it, with fixed timeouts.
        command.args(["--test-package", "mhr-tests", "--baseline", "skip", "--timeout", "180"]);
        command.args(["--build-timeout", "900", "--"]);
        for test in PRIVILEGED_TESTS {
            command.args(["--test", test]);
        }
        command.args(["--", "--test-threads=1"]);
    } else {
        // The root-free tests: unit tests (planner, config, map-update
        // properties) and the scenario tests on the kernel model.
        command.args(["--package", "mhr-userspace", "--", "--lib"]);
        for test in SCENARIO_TESTS {
            command.args(["--test", test]);
        }
    }
    // cargo-mutants exits non-zero when mutants survive: that is the
    // finding, reported in target/mutants/mutants.out, not a task failure.
    let shown = cmd::describe(&command);
    println!("$ {shown}");
    let status = command.status().with_context(|| format!("could not start `{shown}`"))?;
    println!("cargo-mutants exited with {status}; see {output}/mutants.out/ (missed.txt: surviving mutants)");
    Ok(())
}
