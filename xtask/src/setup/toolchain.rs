//! The Rust side of setup: the nightly toolchain (with rust-src) the eBPF
//! build needs, and a bpf-linker built against that nightly's own LLVM.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::SetupReport;
use crate::cmd;

/// The bpf-linker release line this project builds with.
const BPF_LINKER_VERSION: &str = "^0.13";

fn rustup() -> anyhow::Result<Command> {
    match cmd::which("rustup") {
        Some(path) => Ok(Command::new(path)),
        None => bail!(
            "rustup not found on PATH: install it from https://rustup.rs (the eBPF build needs a nightly toolchain)"
        ),
    }
}

pub(super) fn ensure_nightly(report: &mut SetupReport) -> anyhow::Result<()> {
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

pub(super) fn ensure_bpf_linker(report: &mut SetupReport) -> anyhow::Result<()> {
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
    fn versioned_libllvm_is_recognised() {
        assert!(is_versioned_libllvm(Path::new("/x/lib/libLLVM.so.22.1-rust-1.97.0-nightly")));
        assert!(!is_versioned_libllvm(Path::new("/x/lib/libLLVM-22-rust-1.97.0-nightly.so")));
    }
}
