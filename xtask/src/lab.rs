//! `cargo xtask lab`: the seed's problem, live. Brings the lab up, probes
//! both floating IPs (and IPv6 addresses) from the internet client, runs
//! `mhr monitor` on both uplinks while traffic flows, and tears down.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use mhr_tests::{
    SeedLab,
    probe::{self, TcpResponder},
    seed_lab::CLIENT,
};

use crate::cmd;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const SERVICE_PORT: u16 = 2222;

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Leave the lab up afterwards and print how to enter its namespaces.
    #[arg(long)]
    keep: bool,
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the lab creates network namespaces and loads eBPF: run it as root");
    }
    println!("== building mhr");
    cmd::run(cmd::cargo().args(["build", "--package", "mhr-userspace", "--bin", "mhr"]))?;
    let mhr = cmd::workspace_root().join("target/debug/mhr");

    println!("\n== bringing up the seed lab");
    let lab = SeedLab::start_with(args.keep).context("building the lab")?;
    describe(&lab);
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
    println!(
        "   Replies from {} leave through {} (main's best default route) with {}'s source; its router drops them.",
        lab.uplinks()[1].interface,
        lab.uplinks()[0].interface,
        lab.uplinks()[1].interface,
    );

    println!("\n== mhr's egress counters on both uplinks while the probes run again");
    let mut monitor = Monitor::start(&lab, &mhr)?;
    probe_all(&lab, responder.port())?;
    monitor.stop_and_print()?;

    drop(responder);
    if args.keep {
        println!("\n== the lab stays up; enter it with:");
        for hint in lab.enter_hints() {
            println!("   {hint}");
        }
        println!("   remove it with: {}", lab.teardown_hint());
    } else {
        drop(lab);
        println!("\n== lab removed");
    }
    Ok(())
}

fn describe(lab: &SeedLab) {
    println!("   host namespace: {}", lab.host.name());
    for (uplink, router) in lab.uplinks().iter().zip(&lab.routers) {
        println!(
            "   {}: {}/{} gw {} (metric {}), {}/{} gw {}; router {} maps floating {} 1:1",
            uplink.interface,
            uplink.address,
            uplink.prefix_len,
            uplink.gateway,
            uplink.metric,
            uplink.address6,
            uplink.prefix6_len,
            uplink.gateway6,
            router.name(),
            uplink.floating,
        );
    }
    println!("   internet client: {} ({})", lab.client.name(), CLIENT);
}

fn probe_all(lab: &SeedLab, port: u16) -> anyhow::Result<()> {
    for uplink in lab.uplinks() {
        for address in uplink.public_addresses() {
            let ping = probe::ping(&lab.client, address, PROBE_TIMEOUT)?;
            let tcp =
                probe::tcp_exchange(&lab.client, SocketAddr::new(address, port), PROBE_TIMEOUT)?;
            let family = if matches!(address, IpAddr::V4(_)) {
                "IPv4"
            } else {
                "IPv6"
            };
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
    fn start(lab: &SeedLab, mhr: &std::path::Path) -> anyhow::Result<Self> {
        let mut command = lab.host.command(mhr);
        command.arg("monitor");
        for uplink in lab.uplinks() {
            command.args(["--interface", uplink.interface]);
        }
        command.args(["--interval", "1h"]).stdout(Stdio::piped());
        println!("$ {}", cmd::describe(&command));
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
