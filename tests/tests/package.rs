//! The Debian package (`cargo xtask dist`) installs into a clean root with
//! dpkg and its binary works there: no toolchain needed on the target. Its
//! maintainer scripts take mhr's routing and guard down on remove and clear
//! its files on purge. dpkg runs them chrootless with `DPKG_ROOT` set, so
//! every path they touch is in the throwaway root, and inside the lab's
//! network namespace, so `mhr down` acts on the lab host.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{snapshot, write_config};
use mhr_tests::{Netns, TempDir, many_uplinks::ManyUplinks, require_root};
use mhr_userspace::guard::Guard;

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
    // Depends names the glibc the binary's symbols need, not just libc6.
    let stage = deb.with_extension("");
    let symbols = run(Command::new("objdump").arg("-T").arg(stage.join("usr/bin/mhr")));
    let glibc = symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            v.split('.').map(|p| p.parse::<u32>().ok()).collect::<Option<Vec<_>>>().map(|n| (n, v))
        })
        .max()
        .map(|(_, v)| v.to_owned())
        .expect("GLIBC_ symbol versions");
    let depends = fields.lines().find_map(|l| l.strip_prefix("Depends: ")).expect("Depends");
    assert!(depends.split(", ").any(|d| d == format!("libc6 (>= {glibc})")), "{depends}, needs {glibc}");

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
    // The unit's Documentation=man:mhr(8) is the page the package installs.
    assert!(unit.contains("man:mhr(8)"), "{unit}");
    let man = run(Command::new("gzip").arg("-dc").arg(root.join("usr/share/man/man8/mhr.8.gz")));
    assert!(man.lines().any(|line| line.starts_with(".TH mhr 8")), "{man}");

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

/// A root with an empty dpkg database and its own bpffs at `sys/fs/bpf`
/// (unmounted when dropped), so the guard's pins live under it too.
struct Root {
    path: PathBuf,
}

impl Root {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(path.join("var/lib/dpkg/info")).unwrap();
        std::fs::create_dir_all(path.join("var/lib/dpkg/updates")).unwrap();
        std::fs::write(path.join("var/lib/dpkg/status"), "").unwrap();
        std::fs::create_dir_all(path.join("sys/fs/bpf")).unwrap();
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(path.join("sys/fs/bpf")));
        Self { path }
    }

    fn join(&self, relative: &str) -> PathBuf {
        self.path.join(relative)
    }

    /// `dpkg --root=ROOT ARGS…` inside `netns` (maintainer scripts included).
    fn dpkg(&self, netns: &Netns, args: &[&str]) -> std::process::Output {
        netns
            .command("dpkg")
            .arg(format!("--root={}", self.path.display()))
            .args(["--force-depends", "--force-script-chrootless"])
            .args(args)
            .output()
            .expect("dpkg starts")
    }

    /// The package's state in the root's dpkg database.
    fn status(&self) -> String {
        let output = Command::new("dpkg-query")
            .arg(format!("--admindir={}", self.join("var/lib/dpkg").display()))
            .args(["-W", "-f=${db:Status-Abbrev}", "mhr"])
            .output()
            .expect("dpkg-query starts");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The config an operator would write, with mhr's files under the root.
    fn write_config(&self, uplinks: &str) -> PathBuf {
        let config = self.join("etc/mhr/mhr.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let text = format!(
            "mode = \"enforce\"\n\n{uplinks}\n[routing]\nrt_tables_dir = \"{}\"\nstate_dir = \"{}\"\n\n[guard]\npin_dir = \"{}\"\n",
            self.join("etc/iproute2/rt_tables.d").display(),
            self.join("var/lib/mhr").display(),
            self.join("sys/fs/bpf/mhr").display(),
        );
        std::fs::write(&config, text).unwrap();
        config
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Unmounting drops the pins, which detaches whatever a failed test left.
        let _ = Command::new("umount").arg(self.join("sys/fs/bpf")).status();
    }
}

fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn uplinks(host: &ManyUplinks) -> String {
    (0..host.count)
        .map(|i| {
            let primary = if i == 0 { "primary = true\n" } else { "" };
            format!("[[uplink]]\ninterface = \"{}\"\n{primary}\n", ManyUplinks::interface(i))
        })
        .collect()
}

fn guard_runs_on(netns: &Netns, interface: &str) -> Option<bool> {
    let interface = interface.to_owned();
    netns.run(move || Guard::kernel_runs_any_guard(&interface)).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn removing_the_deb_takes_mhrs_routing_and_guard_down_and_purge_removes_its_files() {
    require_root();
    let dir = TempDir::new("package-lifecycle").unwrap();
    let deb = build_package(&dir.path().join("dist"));
    let root = Root::new(dir.path().join("root"));
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    let before = snapshot(&host.host);

    let installed = root.dpkg(&host.host, &["-i", deb.to_str().unwrap()]);
    assert!(installed.status.success(), "{}", text(&installed));
    let config = root.write_config(&uplinks(&host));
    let mhr = root.join("usr/bin/mhr");
    let applied = run(host.host.command(&mhr).arg("--config").arg(&config).arg("apply"));
    assert!(applied.contains("guard: up0 attached via tcx"), "{applied}");
    let routed = snapshot(&host.host);
    assert!(routed.contains("proto 210"), "mhr's rules and routes are in place:\n{routed}");
    assert_eq!(guard_runs_on(&host.host, "up0"), Some(true));
    assert!(!entries(&root.join("sys/fs/bpf/mhr")).is_empty(), "the guard is pinned");
    assert!(root.join("etc/iproute2/rt_tables.d/mhr.conf").exists());

    let removed = root.dpkg(&host.host, &["-r", "mhr"]);
    let said = text(&removed);
    assert!(removed.status.success(), "{said}");
    assert_eq!(root.status(), "rc", "removed, config files kept");
    assert!(!mhr.exists(), "the binary is gone");
    // Nothing of mhr's is left in the kernel: the host routes as before.
    let after = snapshot(&host.host);
    assert!(!after.contains("proto 210"), "{said}\n{after}");
    assert_eq!(after, before);
    for interface in ["up0", "up1"] {
        assert_eq!(guard_runs_on(&host.host, interface), Some(false), "{interface}'s guard");
    }
    assert!(said.contains("systemd is not running here"), "{said}");
    assert!(said.contains("removed mhr's routing") && said.contains("guard: detached"), "{said}");
    assert!(
        entries(&root.join("sys/fs/bpf/mhr")).is_empty(),
        "pins left: {:?}",
        entries(&root.join("sys/fs/bpf/mhr"))
    );
    assert!(config.exists(), "remove keeps the config");

    let purged = root.dpkg(&host.host, &["-P", "mhr"]);
    assert!(purged.status.success(), "{}", text(&purged));
    assert_eq!(root.status(), "", "purged: dpkg forgets mhr");
    for gone in ["etc/mhr", "var/lib/mhr", "etc/iproute2/rt_tables.d/mhr.conf", "sys/fs/bpf/mhr"] {
        assert!(!root.join(gone).exists(), "purge removes {gone}");
    }
    assert_eq!(snapshot(&host.host), before);
}

#[test]
fn removing_the_deb_never_fails_where_mhr_was_not_applied_and_refuses_while_a_daemon_holds_the_host() {
    require_root();
    let dir = TempDir::new("package-unapplied").unwrap();
    let deb = build_package(&dir.path().join("dist"));
    let root = Root::new(dir.path().join("root"));
    let host = ManyUplinks::start(2, 1, 0).unwrap();
    let install = |root: &Root| {
        let installed = root.dpkg(&host.host, &["-i", deb.to_str().unwrap()]);
        assert!(installed.status.success(), "{}", text(&installed));
    };

    // Never configured: nothing to take down.
    install(&root);
    let removed = root.dpkg(&host.host, &["-r", "mhr"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(text(&removed).contains("nothing applied with it to take down"), "{}", text(&removed));
    let purged = root.dpkg(&host.host, &["-P", "mhr"]);
    assert!(purged.status.success(), "{}", text(&purged));

    // Configured but never applied: down owns nothing and says so.
    install(&root);
    let config = root.write_config(&uplinks(&host));
    let removed = root.dpkg(&host.host, &["-r", "mhr"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(text(&removed).contains("mhr owns nothing here"), "{}", text(&removed));
    assert!(config.exists());

    // A `mhr run` started by hand (no systemd to stop it) keeps the host:
    // the removal stops, says why, and mhr stays installed and in place.
    install(&root);
    let mhr = root.join("usr/bin/mhr");
    let mut daemon = host
        .host
        .command(&mhr)
        .arg("--config")
        .arg(&config)
        .args(["run", "--metrics-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mhr run starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while guard_runs_on(&host.host, "up0") != Some(true) {
        assert!(std::time::Instant::now() < deadline, "mhr run never attached the guard");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = root.dpkg(&host.host, &["-r", "mhr"]);
    let said = text(&refused);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("stop it first") && said.contains("mhr stays installed"), "{said}");
    // Want and state: removal was asked for, the package is still installed.
    assert_eq!(root.status(), "ri", "still installed");
    assert!(mhr.exists());
    assert!(snapshot(&host.host).contains("proto 210"));

    // Stopped, the removal goes through.
    let removed = root.dpkg(&host.host, &["-r", "mhr"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!snapshot(&host.host).contains("proto 210"));
    assert_eq!(guard_runs_on(&host.host, "up0"), Some(false));
}
