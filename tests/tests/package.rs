//! The Debian package (`cargo xtask dist`) installs into a clean root with
//! dpkg and its binary works there: no toolchain needed on the target.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::write_config;
use mhr_tests::{TempDir, many_uplinks::ManyUplinks, require_root};

fn run(command: &mut Command) -> String {
    let output = command.output().expect("command starts");
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?}:\n{text}");
    text
}

fn build_package(out: &Path) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["xtask", "dist", "--out"])
        .arg(out)
        .output()
        .expect("cargo xtask dist starts");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cargo xtask dist:\n{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deb = printed.lines().last().map(PathBuf::from).expect("the package path");
    assert!(deb.extension().is_some_and(|e| e == "deb"), "{printed}");
    deb
}

#[test]
fn the_deb_installs_into_a_clean_root_and_its_mhr_plans_a_real_host() {
    require_root();
    let dir = TempDir::new("package").unwrap();
    let deb = build_package(&dir.path().join("dist"));

    let fields =
        run(Command::new("dpkg-deb").args(["--field"]).arg(&deb).args(["Package", "Version", "Depends"]));
    assert!(fields.contains("Package: mhr") && fields.contains("Version: 0.1.0"), "{fields}");

    // A root with an empty dpkg database: dpkg installs and records the files.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-script-chrootless", "-i"])
        .arg(&deb));
    let listed = run(Command::new("dpkg").arg(format!("--root={}", root.display())).args(["-L", "mhr"]));
    for file in [
        "/usr/bin/mhr",
        "/lib/systemd/system/mhr.service",
        "/usr/share/man/man8/mhr.8.gz",
        "/usr/share/bash-completion/completions/mhr",
        "/usr/share/doc/mhr/examples/prometheus-alerts.yml",
    ] {
        assert!(listed.lines().any(|line| line == file), "{file} installed:\n{listed}");
        assert!(root.join(&file[1..]).exists(), "{file} on disk");
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/mhr.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/mhr --config /etc/mhr/mhr.toml run"), "{unit}");

    let mhr = root.join("usr/bin/mhr");
    assert_eq!(run(Command::new(&mhr).arg("--version")).trim(), "mhr 0.1.0");
    // The installed binary carries its eBPF objects: plan and apply with the guard.
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let plan = run(host.host.command(&mhr).arg("--config").arg(&config).arg("plan"));
    assert!(plan.contains("change(s) planned"), "{plan}");
    let applied = run(host.host.command(&mhr).arg("--config").arg(&config).arg("apply"));
    assert!(applied.contains("guard: up0 attached via tcx"), "{applied}");
    run(host.host.command(&mhr).arg("--config").arg(&config).arg("down"));
}
