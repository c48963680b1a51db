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

mod demos;
mod policy;
mod static_host;

use demos::{daemon_demo, print_defaults, safe_apply_demo};

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

    println!("\n== traffic policy: a steering rule sends HTTPS through the backup");
    policy::traffic_policy_demo(&lab, &mhr, dir.path())?;

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
    println!(
        "\n== a statically configured host: one default in main, at metric 0, and an upstream that goes silent"
    );
    static_host::static_host_demo(&mhr.binary)?;
    println!("\n== static lab removed");
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
