//! `mhr watch`: the guard's flagged packets as log lines.

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    config::Config,
    guard::{GuardMaps, flags::FlaggedPacket},
};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Stop after this many flagged packets.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print flagged packets as JSON lines.
    #[arg(long)]
    json: bool,
}

const POLL: Duration = Duration::from_millis(50);
const SUPPRESSED_EVERY: Duration = Duration::from_secs(1);

pub fn run(config_path: &Path, args: &WatchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let pin_dir = &config.guard.pin_dir;
    let Some(maps) = GuardMaps::from_pins(pin_dir)? else {
        bail!("no guard is installed under {} (run `mhr apply` first)", pin_dir.display());
    };
    let mut ring = GuardMaps::flags_from_pins(pin_dir)?;
    let names = maps.slot_names()?;
    let mut suppressed = suppressed_by_uplink(&maps, &names)?;
    let started = Instant::now();
    let mut last_suppressed_check = started;
    let mut seen = 0u64;
    loop {
        while let Some(item) = ring.next() {
            let Some(packet) = FlaggedPacket::decode(&item, &names) else { continue };
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&packet)?)?;
            } else {
                writeln!(out, "flagged {packet}")?;
            }
            seen += 1;
            if args.count.is_some_and(|limit| seen >= limit) {
                return Ok(());
            }
        }
        if last_suppressed_check.elapsed() >= SUPPRESSED_EVERY {
            last_suppressed_check = Instant::now();
            let now = suppressed_by_uplink(&maps, &names)?;
            for (uplink, total) in &now {
                let before = suppressed.get(uplink).copied().unwrap_or(0);
                if *total > before {
                    writeln!(out, "suppressed uplink={uplink} count={} total={total}", total - before)?;
                }
            }
            suppressed = now;
        }
        out.flush().context("writing the output")?;
        if args.duration.is_some_and(|limit| started.elapsed() >= limit) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn suppressed_by_uplink(
    maps: &GuardMaps,
    names: &BTreeMap<u32, String>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    names.iter().map(|(slot, name)| Ok((name.clone(), maps.event_counts(*slot)?.flags_suppressed))).collect()
}
