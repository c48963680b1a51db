//! `cargo xtask bench`: figures, never pass/fail. Every figure comes with a
//! baseline measured in the same run, reported as a ratio, because these
//! machines are shared and noisy.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use mhr_tests::{TempDir, many_uplinks::ManyUplinks};

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Uplinks on the routing benchmark's host.
    #[arg(long, default_value_t = 32)]
    uplinks: usize,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the benchmarks build network namespaces: run them as root");
    }
    if args.rounds == 0 || args.uplinks < 2 {
        bail!("--rounds must be at least 1 and --uplinks at least 2");
    }
    println!("== building mhr (release)");
    cmd::run(cmd::cargo().args(["build", "--release", "--package", "mhr-userspace", "--bin", "mhr"]))?;
    let mhr = cmd::workspace_root().join("target/release/mhr");
    // The guard's nanosecond figures first: tearing down the routing
    // benchmark's many namespaces keeps the kernel busy for a while after.
    // They and the daemon's come from bench targets that use the library
    // in-process (BPF_PROG_TEST_RUN, netlink probes).
    cmd::run(cmd::cargo().args(["bench", "--package", "mhr-tests", "--bench", "guard"]))?;
    for bench in ["daemon", "rules", "foreign", "coexistence", "balance", "probes", "steer", "passive"] {
        cmd::run(
            cmd::cargo().args(["bench", "--package", "mhr-tests", "--bench", bench]).env("MHR_BIN", &mhr),
        )?;
    }
    println!();
    routing(&mhr, args)
}

/// One round's wall times.
#[derive(Default)]
struct Round {
    apply: Duration,
    noop: Duration,
    guard_attach: Duration,
    guard_replace: Duration,
    down_routing: Duration,
    down: Duration,
    batch_apply: Duration,
    dumps: Duration,
    batch_down: Duration,
    changes: usize,
}

/// apply / no-op apply / down on a host with many uplinks, each next to
/// iproute2 doing the same work: `ip -batch` of the commands `mhr plan
/// --format ip` prints (and their inverse), and the four `ip … show`
/// dumps a no-op run must read.
fn routing(mhr: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    const V4: usize = 3;
    const V6: usize = 2;
    println!(
        "\n== routing: {} uplinks × ({V4} IPv4 + {V6} IPv6 addresses), {} rounds",
        args.uplinks, args.rounds
    );
    let mut rounds = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        rounds.push(routing_round(mhr, args.uplinks, V4, V6)?);
    }
    let changes = rounds[0].changes;
    let median = |pick: fn(&Round) -> Duration| {
        let mut values: Vec<Duration> = rounds.iter().map(pick).collect();
        values.sort();
        values[values.len() / 2]
    };
    let rows = [
        ("first apply", median(|r| r.apply), "ip -4/-6 -batch (same)", median(|r| r.batch_apply)),
        ("no-op apply", median(|r| r.noop), "ip rule/route show ×4", median(|r| r.dumps)),
        ("down", median(|r| r.down_routing), "ip -4/-6 -batch (inverse)", median(|r| r.batch_down)),
        ("down + guard", median(|r| r.down), "ip -4/-6 -batch (inverse)", median(|r| r.batch_down)),
        ("guard attach", median(|r| r.guard_attach), "no-op apply --no-guard", median(|r| r.noop)),
        ("guard replace", median(|r| r.guard_replace), "no-op apply --no-guard", median(|r| r.noop)),
    ];
    println!("   {changes} changes; medians, wall time including process start:");
    for (name, ours, baseline_name, baseline) in rows {
        println!(
            "   {name:<13} mhr {:>8.1} ms   {baseline_name:<26} {:>8.1} ms   ratio {:.2}",
            ms(ours),
            ms(baseline),
            ours.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn timed(mut command: Command) -> anyhow::Result<(Duration, String)> {
    let shown = cmd::describe(&command);
    let start = Instant::now();
    let output = command.output().with_context(|| format!("running `{shown}`"))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!("`{shown}` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok((elapsed, String::from_utf8_lossy(&output.stdout).into_owned()))
}

fn routing_round(mhr: &Path, uplinks: usize, v4: usize, v6: usize) -> anyhow::Result<Round> {
    let mut round = Round::default();
    let dir = TempDir::new("bench")?;

    // mhr on a fresh host.
    let host = ManyUplinks::start(uplinks, v4, v6)?;
    let config = write_config(&dir, &host)?;
    let mhr_command = |args: &[&str]| {
        let mut command = host.host.command(mhr);
        command.arg("--config").arg(&config).args(args);
        command
    };
    let (_, plan) = timed(mhr_command(&["plan", "--format", "ip"]))?;
    // Routing alone; then the same no-op with the guard, whose cost is
    // loading the program (the kernel's verifier) and replacing its links.
    round.apply = timed(mhr_command(&["apply", "--no-guard"]))?.0;
    round.noop = timed(mhr_command(&["apply", "--no-guard"]))?.0;
    round.down_routing = timed(mhr_command(&["down"]))?.0;
    timed(mhr_command(&["apply", "--no-guard"]))?;
    round.guard_attach = timed(mhr_command(&["apply"]))?.0;
    round.guard_replace = timed(mhr_command(&["apply"]))?.0;
    round.down = timed(mhr_command(&["down"]))?.0;
    drop(host);

    // iproute2 doing the same on another fresh host.
    let host = ManyUplinks::start(uplinks, v4, v6)?;
    // `ip -batch` takes no per-line family flag: one batch per family.
    let commands: Vec<(String, String)> = plan
        .lines()
        .filter_map(|line| line.strip_prefix("ip "))
        .filter(|line| !line.contains("flush cache"))
        .filter_map(|line| line.split_once(' '))
        .map(|(family, rest)| (family.to_owned(), rest.to_owned()))
        .collect();
    round.changes = commands.len();
    let batches = |lines: &[(String, String)]| -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for family in ["-4", "-6"] {
            let input: String =
                lines.iter().filter(|(f, _)| f == family).map(|(_, l)| format!("{l}\n")).collect();
            let mut command = host.host.command("ip");
            command.args([family, "-batch", "-"]);
            total += timed_with_input(command, &input)?;
        }
        Ok(total)
    };
    round.batch_apply = batches(&commands)?;
    let mut dumps = Duration::ZERO;
    for family in ["-4", "-6"] {
        for object in [&["rule", "show"][..], &["route", "show", "table", "all"][..]] {
            let mut command = host.host.command("ip");
            command.arg(family).args(object);
            dumps += timed(command)?.0;
        }
    }
    round.dumps = dumps;
    let inverse: Vec<(String, String)> =
        commands.iter().rev().map(|(family, line)| (family.clone(), invert(line))).collect();
    round.batch_down = batches(&inverse)?;
    Ok(round)
}

/// `route add …` ↔ `route del …`.
fn invert(line: &str) -> String {
    if let Some((object, rest)) = line.split_once(" add ") {
        format!("{object} del {rest}")
    } else if let Some((object, rest)) = line.split_once(" del ") {
        format!("{object} add {rest}")
    } else {
        line.to_owned()
    }
}

fn timed_with_input(mut command: Command, input: &str) -> anyhow::Result<Duration> {
    use std::{io::Write as _, process::Stdio};

    let shown = cmd::describe(&command);
    command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting `{shown}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).with_context(|| format!("feeding `{shown}`"))?;
    }
    let output = child.wait_with_output().with_context(|| format!("waiting for `{shown}`"))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!("`{shown}` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(elapsed)
}

fn write_config(dir: &TempDir, host: &ManyUplinks) -> anyhow::Result<PathBuf> {
    let path = dir.path().join("mhr.toml");
    std::fs::write(&path, host.mhr_config(dir.path())).context("writing the bench config")?;
    Ok(path)
}
