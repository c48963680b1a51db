//! `mhr check`: the kernel's own route lookups, per address (and connection).

use std::{io::Write, path::Path};

use super::Outcome;
use crate::check::CheckReport;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Also check that every established TCP connection leaves by the
    /// uplink that owns its local address.
    #[arg(long)]
    connections: bool,
}

pub fn run(config_path: &Path, args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    super::with_engine(config_path, out, async |engine, out| {
        let report = engine.check(args.connections).await?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            print_check(&report, out)?;
        }
        Ok(if report.passed() { Outcome::Success } else { Outcome::ChecksFailed })
    })
}

fn print_check(report: &CheckReport, out: &mut dyn Write) -> anyhow::Result<()> {
    for finding in &report.findings {
        if finding.ok {
            writeln!(out, "ok    {}: {}", finding.check, finding.observed)?;
        } else {
            writeln!(out, "FAIL  {}: {}", finding.check, finding.observed)?;
            writeln!(out, "      {}", finding.advice)?;
        }
    }
    let failed = report.findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        writeln!(out, "all {} checks passed", report.findings.len())?;
    } else {
        writeln!(out, "{failed} of {} checks failed", report.findings.len())?;
    }
    Ok(())
}
