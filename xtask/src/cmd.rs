//! Running external commands with errors that name the command.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

pub use mhr_tests::describe;

/// Runs with inherited stdio; fails unless it exits 0.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = describe(command);
    println!("$ {shown}");
    let status = command.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs capturing output; fails unless it exits 0.
pub fn output(command: &mut Command) -> anyhow::Result<Output> {
    let shown = describe(command);
    let output = command.output().with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!("`{shown}` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(output)
}

/// Captured stdout as text.
pub fn stdout(command: &mut Command) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&output(command)?.stdout).into_owned())
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo that runs xtask, so nested builds use the same toolchain.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// Like [`which`], but also looks in the sbin directories a non-root PATH
/// often lacks (Debian puts `ip`, `tc` and `nft` there).
pub fn which_system(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|dir| PathBuf::from(dir).join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Where `cargo install` puts binaries (bpf-linker among them).
pub fn cargo_bin_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// Makes a freshly installed bpf-linker visible to this process and to the
/// nested eBPF build, even when the shell's PATH lacks cargo's bin folder.
pub fn put_cargo_bin_on_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let current = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&current).any(|dir| dir == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&current)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

/// Cargo through rustup's nightly (cargo's own `+nightly` needs the proxy).
pub fn nightly_cargo() -> anyhow::Result<Command> {
    let rustup = which("rustup").context("rustup not found on PATH")?;
    let mut command = Command::new(rustup);
    command.args(["run", "nightly", "cargo"]).current_dir(workspace_root());
    // Let the nightly cargo pick its own rustc, not the stable one xtask runs under.
    for var in ["RUSTC", "RUSTDOC", "CARGO", "RUSTUP_TOOLCHAIN"] {
        command.env_remove(var);
    }
    Ok(command)
}

/// Installs a cargo subcommand from crates.io unless it is on PATH.
pub fn ensure_cargo_tool(binary: &str, package: &str, version: &str) -> anyhow::Result<()> {
    if which(binary).is_some() {
        return Ok(());
    }
    println!("== installing {package} {version}");
    run(cargo().args(["install", "--locked", package, "--version"]).arg(format!("^{version}")))
        .with_context(|| format!("installing {package} (needs crates.io)"))
}
