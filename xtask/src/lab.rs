//! `cargo xtask lab`: the seed's problem and mhr's fix, live. Brings the lab
//! up (addresses and default routes from a real DHCP server and client and
//! real router advertisements), probes both floating IPs (and IPv6
//! addresses) from the internet client, shows `mhr plan --format ip`,
//! applies, probes again, runs `mhr check`, shows mhr's egress counters and
//! guard, runs the daemon through drift and a failover, and tears
//! everything down.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use mhr_tests::{
    SeedLab, TempDir,
    probe::{self, TcpResponder},
    raw,
    seed_lab::{CLIENT, mhr_config},
};

use crate::cmd;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const SERVICE_PORT: u16 = 2222;
/// mhr's default `[metrics] listen` port.
const METRICS_PORT: u16 = 9847;
/// A source address no uplink owns.
const SPOOFED_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 66);

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Leave the lab up (with mhr applied) and print how to enter it.
    #[arg(long)]
    keep: bool,
}

/// The `mhr` binary, run inside the lab host with the lab's config.
struct Mhr {
    binary: PathBuf,
    config: PathBuf,
}

impl Mhr {
    fn command(&self, lab: &SeedLab, args: &[&str]) -> std::process::Command {
        let mut command = lab.host.command(&self.binary);
        command.arg("--config").arg(&self.config).args(args);
        command
    }

    /// Runs and relays the output; returns whether it exited 0.
    fn show(&self, lab: &SeedLab, args: &[&str]) -> anyhow::Result<bool> {
        let mut command = self.command(lab, args);
        println!("$ mhr {}", args.join(" "));
        let output = command.output().context("running mhr")?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            println!("   | {line}");
        }
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("   ! {line}");
        }
        Ok(output.status.success())
    }
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the lab creates network namespaces and loads eBPF: run it as root");
    }
    println!("\n== building mhr");
    cmd::run(cmd::cargo().args(["build", "--package", "mhr-userspace", "--bin", "mhr"]))?;

    println!("\n== bringing up the seed lab (dnsmasq in the routers, dhcpcd and RAs on the host)");
    let lab = SeedLab::start_dhcp_with(args.keep).context("building the lab")?;
    let mut dir = TempDir::new("lab")?;
    let config = dir.path().join("mhr.toml");
    std::fs::write(&config, mhr_config(dir.path())).context("writing the lab's mhr config")?;
    let mhr = Mhr { binary: cmd::workspace_root().join("target/debug/mhr"), config };
    describe(&lab, &mhr.config);
    let responder = TcpResponder::start(&lab.host, SERVICE_PORT)?;

    println!("\n== the problem: probes from the internet client ({CLIENT})");
    probe_all(&lab, responder.port())?;
    for (index, uplink) in lab.uplinks().iter().enumerate() {
        println!(
            "   router of {} dropped {} packet(s) whose source was not from its LAN",
            uplink.interface,
            lab.spoof_drops(index)?
        );
    }
    let [primary, secondary] = lab.uplinks() else { bail!("the seed lab has two uplinks") };
    println!(
        "   Replies from {} leave through {} (main's best default route) with {}'s source; its router drops them.",
        secondary.interface, primary.interface, secondary.interface,
    );

    println!("\n== the fix, as ip commands (mhr plan --format ip)");
    mhr.show(&lab, &["plan", "--format", "ip"])?;
    println!("\n== mhr apply");
    if !mhr.show(&lab, &["apply"])? {
        bail!("mhr apply failed");
    }
    println!("\n== probes again, while mhr's egress classifier counts on both uplinks");
    let mut monitor = Monitor::start(&lab, &mhr)?;
    probe_all(&lab, responder.port())?;
    monitor.stop_and_print()?;
    println!("\n== mhr check: the kernel's own route lookups");
    if !mhr.show(&lab, &["check"])? {
        bail!("mhr check failed after apply");
    }
    println!("\n== a second apply changes nothing (the guard is replaced in place, counters kept)");
    mhr.show(&lab, &["apply"])?;

    println!(
        "\n== the source guard: a spoofed and an asymmetric packet sent out of {} (raw frames)",
        secondary.interface
    );
    send_offending_frames(&lab)?;
    mhr.show(&lab, &["watch", "--count", "2", "--duration", "5s"])?;
    mhr.show(&lab, &["status"])?;

    println!("\n== the daemon: mhr run keeps it true and exports metrics");
    daemon_demo(&lab, &mhr)?;

    println!("\n== a safe change over SSH: apply --confirm undoes itself unless confirmed");
    safe_apply_demo(&lab, &mhr, dir.path())?;

    drop(responder);
    if args.keep {
        dir.keep();
        println!("\n== the lab stays up with mhr applied; enter it with:");
        for hint in lab.enter_hints() {
            println!("   {hint}");
        }
        println!(
            "   mhr there: nsenter --net=/run/netns/{} {} --config {} status",
            lab.host.name(),
            mhr.binary.display(),
            mhr.config.display()
        );
        println!("   remove it with: {}; rm -r {}", lab.teardown_hint(), dir.path().display());
    } else {
        println!("\n== mhr down: the host as it was");
        mhr.show(&lab, &["down"])?;
        drop(lab);
        println!("\n== lab removed");
    }
    Ok(())
}

/// Runs `mhr run`, removes one of its rules by hand, shows it restored and
/// a metrics excerpt, and stops the daemon (routing and guard stay).
fn daemon_demo(lab: &SeedLab, mhr: &Mhr) -> anyhow::Result<()> {
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
fn safe_apply_demo(lab: &SeedLab, mhr: &Mhr, dir: &Path) -> anyhow::Result<()> {
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
fn probe_target(family: &str) -> &'static str {
    if family == "-6" { "2001:db8:ffff::1" } else { "203.0.113.1" }
}

/// The interface host traffic leaves by (`-4`/`-6`), as the kernel's lookup says.
fn main_default(lab: &SeedLab, family: &str) -> String {
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
fn print_defaults(lab: &SeedLab) {
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
fn wait_for(mut done: impl FnMut() -> bool, what: &str) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `GET path` on the daemon's metrics port inside the lab host.
fn http_get(lab: &SeedLab, path: &str) -> Option<(u16, String)> {
    probe::http_get(&lab.host, METRICS_PORT, path)
}

/// One packet from a foreign source and one from the primary's address,
/// both out of the secondary uplink: `spoofed` and `asymmetric`.
fn send_offending_frames(lab: &SeedLab) -> anyhow::Result<()> {
    let [primary, secondary] = lab.uplinks() else { bail!("the seed lab has two uplinks") };
    let own = raw::mac_of(&lab.host, secondary.interface)?;
    let router = raw::mac_of(&lab.routers[1], "lan")?;
    for source in [SPOOFED_SOURCE, primary.address] {
        let frame = raw::udp4_frame(own, router, source, CLIENT, 32);
        raw::send_frames(&lab.host, secondary.interface, &frame, 1)?;
    }
    Ok(())
}

fn describe(lab: &SeedLab, config: &Path) {
    println!("   host namespace: {}", lab.host.name());
    for (uplink, router) in lab.uplinks().iter().zip(&lab.routers) {
        println!(
            "   {}: {}/{} leased with gw {} (metric {}), {}/{} with the router's RA; router {} maps floating {} 1:1",
            uplink.interface,
            uplink.address,
            uplink.prefix_len,
            uplink.gateway,
            uplink.metric,
            uplink.address6,
            uplink.prefix6_len,
            router.name(),
            uplink.floating,
        );
    }
    println!("   host's default routes, from dhcpcd's leases and the routers' advertisements:");
    print_defaults(lab);
    println!("   internet client: {} ({})", lab.client.name(), CLIENT);
    println!("   mhr config: {}", config.display());
}

fn probe_all(lab: &SeedLab, port: u16) -> anyhow::Result<()> {
    for uplink in lab.uplinks() {
        for address in uplink.public_addresses() {
            let ping = probe::ping(&lab.client, address, PROBE_TIMEOUT)?;
            let tcp = probe::tcp_exchange(&lab.client, SocketAddr::new(address, port), PROBE_TIMEOUT)?;
            let family = if matches!(address, IpAddr::V4(_)) { "IPv4" } else { "IPv6" };
            println!(
                "   {} {family} {:<22} ping {:<6} tcp/{port} {}",
                uplink.interface,
                address,
                verdict(ping),
                verdict(tcp)
            );
        }
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

/// `mhr monitor` running in the lab host, its output relayed line by line.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(lab: &SeedLab, mhr: &Mhr) -> anyhow::Result<Self> {
        let mut args = vec!["monitor"];
        for uplink in lab.uplinks() {
            args.extend(["--interface", uplink.interface]);
        }
        args.extend(["--interval", "1h"]);
        let mut command = mhr.command(lab, &args);
        command.stdout(Stdio::piped());
        println!("$ mhr {}", args.join(" "));
        let mut child = command.spawn().context("starting mhr monitor")?;
        let stdout = child.stdout.take().context("capturing mhr's output")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let monitor = Self { child, lines };
        // Probe only once every uplink is attached.
        loop {
            let line = monitor
                .lines
                .recv_timeout(Duration::from_secs(30))
                .context("mhr monitor did not report ready")?;
            println!("   | {line}");
            if line.starts_with("monitoring") {
                return Ok(monitor);
            }
        }
    }

    fn stop_and_print(&mut self) -> anyhow::Result<()> {
        // SIGINT: mhr prints its final counters and detaches.
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = self.child.wait().context("waiting for mhr monitor")?;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            println!("   | {line}");
        }
        if !status.success() {
            bail!("mhr monitor exited with {status}");
        }
        Ok(())
    }
}
