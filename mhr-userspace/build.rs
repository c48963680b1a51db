//! Builds the eBPF object (mhr-ebpf) with the nightly toolchain through
//! aya-build; `AYA_BUILD_SKIP=1` writes an empty stub instead so clippy and
//! docs work without bpf-linker (the stub cannot be loaded).
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "mhr-ebpf";
/// The package's binaries: the plain counter and the source guard.
const EBPF_OBJECTS: [&str; 2] = ["mhr-ebpf", "mhr-guard"];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let ebpf_dir = manifest_dir.join("..").join(EBPF_PACKAGE);
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
        for object in EBPF_OBJECTS {
            let stub = out_dir.join(object);
            fs::write(&stub, []).with_context(|| format!("writing stub {}", stub.display()))?;
        }
    }
    emit_revision(&manifest_dir);
    let package = Package { name: EBPF_PACKAGE, root_dir: ebpf_dir, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default())
        .context("building the eBPF object failed; `cargo xtask setup` installs the nightly toolchain and bpf-linker it needs")
}

/// The git revision for `mhr_build_info` (`unknown` outside a checkout).
fn emit_revision(manifest_dir: &std::path::Path) {
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(manifest_dir)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|revision| !revision.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MHR_REVISION={revision}");
    let git = manifest_dir.join("../.git");
    for path in [git.join("HEAD"), git.join("refs/heads")] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
