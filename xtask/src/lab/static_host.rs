//! The lab's second host: configured statically, as networkd's and
//! netplan's `Gateway=`, ifupdown's `gateway` or dhclient-script leave it,
//! with one default route in main at metric 0. mhr applies there (it used
//! to refuse), and a silent upstream (the primary's router loses its
//! internet side; link, carrier and gateway stay fine) fails over by
//! probes, then back; `mhr down` leaves main's default as it was.

use std::{net::IpAddr, path::Path, process::Stdio};

use anyhow::{Context as _, bail};
use mhr_tests::{
    SeedLab, TempDir, probe,
    seed_lab::{CLIENT, CLIENT6, routing_section},
};

use super::{
    Mhr, PROBE_TIMEOUT,
    demos::{main_default, print_defaults, wait_for},
    http_get, verdict,
};

pub(super) fn static_host_demo(binary: &Path) -> anyhow::Result<()> {
    let lab = SeedLab::start().context("building the static lab")?;
    let [primary, backup] = lab.uplinks() else { bail!("the seed lab has two uplinks") };
    for uplink in [primary, backup] {
        lab.host.ip(["-4", "route", "del", "default", "via", &uplink.gateway.to_string()])?;
    }
    let gateway = primary.gateway.to_string();
    lab.host.ip(["-4", "route", "add", "default", "via", &gateway, "dev", primary.interface])?;
    println!("$ ip -4 route show default   # the host's manager: one default, metric 0");
    for line in lab.host.ip(["-4", "route", "show", "default"])?.lines() {
        println!("   | {line}");
    }
    let dir = TempDir::new("lab-static")?;
    let config = dir.path().join("mhr.toml");
    let text = format!(
        "[[uplink]]\ninterface = \"{}\"\nprimary = true\nprobe = [\"{CLIENT}\", \"{CLIENT6}\"]\n\n[[uplink]]\ninterface = \"{}\"\ngateway = \"{}\"   # a static host names it: no route does\nprobe = [\"{CLIENT}\", \"{CLIENT6}\"]\n\n[health]\ninterval = \"500ms\"\ntimeout = \"500ms\"\ndown_after = 3\nup_after = 3\n\n{}",
        primary.interface,
        backup.interface,
        backup.gateway,
        routing_section(dir.path())
    );
    std::fs::write(&config, text).context("writing the static host's config")?;
    let mhr = Mhr { binary: binary.to_owned(), config };
    if !mhr.show(&lab, &["apply", "--no-guard"])? {
        bail!("mhr apply failed on the static host");
    }
    let mut daemon = mhr.command(&lab, &["run", "--no-guard"]);
    daemon.stdout(Stdio::null()).stderr(Stdio::null());
    println!("$ mhr run &");
    let mut child = daemon.spawn().context("starting mhr run")?;
    let result = (|| -> anyhow::Result<()> {
        wait_for(
            || http_get(&lab, "/healthz").is_some_and(|(code, _)| code == 200),
            "the daemon's first reconcile",
        )?;
        println!(
            "$ nft add table inet mhr_lab_block …   # in {}'s router: it forwards nothing more (its internet side is lost)",
            primary.interface
        );
        let start = std::time::Instant::now();
        lab.silence_upstream(0)?;
        wait_for(
            || main_default(&lab, "-4") == backup.interface && main_default(&lab, "-6") == backup.interface,
            "the failover",
        )?;
        let took = start.elapsed();
        let reached = probe::ping(&lab.host, IpAddr::V4(CLIENT), PROBE_TIMEOUT)?;
        println!(
            "   IPv4 and IPv6 host traffic failed over to {} in {} ms (3 failed probe rounds of 500 ms); the host reaches {CLIENT}: {}",
            backup.interface,
            took.as_millis(),
            verdict(reached)
        );
        print_defaults(&lab);
        println!("$ nft delete table inet mhr_lab_block   # the upstream is back");
        let start = std::time::Instant::now();
        lab.restore_upstream(0)?;
        wait_for(
            || main_default(&lab, "-4") == primary.interface && main_default(&lab, "-6") == primary.interface,
            "the fail-back",
        )?;
        println!("   back on {} after {} ms (3 good rounds)", primary.interface, start.elapsed().as_millis());
        Ok(())
    })();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap_or(0), libc::SIGTERM) };
    child.wait().context("waiting for mhr run")?;
    result?;
    mhr.show(&lab, &["down"])?;
    println!("$ ip -4 route show default   # as the host's manager made it");
    for line in lab.host.ip(["-4", "route", "show", "default"])?.lines() {
        println!("   | {line}");
    }
    Ok(())
}
