//! The lab's daemon demos: drift put back, a failover and fail-back, and a
//! safe change that undoes itself.

use std::{net::IpAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use mhr_tests::{SeedLab, probe, seed_lab::CLIENT};

use super::{METRICS_PORT, Mhr, PROBE_TIMEOUT, http_get, verdict};

/// Runs `mhr run`, removes one of its rules by hand, shows it restored and
/// a metrics excerpt, and stops the daemon (routing and guard stay).
pub(super) fn daemon_demo(lab: &SeedLab, mhr: &Mhr) -> anyhow::Result<()> {
    let mut daemon = mhr.command(lab, &["run"]);
    daemon.stdout(Stdio::null()).stderr(Stdio::null());
    println!("$ mhr run &");
    let mut child = daemon.spawn().context("starting mhr run")?;
    let result = (|| -> anyhow::Result<()> {
        wait_for(
            || http_get(lab, "/healthz").is_some_and(|(code, _)| code == 200),
            "the daemon's first reconcile",
        )?;
        let [_, secondary] = lab.uplinks() else { bail!("the seed lab has two uplinks") };
        // mhr's rule covers the secondary's whole connected prefix.
        let mask = u32::MAX.checked_shl(32 - u32::from(secondary.prefix_len)).unwrap_or(0);
        let network = std::net::Ipv4Addr::from(u32::from(secondary.address) & mask);
        let prefix = format!("{network}/{}", secondary.prefix_len);
        let rule = ["rule", "del", "from", &prefix, "lookup", "7101", "priority", "7103"];
        println!("$ ip {}   # drift: someone deletes one of mhr's rules", rule.join(" "));
        lab.host.ip(rule)?;
        let needle = format!("from {prefix} lookup 7101");
        wait_for(
            || lab.host.ip(["rule"]).is_ok_and(|rules| rules.contains(&needle)),
            "the rule to come back",
        )?;
        println!("   the daemon put `{needle}` back");
        failover_demo(lab)?;
        let (_, metrics) = http_get(lab, "/metrics").context("scraping /metrics")?;
        println!("$ curl -s 127.0.0.1:{METRICS_PORT}/metrics   # excerpt");
        let interesting = [
            "mhr_reconciles_total",
            "mhr_drift_corrections_total",
            "mhr_host_changes_total",
            "mhr_guard_attached",
            "mhr_uplink_healthy",
            "mhr_uplink_active",
            "mhr_failovers_total",
        ];
        for line in metrics.lines() {
            let guard_traffic = line.starts_with("mhr_guard_packets_total")
                && !line.ends_with(" 0")
                && (line.contains("spoofed") || line.contains("asymmetric") || line.contains("\"ok\""));
            let zero_change =
                line.ends_with(" 0") && (line.starts_with("mhr_drift") || line.starts_with("mhr_host"));
            if guard_traffic || (interesting.iter().any(|name| line.starts_with(name)) && !zero_change) {
                println!("   | {line}");
            }
        }
        Ok(())
    })();
    // SIGTERM: the daemon stops and leaves routing and the guard in place.
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait().context("waiting for mhr run")?;
    println!("   mhr run stopped (SIGTERM); routing and the pinned guard stay in place");
    result
}

/// A change that makes ens4 the primary, applied with `--confirm 3s` and
/// never confirmed (as if the SSH session died): the host goes back.
pub(super) fn safe_apply_demo(lab: &SeedLab, mhr: &Mhr, dir: &Path) -> anyhow::Result<()> {
    let [primary, secondary] = lab.uplinks() else { bail!("the seed lab has two uplinks") };
    let text = std::fs::read_to_string(&mhr.config).context("reading the lab's config")?;
    let swapped = text.replacen("primary = true\n", "", 1).replacen(
        &format!("interface = \"{}\"\n", secondary.interface),
        &format!("interface = \"{}\"\nprimary = true\n", secondary.interface),
        1,
    );
    let trial = Mhr { binary: mhr.binary.clone(), config: dir.join("mhr-trial.toml") };
    std::fs::write(&trial.config, swapped).context("writing the trial config")?;
    println!("   the trial config makes {} the primary", secondary.interface);
    let start = std::time::Instant::now();
    let mut command = trial.command(lab, &["apply", "--no-guard", "--confirm", "3s"]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    println!("$ mhr apply --no-guard --confirm 3s   # then nobody confirms: the session is gone");
    let child = command.spawn().context("starting mhr apply --confirm")?;
    wait_for(|| main_default(lab, "-4") == secondary.interface, "the trial change")?;
    println!("   main's default is on {} now:", secondary.interface);
    print_defaults(lab);
    let output = child.wait_with_output().context("waiting for mhr apply --confirm")?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("   | {line}");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("   ! {line}");
    }
    println!(
        "   after {:.1} s, exit {}: the guardian restored the state before the change",
        start.elapsed().as_secs_f64(),
        output.status.code().unwrap_or(-1)
    );
    wait_for(|| main_default(lab, "-4") == primary.interface, "the rollback")?;
    print_defaults(lab);
    Ok(())
}

/// An off-link destination: `ip route get` of it shows the way host traffic takes.
pub(super) fn probe_target(family: &str) -> &'static str {
    if family == "-6" { "2001:db8:ffff::1" } else { "203.0.113.1" }
}

/// The interface host traffic leaves by (`-4`/`-6`), as the kernel's lookup says.
pub(super) fn main_default(lab: &SeedLab, family: &str) -> String {
    let routes = lab.host.ip([family, "route", "get", probe_target(family)]).unwrap_or_default();
    routes.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("none").to_owned()
}

/// The primary uplink dies and comes back while `mhr run` runs.
fn failover_demo(lab: &SeedLab) -> anyhow::Result<()> {
    let [primary, secondary] = lab.uplinks() else { bail!("the seed lab has two uplinks") };
    println!(
        "$ ip route show default table all   # dhcpcd's and the RAs' defaults stay in main; mhr's choice sits in table 7199, looked up before main's defaults"
    );
    print_defaults(lab);
    println!("$ ip link set {} down   # the primary uplink dies", primary.interface);
    let start = std::time::Instant::now();
    lab.host.ip(["link", "set", primary.interface, "down"])?;
    wait_for(
        || main_default(lab, "-4") == secondary.interface && main_default(lab, "-6") == secondary.interface,
        "main's default to fail over",
    )?;
    let took = start.elapsed();
    let reached = probe::ping(&lab.host, IpAddr::V4(CLIENT), PROBE_TIMEOUT)?;
    println!(
        "   main's IPv4 and IPv6 default moved to {} in {} ms; the host reaches {CLIENT}: {}",
        secondary.interface,
        took.as_millis(),
        verdict(reached)
    );
    print_defaults(lab);
    println!(
        "$ ip link set {} up   # it comes back; dhcpcd and the RA add its defaults again",
        primary.interface
    );
    lab.host.ip(["link", "set", primary.interface, "up"])?;
    let start = std::time::Instant::now();
    wait_for(
        || main_default(lab, "-4") == primary.interface && main_default(lab, "-6") == primary.interface,
        "main's default to fail back",
    )?;
    println!(
        "   back on {} after {} ms: up_after (5) good health rounds, so a flapping link cannot flap main",
        primary.interface,
        start.elapsed().as_millis()
    );
    print_defaults(lab);
    Ok(())
}

/// The lab host's IPv4 and IPv6 default routes (main's and mhr's) and
/// the way host traffic takes.
pub(super) fn print_defaults(lab: &SeedLab) {
    for family in ["-4", "-6"] {
        let defaults = lab.host.ip([family, "route", "show", "default", "table", "all"]).unwrap_or_default();
        for line in defaults.lines().filter(|l| !l.contains("table") || l.contains("table 7199")) {
            println!("   | {line}");
        }
        let way = main_default(lab, family);
        println!("   host traffic ({family}) leaves by {way}");
    }
}

/// Polls `done` for up to ten seconds.
pub(super) fn wait_for(mut done: impl FnMut() -> bool, what: &str) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
