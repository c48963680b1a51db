//! `mhr drain` and `mhr undrain`: take an uplink out of use for
//! maintenance and put it back (see [`crate::drain`]). Only a state file
//! changes: a running daemon acts on it at its next health round; without
//! one, `mhr apply` does.

use std::{io::Write, path::Path, time::Duration};

use anyhow::{Context as _, bail};

use super::Outcome;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The uplink's interface, as in the config.
    pub uplink: String,
    /// End the drain by itself after this long (`30m`, `2h`); default:
    /// until `mhr undrain`.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    /// The uplink's interface, as in the config.
    pub uplink: String,
}

fn configured(config: &Config, uplink: &str) -> anyhow::Result<()> {
    if config.uplinks.iter().any(|u| u.interface == uplink) {
        return Ok(());
    }
    let names: Vec<&str> = config.uplinks.iter().map(|u| u.interface.as_str()).collect();
    bail!("{uplink} is not a configured uplink (uplinks: {}); nothing changed", names.join(", "))
}

/// What happens next, with or without a daemon.
fn next_step(config: &Config) -> &'static str {
    let daemon =
        crate::state::read_health::<crate::health::snapshot::HealthSnapshot>(&config.routing.state_dir)
            .is_ok_and(|s| {
                s.written + config.health.interval.as_secs() * 3 + 3 >= crate::clock::unix_seconds()
            });
    if daemon {
        "the running daemon acts on it at its next health round"
    } else {
        "no running daemon: `mhr apply` acts on it"
    }
}

/// Longer drains are refused: they are meant to end (undrain ends any).
const MAX_DRAIN: Duration = Duration::from_secs(366 * 24 * 3600);

pub fn drain(config_path: &Path, args: &DrainArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if let Some(duration) = args.duration.filter(|d| *d > MAX_DRAIN || d.is_zero()) {
        bail!(
            "--for {}: a drain lasts from 1s to a year (without --for it lasts until `mhr undrain`); nothing changed",
            humantime::format_duration(duration)
        );
    }
    let config = Config::load(config_path)?;
    configured(&config, &args.uplink)?;
    let state_dir = &config.routing.state_dir;
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let now = crate::clock::unix_seconds();
    let drain = crate::drain::drain(state_dir, &args.uplink, now, args.duration)?;
    let until = drain.until.map_or_else(
        || "until `mhr undrain`".to_owned(),
        |until| format!("until {}", crate::clock::rfc3339(until)),
    );
    writeln!(
        out,
        "{} drained {until}: it carries no main default, balanced flows or steering rules; its table and from rules stay ({})",
        args.uplink,
        next_step(&config)
    )?;
    Ok(Outcome::Success)
}

pub fn undrain(config_path: &Path, args: &UndrainArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let config = Config::load(config_path)?;
    configured(&config, &args.uplink)?;
    let was = crate::drain::undrain(&config.routing.state_dir, &args.uplink, crate::clock::unix_seconds())?;
    if was {
        writeln!(
            out,
            "{} undrained: back in use as its health allows ({})",
            args.uplink,
            next_step(&config)
        )?;
    } else {
        writeln!(out, "{} was not drained: nothing changed", args.uplink)?;
    }
    Ok(Outcome::Success)
}
