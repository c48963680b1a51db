//! `cargo xtask dist`: a Debian package of mhr. The binary carries the eBPF
//! objects (built once here), so target hosts need no nightly toolchain or
//! bpf-linker. Built with `dpkg-deb` from a staged tree: the binary, the
//! systemd unit, completions, the man page and the docs and examples, and
//! maintainer scripts (deploy/debian) that stop the daemon and take mhr's
//! routing and guard down on remove, and clear its files on purge.

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
    let depends = depends(&stage.join("usr/bin/mhr"), &out.join("shlibdeps"))?;
    write(&stage.join("DEBIAN/control"), &control(version, &arch, size_kib, &depends), 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        install(&root.join("deploy/debian").join(script), &stage.join("DEBIAN").join(script), 0o755)?;
    }

    let deb = out.join(format!("mhr_{version}_{arch}.deb"));
    cmd::run(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&stage).arg(&deb))?;
    Ok(deb)
}

/// The shared libraries the binary needs, with the minimum versions its
/// symbols require: dpkg-shlibdeps where it is installed (it knows the
/// symbols files), else the highest `GLIBC_x.y` the binary references.
fn depends(binary: &Path, work: &Path) -> anyhow::Result<String> {
    if let Some(depends) = shlibdeps(binary, work)? {
        return Ok(depends);
    }
    let symbols = output(Command::new("objdump").arg("-T").arg(binary))?;
    let glibc = glibc_minimum(&symbols).context("the binary references no GLIBC_ symbol version")?;
    let mut depends = format!("libc6 (>= {glibc})");
    let headers = output(Command::new("objdump").arg("-p").arg(binary))?;
    if headers.lines().any(|line| line.trim_start().starts_with("NEEDED") && line.contains("libgcc_s.so.1")) {
        depends.push_str(", libgcc-s1");
    }
    Ok(depends)
}

/// `libc6 (>= 2.34), libgcc-s1 (>= 4.2)` from dpkg-shlibdeps, or `None`
/// when it is not installed. `work` is a scratch directory.
fn shlibdeps(binary: &Path, work: &Path) -> anyhow::Result<Option<String>> {
    if Command::new("dpkg-shlibdeps").arg("--version").output().is_err() {
        return Ok(None);
    }
    // It reads the package list from debian/control in its working directory.
    write(&work.join("debian/control"), "Source: mhr\n\nPackage: mhr\nArchitecture: any\n", 0o644)?;
    let printed = output(Command::new("dpkg-shlibdeps").arg("-O").arg(binary).current_dir(work));
    fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    let printed = printed?;
    let depends = printed
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {printed}"))?;
    Ok(Some(depends.trim().to_owned()))
}

/// The highest `GLIBC_x.y` version in `objdump -T` output.
fn glibc_minimum(symbols: &str) -> Option<String> {
    symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let parts: Option<Vec<u32>> = version.split('.').map(|part| part.parse().ok()).collect();
            parts.filter(|parts| !parts.is_empty()).map(|parts| (parts, version))
        })
        .max()
        .map(|(_, version)| version.to_owned())
}

fn control(version: &str, arch: &str, size_kib: u64, depends: &str) -> String {
    format!(
        "Package: mhr\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: mhr developers <mhr@example.org>\n\
         Installed-Size: {size_kib}\n\
         Depends: {depends}\n\
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

#[cfg(test)]
mod tests {
    use super::glibc_minimum;

    #[test]
    fn glibc_minimum_is_the_highest_symbol_version() {
        let symbols = "\
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.2.5) write
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.34) __libc_start_main
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.9) pipe2
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_PRIVATE) __tls_get_addr
0000000000000000  w   D  *UND*\t0000000000000000  Base        __gmon_start__
";
        assert_eq!(glibc_minimum(symbols).as_deref(), Some("2.34"));
        assert_eq!(glibc_minimum("no versions here"), None);
    }
}
