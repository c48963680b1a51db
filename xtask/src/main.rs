//! `cargo xtask`: the one place that knows about toolchains, bpf-linker,
//! system packages, privileges, the lab and benchmarks.

mod bench;
mod cmd;
mod dist;
mod fuzz;
mod lab;
mod mutants;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "mhr project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need: nightly + rust-src, a
    /// bpf-linker matching the nightly's LLVM, Debian packages, bpffs.
    /// Idempotent; a no-op when everything is present.
    Setup(setup::SetupArgs),
    /// Setup, fmt, clippy (host and eBPF), unit tests, privileged tests.
    Test(test::TestArgs),
    /// Bring up the seed lab, show the multihoming problem and mhr's fix
    /// and counters, tear it down.
    Lab(lab::LabArgs),
    /// Benchmarks (root): figures next to a baseline measured in the same run.
    Bench(bench::BenchArgs),
    /// Build the Debian package (binary with the eBPF objects inside, unit,
    /// completions, man page, docs) into target/dist.
    Dist(dist::DistArgs),
    /// Mutation testing (cargo-mutants, installed on first use) of the
    /// planner, config and guard userspace against their unit tests, or
    /// (--privileged) of the guard's map I/O against its namespace tests.
    Mutants(mutants::MutantsArgs),
    /// Fuzz the guard's packet parser and the config loader (cargo-fuzz,
    /// installed on first use; nightly, AddressSanitizer).
    Fuzz(fuzz::FuzzArgs),
}

impl Task {
    /// Whether the task builds or runs the lab: then a fresh machine gets
    /// the nightly, bpf-linker and the packages first.
    fn needs_setup(&self) -> bool {
        !matches!(self, Task::Setup(_))
    }
}

fn main() -> ExitCode {
    cmd::put_cargo_bin_on_path();
    let cli = Cli::parse();
    if cli.task.needs_setup()
        && let Err(err) = setup::run(&setup::SetupArgs::default())
    {
        eprintln!("xtask: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.task {
        Task::Setup(args) => setup::run(&args).map(drop),
        Task::Test(args) => test::run(&args),
        Task::Lab(args) => lab::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Dist(args) => dist::run(&args),
        Task::Mutants(args) => mutants::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The README's two commands, as a newcomer types them on a fresh
    /// machine: both exist and both install what they need first.
    #[test]
    fn the_readme_commands_run_setup_first() {
        let readme = include_str!("../../README.md");
        let commands: Vec<&str> = readme
            .lines()
            .filter_map(|line| line.strip_prefix("cargo xtask "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert!(commands.contains(&"lab") && commands.contains(&"test"), "{commands:?}");
        for command in commands {
            let cli = Cli::try_parse_from(["cargo xtask", command]).expect("a README command parses");
            assert!(cli.task.needs_setup() || command == "setup", "`cargo xtask {command}` runs setup first");
        }
    }
}
