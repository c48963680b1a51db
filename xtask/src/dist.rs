//! `cargo xtask dist`: a Debian package of mhr. The binary carries the eBPF
//! objects (built once here), so target hosts need no nightly toolchain or
//! bpf-linker. Built with `dpkg-deb` from a staged tree: the binary, the
//! systemd unit, completions, the man page and the docs and examples.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Directory for the package (default: target/dist).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: &DistArgs) -> anyhow::Result<()> {
    let deb = build(args)?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds the package and returns its path.
pub fn build(args: &DistArgs) -> anyhow::Result<PathBuf> {
    let root = cmd::workspace_root();
    cmd::run(cmd::cargo().args(["build", "--release", "--package", "mhr-userspace", "--bin", "mhr"]))?;
    let binary = root.join("target/release/mhr");
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
    let out = args.out.clone().unwrap_or_else(|| root.join("target/dist"));
    let stage = out.join(format!("mhr_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }

    install(&binary, &stage.join("usr/bin/mhr"), 0o755)?;
    let _ = Command::new("strip").arg(stage.join("usr/bin/mhr")).status();
    let unit = fs::read_to_string(root.join("deploy/systemd/mhr.service")).context("reading the unit")?;
    write(
        &stage.join("lib/systemd/system/mhr.service"),
        &unit.replace("/usr/local/bin/mhr", "/usr/bin/mhr"),
        0o644,
    )?;
    let generated = |args: &[&str]| -> anyhow::Result<String> { output(Command::new(&binary).args(args)) };
    write(
        &stage.join("usr/share/bash-completion/completions/mhr"),
        &generated(&["completions", "bash"])?,
        0o644,
    )?;
    write(&stage.join("usr/share/zsh/vendor-completions/_mhr"), &generated(&["completions", "zsh"])?, 0o644)?;
    write(
        &stage.join("usr/share/fish/vendor_completions.d/mhr.fish"),
        &generated(&["completions", "fish"])?,
        0o644,
    )?;
    let man = stage.join("usr/share/man/man8/mhr.8");
    write(&man, &generated(&["manpage"])?, 0o644)?;
    cmd::run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&man))?;
    let doc = stage.join("usr/share/doc/mhr");
    for (from, to) in [
        ("README.md", "README.md"),
        ("docs/configuration.md", "configuration.md"),
        ("deploy/prometheus/alerts.yml", "examples/prometheus-alerts.yml"),
        ("deploy/prometheus/scrape.yml", "examples/prometheus-scrape.yml"),
        ("deploy/grafana/mhr-dashboard.json", "examples/grafana-dashboard.json"),
    ] {
        install(&root.join(from), &doc.join(to), 0o644)?;
    }
    // The unit's ReadWritePaths needs it; newer iproute2 packages do not ship it.
    let tables = stage.join("etc/iproute2/rt_tables.d");
    fs::create_dir_all(&tables).with_context(|| format!("creating {}", tables.display()))?;
    let size_kib = dir_size(&stage)?.div_ceil(1024);
    write(&stage.join("DEBIAN/control"), &control(version, &arch, size_kib), 0o644)?;

    let deb = out.join(format!("mhr_{version}_{arch}.deb"));
    cmd::run(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&stage).arg(&deb))?;
    Ok(deb)
}

fn control(version: &str, arch: &str, size_kib: u64) -> String {
    format!(
        "Package: mhr\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: mhr developers <mhr@example.org>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://github.com/mhr-project/mhr\n\
         Description: policy routing enforcer for multihomed Linux hosts\n \
         Keeps per-uplink routing tables and rules so every address answers\n \
         through its own uplink, fails main's default route over between\n \
         uplinks, and guards egress with an eBPF source check. Start with\n \
         `mhr init --write`, then `mhr plan`, `mhr apply --confirm 60s` and\n \
         `systemctl enable --now mhr`.\n"
    )
}

fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn write(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let shown = cmd::describe(command);
    let output = command.output().with_context(|| format!("running `{shown}`"))?;
    if !output.status.success() {
        bail!("`{shown}` failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
