//! `mhr monitor`: attach, print counters periodically, detach on exit.

use std::{io::Write, time::Duration};

use crate::guard::{
    counter::{EgressCounter, InterfaceReport},
    tc::AttachMode,
};
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// Interface to attach to (repeat for several uplinks).
    #[arg(short, long = "interface", value_name = "IFACE", required = true)]
    interfaces: Vec<String>,
    /// How to attach: TCX with clsact fallback, or force one.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    attach: AttachMode,
    /// Time between counter printouts (e.g. 1s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    interval: Duration,
    /// Stop after this long instead of waiting for a signal.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

pub fn run(args: &MonitorArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be greater than zero");
    }
    let mut monitor = EgressCounter::load()?;
    for interface in &args.interfaces {
        let attachment = monitor.attach(interface, args.attach)?;
        writeln!(
            out,
            "attached {} (ifindex {}) via {}",
            attachment.interface, attachment.ifindex, attachment.mechanism
        )?;
    }
    writeln!(out, "monitoring; Ctrl-C to stop")?;
    out.flush().context("writing the output")?;

    let runtime = super::runtime()?;
    runtime.block_on(watch(&monitor, args.interval, args.duration, out))?;
    print_reports(&monitor.reports()?, "final", out)?;
    Ok(())
}

async fn watch(
    monitor: &EgressCounter,
    interval: Duration,
    duration: Option<Duration>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticks.tick() => print_reports(&monitor.reports()?, "counters", out)?,
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            () = &mut deadline, if duration.is_some() => return Ok(()),
        }
    }
}

fn print_reports(reports: &[InterfaceReport], heading: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "{heading}:")?;
    writeln!(
        out,
        "  {:<16} {:>8} {:>7} {:>12} {:>14}",
        "interface", "ifindex", "attach", "packets", "bytes"
    )?;
    for report in reports {
        let a = &report.attachment;
        writeln!(
            out,
            "  {:<16} {:>8} {:>7} {:>12} {:>14}",
            a.interface, a.ifindex, a.mechanism, report.counters.packets, report.counters.bytes
        )?;
    }
    out.flush()?;
    Ok(())
}
