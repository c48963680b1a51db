//! `mhr status`: uplinks as mhr sees them, and whether each object is in place.

use std::{io::Write, path::Path};

use super::Outcome;
use crate::status::Status;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these uplinks (default: all).
    #[arg(value_name = "UPLINK")]
    uplinks: Vec<String>,
    /// Print as JSON (with a schema `version`).
    #[arg(long, conflicts_with_all = ["brief", "fields"])]
    json: bool,
    /// Only the summary: a line per uplink, the daemon, a pending confirmation.
    #[arg(long, short = 'b')]
    brief: bool,
    /// Only these columns, tab-separated, no header, a line per uplink
    /// (uplink, role, state, since, active, loss, rtt, guard).
    #[arg(long, short = 'f', value_delimiter = ',', value_name = "FIELD,…")]
    fields: Vec<String>,
    /// Exit 1 when an uplink is unhealthy, missing or blocked, `apply`
    /// would change something, or `plan` would refuse (for monitoring).
    #[arg(long)]
    check: bool,
}

pub fn run(config_path: &Path, args: &StatusArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    super::with_engine(config_path, out, async |engine, out| {
        super::status_summary::check_fields(&args.fields)?;
        let status = engine.status().await?.only(&args.uplinks)?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
        } else if !args.fields.is_empty() {
            super::status_summary::print_fields(&status, &args.fields, out)?;
        } else {
            super::status_summary::print_summary(&status, out)?;
            if !args.brief {
                writeln!(out)?;
                print_status(&status, out)?;
            }
        }
        let attention = status.uplinks.iter().any(super::status_summary::needs_attention);
        let trouble = attention || !status.in_sync || !status.errors.is_empty();
        Ok(if args.check && trouble { Outcome::ChecksFailed } else { Outcome::Success })
    })
}

fn mark(present: bool) -> &'static str {
    if present { "ok     " } else { "MISSING" }
}

fn print_status(status: &Status, out: &mut dyn Write) -> anyhow::Result<()> {
    for uplink in &status.uplinks {
        if uplink.missing {
            let optional = if uplink.optional { " (optional: planned without it)" } else { "" };
            writeln!(out, "{}: MISSING, no such interface{optional}", uplink.interface)?;
            continue;
        }
        let role = if uplink.primary { ", primary" } else { "" };
        let state = match (uplink.up, uplink.carrier) {
            (false, _) => "DOWN",
            (true, false) => "up, NO CARRIER",
            (true, true) => "up",
        };
        writeln!(
            out,
            "{} (ifindex {}, {state}{role}), table {}",
            uplink.interface, uplink.index, uplink.table
        )?;
        writeln!(
            out,
            "  addresses: {}",
            if uplink.addresses.is_empty() { "none".into() } else { uplink.addresses.join(", ") }
        )?;
        for (family, gateway) in [("IPv4", &uplink.gateway4), ("IPv6", &uplink.gateway6)] {
            if let Some(gateway) = gateway {
                writeln!(out, "  {family} gateway: {} (from {})", gateway.gateway, gateway.learned_from)?;
            }
        }
        if let Some(reason) = &uplink.blocked {
            writeln!(out, "  BLOCKED, left as it is: {reason}")?;
        }
        if let Some(drain) = &uplink.drained {
            let time = crate::clock::rfc3339;
            let until = drain
                .until
                .map_or_else(|| "until `mhr undrain`".to_owned(), |t| format!("until {}", time(t)));
            writeln!(
                out,
                "  DRAINED since {} {until}: no main default, balanced flows or steering; table and from rules kept",
                time(drain.since)
            )?;
        }
        for health in &uplink.health {
            let state = match health.fault {
                None if health.healthy => match &health.degraded {
                    Some(reason) => format!("DEGRADED: {reason}"),
                    None => "healthy".to_owned(),
                },
                Some(fault) if health.healthy => format!("healthy ({fault}, not yet confirmed)"),
                Some(fault) => format!("UNHEALTHY: {fault}"),
                None => "UNHEALTHY: recovering".to_owned(),
            };
            let mut line = format!("  {} {state}", health.family);
            if let Some(since) = health.since {
                line += &format!(
                    ", since {}",
                    humantime::format_rfc3339_seconds(crate::clock::system_time(since))
                );
            }
            if let Some(loss) = health.probe_loss {
                line += &format!(", probe loss {:.0}%", loss * 100.0);
            }
            if let Some(rtt) = health.probe_rtt_seconds {
                line += &format!(", rtt {:.1} ms", rtt * 1000.0);
            }
            if health.active {
                line += ", holds main's default";
            }
            writeln!(out, "{line} [{}]", health.judged_by)?;
            for target in &health.targets {
                writeln!(out, "    probe {}", target_line(target))?;
            }
        }
        for object in uplink.rules.iter().chain(&uplink.routes) {
            writeln!(out, "  {} {}", mark(object.present), object.object)?;
        }
    }
    for (family, uplinks) in &status.active {
        writeln!(out, "main's {family} default: {}", uplinks.join(" + "))?;
    }
    for steering in &status.steering {
        let target = steering.uplink.as_deref().unwrap_or("withdrawn (no usable uplink): main's default");
        writeln!(out, "rule #{} ({}): {target}", steering.rule, steering.family)?;
    }
    for rule in &status.default_rules {
        writeln!(out, "  {} {}", mark(rule.present), rule.object)?;
    }
    match &status.guard {
        None => writeln!(out, "guard: not installed")?,
        Some(guard) => {
            for uplink in &guard.uplinks {
                let attached = match uplink.attachment {
                    Some(mechanism) => format!("attached via {mechanism}"),
                    None => "NOT attached".to_owned(),
                };
                writeln!(out, "guard on {} ({attached}, {} mode):", uplink.interface, uplink.mode)?;
                let verdicts: Vec<String> =
                    uplink.verdicts.iter().map(|(name, count)| format!("{name} {}", count.packets)).collect();
                writeln!(out, "  packets: {}", verdicts.join(", "))?;
                let e = &uplink.events;
                writeln!(
                    out,
                    "  dropped {}, flags emitted {}, suppressed {}, errors {}",
                    e.dropped, e.flags_emitted, e.flags_suppressed, e.errors
                )?;
            }
            if !guard.top_offenders.is_empty() {
                writeln!(out, "top offenders:")?;
                for offender in &guard.top_offenders {
                    writeln!(
                        out,
                        "  {} {} {} packets {} bytes {}",
                        offender.uplink, offender.source, offender.verdict, offender.packets, offender.bytes
                    )?;
                }
            }
        }
    }
    for note in &status.notes {
        writeln!(out, "note: {note}")?;
    }
    if !status.errors.is_empty() {
        writeln!(out, "NOT ready: `mhr plan` and `mhr apply` refuse (see the errors above)")?;
    } else if status.in_sync {
        writeln!(out, "in sync: apply would change nothing")?;
    } else {
        writeln!(out, "NOT in sync; `mhr apply` would:")?;
        for pending in &status.pending {
            writeln!(out, "  {pending}")?;
        }
    }
    Ok(())
}

/// One probe target: whether it answered last, its loss, RTT and jitter over the window.
fn target_line(target: &crate::health::targets::TargetStats) -> String {
    let answered = if target.answered { "answering" } else { "NOT ANSWERING" };
    let mut line = format!("{} {answered}, loss {:.0}%", target.target, target.loss * 100.0);
    if let Some(rtt) = target.rtt_seconds {
        line += &format!(", rtt {:.1} ms", rtt * 1000.0);
    }
    if let Some(jitter) = target.jitter_seconds {
        line += &format!(", jitter {:.1} ms", jitter * 1000.0);
    }
    line
}
