//! `mhr status`'s summary: one line per uplink (as `mwan3 status` and
//! `nmcli device` give), the daemon and a pending confirmation, and the
//! terse field output scripts read.

use std::io::Write;

use crate::status::{Status, UplinkStatus};

/// The summary's columns, in order; `--fields` picks from them.
pub const FIELDS: [&str; 9] =
    ["uplink", "role", "state", "since", "active", "probes", "loss", "rtt", "guard"];

/// Whether an uplink is in a state an operator should look at: missing
/// (unless optional), blocked, or unhealthy in a family.
pub fn needs_attention(uplink: &UplinkStatus) -> bool {
    (uplink.missing && !uplink.optional)
        || uplink.blocked.is_some()
        || uplink.health.iter().any(|h| !h.healthy)
}

/// The value of `field` for `uplink`.
fn value(status: &Status, uplink: &UplinkStatus, field: &str) -> String {
    let dash = || "-".to_owned();
    match field {
        "uplink" => uplink.interface.clone(),
        "role" => match (uplink.primary, uplink.optional) {
            (true, _) => "primary".to_owned(),
            (false, true) => "backup, optional".to_owned(),
            (false, false) => "backup".to_owned(),
        },
        "state" => state(uplink),
        "since" => uplink.health.iter().filter_map(|h| h.since).max().map_or_else(dash, |since| {
            humantime::format_rfc3339_seconds(crate::clock::system_time(since)).to_string()
        }),
        "active" => {
            let families: Vec<&str> = uplink
                .health
                .iter()
                .filter(|h| h.active)
                .map(|h| match h.family {
                    crate::model::Family::V4 => "ipv4",
                    crate::model::Family::V6 => "ipv6",
                })
                .collect();
            if families.is_empty() { dash() } else { families.join(",") }
        }
        "probes" => {
            let targets: Vec<_> = uplink.health.iter().flat_map(|h| &h.targets).collect();
            if targets.is_empty() {
                dash()
            } else {
                format!("{}/{}", targets.iter().filter(|t| t.answered).count(), targets.len())
            }
        }
        "loss" => worst(uplink, |h| h.probe_loss).map_or_else(dash, |loss| format!("{:.0}%", loss * 100.0)),
        "rtt" => {
            worst(uplink, |h| h.probe_rtt_seconds).map_or_else(dash, |rtt| format!("{:.1}ms", rtt * 1000.0))
        }
        "guard" => guard(status, &uplink.interface),
        _ => dash(),
    }
}

fn worst(uplink: &UplinkStatus, figure: impl Fn(&crate::status::FamilyStatus) -> Option<f64>) -> Option<f64> {
    uplink.health.iter().filter_map(figure).reduce(f64::max)
}

fn state(uplink: &UplinkStatus) -> String {
    if uplink.missing {
        return "MISSING".to_owned();
    }
    if uplink.blocked.is_some() {
        return "BLOCKED".to_owned();
    }
    if uplink.drained.is_some() {
        return "DRAINED".to_owned();
    }
    if !uplink.up {
        return "DOWN".to_owned();
    }
    let sick: Vec<String> = uplink
        .health
        .iter()
        .filter(|h| !h.healthy)
        .map(|h| {
            format!("{}: {}", h.family, h.fault.map_or("recovering".to_owned(), |f| f.name().to_owned()))
        })
        .collect();
    if !sick.is_empty() {
        return format!("UNHEALTHY ({})", sick.join(", "));
    }
    let degraded: Vec<String> =
        uplink.health.iter().filter(|h| h.degraded.is_some()).map(|h| h.family.to_string()).collect();
    if degraded.is_empty() { "healthy".to_owned() } else { format!("DEGRADED ({})", degraded.join(", ")) }
}

fn guard(status: &Status, interface: &str) -> String {
    let Some(guard) = &status.guard else { return "-".to_owned() };
    let Some(uplink) = guard.uplinks.iter().find(|u| u.interface == interface) else { return "-".to_owned() };
    let spoofed = uplink.verdicts.get("spoofed").map_or(0, |c| c.packets);
    let attached = if uplink.attached { "" } else { ", NOT attached" };
    format!("{}{attached}, {spoofed} spoofed", uplink.mode)
}

/// The table: a header, a line per uplink, the daemon and a pending
/// confirmation.
pub fn print_summary(status: &Status, out: &mut dyn Write) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = status
        .uplinks
        .iter()
        .map(|uplink| FIELDS.iter().map(|field| value(status, uplink, field)).collect())
        .collect();
    let header: Vec<String> = FIELDS.iter().map(|f| f.to_uppercase()).collect();
    let widths: Vec<usize> = (0..FIELDS.len())
        .map(|column| rows.iter().chain([&header]).map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    let daemon = match (status.daemon.running, status.daemon.pid) {
        (true, Some(pid)) => format!("running (pid {pid})"),
        _ => "not running (no fresh health view)".to_owned(),
    };
    writeln!(out, "daemon: {daemon}")?;
    if let Some(error) = &status.daemon.guard_error {
        writeln!(out, "guard: NOT running in the daemon (retried with backoff): {error}")?;
    }
    if let Some(pending) = &status.confirmation {
        writeln!(
            out,
            "PENDING CONFIRMATION: the change from {} is rolled back at {} unless `mhr confirm`",
            pending.config_path,
            humantime::format_rfc3339_seconds(crate::clock::system_time(pending.deadline))
        )?;
    }
    if let Some(path) = &status.rolled_back {
        writeln!(
            out,
            "ROLLED BACK: {path}'s change was not confirmed; `mhr run` does not use it until applied again"
        )?;
    }
    for error in &status.errors {
        writeln!(out, "error: {error}")?;
    }
    Ok(())
}

/// `--fields a,b`: the values only, tab-separated, a line per uplink.
pub fn print_fields(status: &Status, fields: &[String], out: &mut dyn Write) -> anyhow::Result<()> {
    for uplink in &status.uplinks {
        let values: Vec<String> = fields.iter().map(|field| value(status, uplink, field)).collect();
        writeln!(out, "{}", values.join("\t"))?;
    }
    Ok(())
}

/// A `--fields` word that is not a column.
#[derive(Debug, thiserror::Error)]
#[error("unknown field `{field}`; the fields are {}", FIELDS.join(", "))]
pub struct UnknownField {
    pub field: String,
}

/// Refuses a field that is not a column, naming the allowed ones.
pub fn check_fields(fields: &[String]) -> Result<(), UnknownField> {
    match fields.iter().find(|f| !FIELDS.contains(&f.as_str())) {
        Some(unknown) => Err(UnknownField { field: unknown.clone() }),
        None => Ok(()),
    }
}
