//! `cargo xtask setup`: make a bare Debian-like machine (root, rustup) ready
//! to build and test mhr. Every check prints what it found; anything missing
//! is installed, or the error says what is missing and how to get it.

use std::{fs, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

mod toolchain;

use toolchain::{ensure_bpf_linker, ensure_nightly};

/// Commands the tests and the lab run, and the Debian package of each. The
/// `-base` packages hold just the binaries: `dnsmasq` would also start a
/// system DNS service, `dhcpcd` a system DHCP client.
const SYSTEM_COMMANDS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    // A terminal for the `apply --confirm` Enter test.
    ("script", "bsdutils"),
    ("dnsmasq", "dnsmasq-base"),
    ("dhcpcd", "dhcpcd-base"),
    // The HTTP server HTTP probes reach in the lab (busybox httpd).
    ("busybox", "busybox"),
    // Real network managers on the lab host (tests/src/managers), each run
    // by the tests in namespaces of its own.
    ("/lib/systemd/systemd-networkd", "systemd"),
    ("NetworkManager", "network-manager"),
    ("dbus-daemon", "dbus"),
    ("dhclient", "isc-dhcp-client"),
    // Checks the alert rules (unit tests) and the daemon's exposition.
    ("promtool", "prometheus"),
];

const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, Default, clap::Args)]
pub struct SetupArgs {}

/// What one setup run did.
#[derive(Debug, Default)]
pub struct SetupReport {
    pub checked: usize,
    pub installed: Vec<String>,
}

impl SetupReport {
    fn ok(&mut self, what: &str, detail: &str) {
        self.checked += 1;
        println!("  ok        {what}: {detail}");
    }

    fn installing(&mut self, what: &str, why: &str) {
        self.checked += 1;
        println!("  install   {what}: {why}");
        self.installed.push(what.to_owned());
    }
}

pub fn run(_args: &SetupArgs) -> anyhow::Result<SetupReport> {
    println!("setup: checking build and test prerequisites");
    let mut report = SetupReport::default();
    ensure_nightly(&mut report)?;
    ensure_bpf_linker(&mut report)?;
    ensure_system_packages(&mut report)?;
    ensure_kubernetes_validate(&mut report)?;
    ensure_bpffs(&mut report)?;
    if report.installed.is_empty() {
        println!("setup: {} checks passed, nothing installed", report.checked);
    } else {
        println!("setup: {} checks, installed: {}", report.checked, report.installed.join(", "));
    }
    Ok(report)
}

fn ensure_system_packages(report: &mut SetupReport) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for (command, package) in SYSTEM_COMMANDS {
        match cmd::which_system(command) {
            Some(path) => report.ok(command, &path.display().to_string()),
            None => {
                report.installing(command, &format!("missing; Debian package {package}"));
                if !missing.contains(package) {
                    missing.push(package);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        bail!("missing packages {list}: run `sudo apt-get install {list}` or `cargo xtask setup` as root");
    }
    if cmd::which("apt-get").is_none() {
        bail!("missing packages {list} and no apt-get here: install them with this system's package manager");
    }
    cmd::run(Command::new("apt-get").arg("update").arg("-q"))
        .context("apt-get update (needs the Debian package mirror)")?;
    // Packages install binaries only: no service starts (the prometheus
    // package would start a server). policy-rc.d is Debian's switch for it.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask setup: no service starts while it installs packages\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        fs::set_permissions(policy, fs::Permissions::from_mode(0o755))
            .context("making policy-rc.d executable")?;
    }
    let installed = cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("installing {list}"));
    if ours {
        let _ = fs::remove_file(policy);
    }
    installed?;
    disable_installed_services(&missing);
    Ok(())
}

/// Services packages enable on install that must never run on the test
/// machine (NetworkManager would manage its links from the next boot).
const NEVER_ENABLED: &[(&str, &[&str])] = &[(
    "network-manager",
    &["NetworkManager.service", "NetworkManager-dispatcher.service", "NetworkManager-wait-online.service"],
)];

/// Disables (on systemd machines) the services of `installed` packages
/// listed in [`NEVER_ENABLED`]; a machine without systemctl has nothing
/// to disable.
fn disable_installed_services(installed: &[&str]) {
    let Some(systemctl) = cmd::which_system("systemctl") else { return };
    for (package, units) in NEVER_ENABLED {
        if installed.contains(package) {
            let disabled = Command::new(&systemctl).arg("disable").args(*units).status();
            if !disabled.is_ok_and(|status| status.success()) {
                println!("  warning   could not disable {} ({package})", units.join(" "));
            }
        }
    }
}

/// PyPI's kubernetes-validate validates the DaemonSet against the
/// Kubernetes schemas it bundles (no cluster, no network at test time). It
/// goes into target/tools/python (`pip --target`), never into the system's
/// Python, which Debian marks as externally managed.
pub const KUBERNETES_VALIDATE: &str = "kubernetes_validate";

/// `python3 -m kubernetes_validate …` with the tools directory on its path.
pub fn kubernetes_validate() -> Command {
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", python_tools()).args(["-m", KUBERNETES_VALIDATE]);
    command
}

fn python_tools() -> std::path::PathBuf {
    cmd::workspace_root().join("target/tools/python")
}

fn ensure_kubernetes_validate(report: &mut SetupReport) -> anyhow::Result<()> {
    let version = || {
        kubernetes_validate()
            .arg("--version")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    if let Some(version) = version() {
        report.ok("kubernetes-validate", &format!("{version} in {}", python_tools().display()));
        return Ok(());
    }
    report.installing("kubernetes-validate", "missing; from PyPI into target/tools/python");
    let pip_works = || {
        Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success())
    };
    if !pip_works() {
        // Debian's Python comes without pip.
        if !cmd::is_root() || cmd::which("apt-get").is_none() {
            bail!("python3 with pip is needed for kubernetes-validate: install python3-pip");
        }
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", "python3", "python3-pip"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("installing python3-pip")?;
    }
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
            .arg(python_tools())
            .arg("kubernetes-validate"),
    )
    .context("installing kubernetes-validate from PyPI")?;
    if version().is_none() {
        bail!("kubernetes-validate was installed but `python3 -m {KUBERNETES_VALIDATE}` does not run");
    }
    Ok(())
}

fn ensure_bpffs(report: &mut SetupReport) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if bpffs_mounted(&mounts) {
        report.ok("bpffs", &format!("mounted at {BPFFS}"));
        return Ok(());
    }
    report.installing("bpffs", &format!("not mounted at {BPFFS}"));
    if !cmd::is_root() {
        bail!("bpffs is not mounted: run `sudo mount -t bpf bpf {BPFFS}` or `cargo xtask setup` as root");
    }
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .with_context(|| format!("mounting bpffs at {BPFFS}"))
}

fn bpffs_mounted(proc_mounts: &str) -> bool {
    proc_mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next(), fields.next(), fields.next());
        target == Some(BPFFS) && fstype == Some("bpf")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bpf_mount_at_the_bpffs_path_counts() {
        assert!(bpffs_mounted("bpf /sys/fs/bpf bpf rw,relatime 0 0\n"));
        assert!(!bpffs_mounted("none /sys/fs/bpf tmpfs rw 0 0\nbpf /mnt bpf rw 0 0\n"));
    }
}
