//! `cargo xtask mutants`: cargo-mutants over the code whose unit tests must
//! catch a broken change: the planner, the config loader and the guard's
//! userspace (map updates, flag logging). Optional and slow (one build per
//! mutant); not part of `cargo xtask test`. Installs cargo-mutants first.

use anyhow::Context as _;

use crate::cmd;

/// The cargo-mutants release this project runs.
const CARGO_MUTANTS_VERSION: &str = "27";

/// What is mutated by default (paths from the workspace root).
const DEFAULT_FILES: [&str; 6] = [
    "mhr-userspace/src/plan/mod.rs",
    "mhr-userspace/src/config.rs",
    "mhr-userspace/src/guard/update.rs",
    "mhr-userspace/src/guard/configure.rs",
    "mhr-userspace/src/daemon/flags.rs",
    "mhr-userspace/src/netlink/subscribe.rs",
];

#[derive(Debug, clap::Args)]
pub struct MutantsArgs {
    /// Source files to mutate (from the workspace root), instead of the
    /// default set: the planner, config, guard map updates and daemon
    /// filters (about 450 mutants).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<String>,
    /// Mutants built and tested at once (each needs its own build
    /// directory).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Only list the mutants.
    #[arg(long)]
    list: bool,
}

pub fn run(args: &MutantsArgs) -> anyhow::Result<()> {
    cmd::ensure_cargo_tool("cargo-mutants", "cargo-mutants", CARGO_MUTANTS_VERSION)?;
    let files: Vec<&str> = if args.files.is_empty() {
        DEFAULT_FILES.to_vec()
    } else {
        args.files.iter().map(String::as_str).collect()
    };
    let mut command = cmd::cargo();
    command.args(["mutants", "--package", "mhr-userspace", "--output", "target/mutants"]);
    for file in &files {
        command.args(["--file", file]);
    }
    command.args(["--jobs", &args.jobs.to_string()]);
    if args.list {
        command.arg("--list");
    }
    // The unit tests: pure planner, config and map-update properties.
    command.args(["--", "--lib"]);
    // cargo-mutants exits non-zero when mutants survive: that is the
    // finding, reported in target/mutants/mutants.out, not a task failure.
    let shown = cmd::describe(&command);
    println!("$ {shown}");
    let status = command.status().with_context(|| format!("could not start `{shown}`"))?;
    println!(
        "cargo-mutants exited with {status}; see target/mutants/mutants.out/ (missed.txt: surviving mutants)"
    );
    Ok(())
}
