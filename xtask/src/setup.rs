//! `cargo xtask setup`: make a bare Debian-like machine (root, rustup) ready
//! to build and test mhr. Every check prints what it found; anything missing
//! is installed, or the error says what is missing and how to get it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// The bpf-linker release line this project builds with.
const BPF_LINKER_VERSION: &str = "^0.13";

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

fn rustup() -> anyhow::Result<Command> {
    match cmd::which("rustup") {
        Some(path) => Ok(Command::new(path)),
        None => bail!(
            "rustup not found on PATH: install it from https://rustup.rs (the eBPF build needs a nightly toolchain)"
        ),
    }
}

fn ensure_nightly(report: &mut SetupReport) -> anyhow::Result<()> {
    let version = rustup()?.args(["run", "nightly", "rustc", "--version"]).output();
    match version {
        Ok(out) if out.status.success() => {
            report.ok("nightly toolchain", String::from_utf8_lossy(&out.stdout).trim());
        }
        _ => {
            report.installing("nightly toolchain", "not installed");
            cmd::run(rustup()?.args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .context("installing the nightly toolchain with rustup")?;
        }
    }
    let installed =
        cmd::stdout(rustup()?.args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        report.ok("rust-src (nightly)", "installed");
    } else {
        report.installing("rust-src (nightly)", "needed for -Z build-std=core");
        cmd::run(rustup()?.args(["component", "add", "rust-src", "--toolchain", "nightly"]))
            .context("adding rust-src to the nightly toolchain")?;
    }
    Ok(())
}

/// The nightly's LLVM: its major version and its shared library.
struct NightlyLlvm {
    major: u32,
    library: PathBuf,
}

impl NightlyLlvm {
    fn discover() -> anyhow::Result<Self> {
        let version = cmd::stdout(rustup()?.args(["run", "nightly", "rustc", "-vV"]))?;
        let major = llvm_major(&version)
            .with_context(|| format!("`rustc +nightly -vV` shows no LLVM version:\n{version}"))?;
        let sysroot = cmd::stdout(rustup()?.args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
        let lib_dir = Path::new(sysroot.trim()).join("lib");
        let library = fs::read_dir(&lib_dir)
            .with_context(|| format!("reading {}", lib_dir.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| is_versioned_libllvm(path))
            .with_context(|| {
                format!(
                    "no libLLVM.so.* in {}: the nightly toolchain looks incomplete, reinstall it with `rustup toolchain install nightly`",
                    lib_dir.display()
                )
            })?;
        Ok(Self { major, library })
    }

    fn library_name(&self) -> String {
        self.library.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// `LLVM version: 22.1.4` → 22.
fn llvm_major(rustc_verbose_version: &str) -> Option<u32> {
    let line = rustc_verbose_version.lines().find_map(|l| l.strip_prefix("LLVM version:"))?;
    line.trim().split('.').next()?.parse().ok()
}

fn is_versioned_libllvm(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|name| name.starts_with("libLLVM.so."))
}

fn ensure_bpf_linker(report: &mut SetupReport) -> anyhow::Result<()> {
    let llvm = NightlyLlvm::discover()?;
    let wanted = llvm.library_name();
    let why = match cmd::which("bpf-linker") {
        None => "not installed".to_owned(),
        Some(path) => match bpf_linker_problem(&path, &wanted) {
            None => {
                report.ok("bpf-linker", &format!("{} links {wanted}", path.display()));
                return Ok(());
            }
            Some(problem) => problem,
        },
    };
    report.installing("bpf-linker", &format!("{why}; building against the nightly's LLVM {}", llvm.major));
    build_bpf_linker(&llvm)
}

/// Why an existing bpf-linker can't be used, if it can't.
fn bpf_linker_problem(path: &Path, wanted_library: &str) -> Option<String> {
    match Command::new(path).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Some(format!(
                "{} does not run: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(err) => return Some(format!("{} does not run: {err}", path.display())),
    }
    // The linker names the LLVM library it was linked against; it must be
    // the nightly's own, or the bitcode rustc emits may not be readable.
    let binary = match fs::read(path) {
        Ok(binary) => binary,
        Err(err) => return Some(format!("cannot read {}: {err}", path.display())),
    };
    if memchr::memmem::find(&binary, wanted_library.as_bytes()).is_some() {
        None
    } else {
        Some(format!("{} is linked against another LLVM than {wanted_library}", path.display()))
    }
}

/// Builds bpf-linker from crates.io against the nightly's own libLLVM: a
/// prefix whose lib/ holds libLLVM.so linking to it; the linker keeps that
/// runpath, so it always loads the LLVM the nightly rustc emits bitcode for.
fn build_bpf_linker(llvm: &NightlyLlvm) -> anyhow::Result<()> {
    let bin = cmd::cargo_bin_dir().context("neither CARGO_HOME nor HOME is set")?;
    let home = bin.parent().context("cargo's bin folder has no parent")?;
    // The linker keeps this folder as its runpath, so it must outlive the build.
    let prefix = home.join("mhr-llvm").join(llvm.library_name());
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in [lib.join("libLLVM.so"), lib.join(llvm.library_name())] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm.library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), llvm.library.display()))?;
    }
    let feature = format!("llvm-{}", llvm.major);
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "--force", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &prefix),
    )
    .with_context(|| {
        format!("building bpf-linker with feature {feature} (needs crates.io and a C toolchain)")
    })
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
    fn llvm_major_comes_from_rustc_verbose_version() {
        let text = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(text), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn only_a_bpf_mount_at_the_bpffs_path_counts() {
        assert!(bpffs_mounted("bpf /sys/fs/bpf bpf rw,relatime 0 0\n"));
        assert!(!bpffs_mounted("none /sys/fs/bpf tmpfs rw 0 0\nbpf /mnt bpf rw 0 0\n"));
    }

    #[test]
    fn versioned_libllvm_is_recognised() {
        assert!(is_versioned_libllvm(Path::new("/x/lib/libLLVM.so.22.1-rust-1.97.0-nightly")));
        assert!(!is_versioned_libllvm(Path::new("/x/lib/libLLVM-22-rust-1.97.0-nightly.so")));
    }
}
