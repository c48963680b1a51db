//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` (the guard's
//! packet parser, the config loader) for a while each. Optional, like
//! `mutants`: it installs cargo-fuzz on first use and builds with the
//! nightly and AddressSanitizer. New inputs go to target/fuzz-corpus; the
//! committed seeds in fuzz/seeds stay as they are. A crash fails the task
//! and leaves its input in fuzz/artifacts.

use anyhow::Context as _;

use crate::cmd;

const CARGO_FUZZ_VERSION: &str = "0.13";
const TARGETS: [&str; 2] = ["packet", "config"];

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    cmd::ensure_cargo_tool("cargo-fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION)?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    let root = cmd::workspace_root();
    for target in targets {
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        println!("\n== fuzzing {target} for {} s", args.seconds);
        cmd::run(
            cmd::nightly_cargo()?
                .current_dir(root.join("fuzz"))
                .args(["fuzz", "run", target])
                .arg(&corpus)
                .arg(root.join("fuzz/seeds").join(target))
                .arg("--")
                .arg(format!("-max_total_time={}", args.seconds))
                // The config target links mhr-userspace, whose build script
                // would build the eBPF objects; the fuzz targets load none.
                .env("AYA_BUILD_SKIP", "1"),
        )
        .with_context(|| format!("fuzz target {target} failed; its input is in fuzz/artifacts/{target}"))?;
    }
    Ok(())
}
