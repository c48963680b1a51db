//! Real network managers on the seed lab's host: systemd-networkd,
//! NetworkManager (with its own D-Bus) and ISC dhclient, each a plain
//! process in the host's network namespace and in mount and PID namespaces
//! of its own, so it never sees or touches the machine's networking or
//! /etc (private files are bind-mounted over the paths it reads and
//! writes). dhcpcd, the fourth, is the DHCP lab's client ([`crate::dhcp`]).
//!
//! A [`ManagedLab`] is a [`SeedLab::start_bare`] lab whose host gets its
//! addresses and default routes from the manager: statically or from
//! dnsmasq in the routers, per uplink ([`Addressing`]). Recipes and the
//! measured behaviour are in the project's notes on managers in network
//! namespaces.

pub mod dhclient;
pub mod dhcpcd;
pub mod network_manager;
pub mod networkd;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    LabError, Netns, Result, SeedLab, TempDir, checked,
    dhcp::DhcpServer,
    process::{Process, children, in_netns},
    seed_lab::Uplink,
};

/// How the manager configures one uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// The lab's address and gateway written into the manager's config.
    Static,
    /// From dnsmasq in the uplink's router (the same address and gateway).
    Dhcp,
}

/// A network manager running on the lab's host.
pub trait Manager {
    /// Its name, for messages.
    fn name(&self) -> &'static str;
    /// Stops it as its service would (SIGTERM, it exits cleanly) and starts
    /// it again with the same configuration.
    fn restart(&self) -> Result<()>;
    /// What it logged.
    fn log(&self) -> String;
    /// Whether it is configured to delete rules and routes it did not
    /// make (`mhr check` says so).
    fn deletes_foreign(&self) -> bool {
        false
    }
}

/// A seed lab whose host is configured by a real manager `M`. Dropping it
/// stops the manager, then the DHCP servers, then removes the namespaces.
pub struct ManagedLab<M> {
    pub manager: M,
    /// dnsmasq in the router of each uplink configured by DHCP.
    pub servers: Vec<DhcpServer>,
    pub lab: SeedLab,
    dir: TempDir,
}

/// How long a manager gets to configure both uplinks (dhclient retries a
/// lost first DISCOVER only after 3 to 15 s).
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(40);

impl<M: Manager> ManagedLab<M> {
    /// Builds a bare lab, serves DHCP where `addressing` asks for it,
    /// starts the manager with `start(host, directory, addressing)` and
    /// waits until both uplinks have their addresses; then resolves the
    /// neighbours on the host's segments.
    pub fn start(
        addressing: [Addressing; 2],
        start: impl FnOnce(&Netns, &Path, [Addressing; 2]) -> Result<M>,
    ) -> Result<Self> {
        let lab = SeedLab::start_bare()?;
        let dir = TempDir::new("manager")?;
        // Managers drop privileges (networkd runs as systemd-network).
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(LabError::io(format!("opening up {}", dir.path().display())))?;
        let mut servers = Vec::new();
        for ((uplink, router), addressing) in lab.uplinks().iter().zip(&lab.routers).zip(addressing) {
            if addressing == Addressing::Dhcp {
                servers.push(DhcpServer::start(router, uplink, dir.path(), false, false)?);
            }
        }
        let manager = start(&lab.host, dir.path(), addressing)?;
        let managed = Self { manager, servers, lab, dir };
        managed.wait_for("both uplinks' addresses", CONFIGURE_TIMEOUT, |host| {
            let missing: Vec<String> =
                crate::seed_lab::UPLINKS.iter().filter_map(|uplink| lacks_address(host, uplink)).collect();
            if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) }
        })?;
        managed.lab.learn_host_neighbours(false)?;
        Ok(managed)
    }

    pub fn host(&self) -> &Netns {
        &self.lab.host
    }

    /// The lab's directory (manager configs, logs, leases).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Polls `check` on the host every 100 ms until it passes; after
    /// `timeout` an error with the last observation, the host's addresses
    /// and routes and the manager's log.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Netns) -> Result<(), String>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let observed = match check(&self.lab.host) {
                Ok(()) => return Ok(()),
                Err(observed) => observed,
            };
            if Instant::now() >= deadline {
                return Err(LabError::Parse {
                    command: format!("waiting {timeout:?} for {} to set up {what}", self.manager.name()),
                    output: format!("{observed}\n{}", self.report()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The host's addresses and IPv4 routes and the end of the manager's
    /// log, for error messages.
    pub fn report(&self) -> String {
        let host = &self.lab.host;
        let mut report = String::new();
        for args in [&["-br", "addr"][..], &["-4", "route", "show", "table", "all"], &["-4", "rule"]] {
            report +=
                &format!("--- ip {}\n{}", args.join(" "), host.ip(args).unwrap_or_else(|e| e.to_string()));
        }
        let log = self.manager.log();
        let lines: Vec<&str> = log.lines().collect();
        report += &format!("--- {} log (end)\n", self.manager.name());
        for line in &lines[lines.len().saturating_sub(40)..] {
            report += &format!("{line}\n");
        }
        report
    }
}

/// `Some(what is missing)` while `uplink` lacks its address.
fn lacks_address(host: &Netns, uplink: &Uplink) -> Option<String> {
    let address = format!("{}/{}", uplink.address, uplink.prefix_len);
    let shown = host.ip(["-4", "-o", "addr", "show", "dev", uplink.interface]).unwrap_or_default();
    let found = shown.lines().any(|line| crate::dhcp::field(line, "inet") == Some(&address));
    (!found).then(|| format!("{}: address {address}", uplink.interface))
}

/// The IPv4 default routes of main on `interface`, as `ip` prints them.
pub fn main_defaults_on(host: &Netns, interface: &str) -> Vec<String> {
    let routes = host.ip(["-4", "route", "show", "default", "table", "main", "dev", interface]);
    routes.unwrap_or_default().lines().map(str::to_owned).collect()
}

/// A daemon run by `sh -c SCRIPT DIR` as PID 1 of its own PID namespace,
/// in a private mount namespace, inside `host`'s network namespace. The
/// shell stays PID 1 (no `exec`): when the daemon exits, the shell does
/// and every helper it left in the namespace dies with it; killing the
/// `unshare` process (on drop) kills them all too.
pub(crate) struct Daemon {
    netns: String,
    script: &'static str,
    dir: PathBuf,
    /// The daemon's process name (`comm`, at most 15 bytes).
    comm: &'static str,
    process: Process,
}

impl Daemon {
    pub(crate) fn start(host: &Netns, script: &'static str, dir: &Path, comm: &'static str) -> Result<Self> {
        let log = dir.join(format!("{comm}.log"));
        let daemon = Self {
            netns: host.name().to_owned(),
            script,
            dir: dir.to_owned(),
            comm,
            process: Process::new(log, false),
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&self) -> Result<()> {
        let mut command = in_netns(&self.netns, "unshare");
        command
            .args(["--mount", "--propagation=private", "--uts", "--pid", "--fork", "--kill-child=SIGKILL"])
            .args(["sh", "-c", self.script])
            .arg(&self.dir);
        self.process.start(command)
    }

    /// The daemon's pid (the first process below `unshare` named `comm`).
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut pending = vec![self.process.pid()?];
        while let Some(pid) = pending.pop() {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() == self.comm {
                return Some(pid);
            }
            pending.extend(children(pid));
        }
        None
    }

    /// SIGTERM to the daemon; waits (up to 10 s) until it and its
    /// namespace are gone, then starts it again.
    pub(crate) fn restart(&self) -> Result<()> {
        let pid = self.pid().ok_or_else(|| LabError::Parse {
            command: format!("finding {}", self.comm),
            output: format!("not running:\n{}", self.log()),
        })?;
        checked(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.process.running() {
            if Instant::now() >= deadline {
                return Err(LabError::Parse {
                    command: format!("kill -TERM {pid} ({})", self.comm),
                    output: format!("still running after 10 s:\n{}", self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn()
    }

    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}

/// Writes `text` to `path` with `mode`.
pub(crate) fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).map_err(LabError::io(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(LabError::io(format!("setting the mode of {}", path.display())))
}

/// Creates directory `path` with `mode`.
pub(crate) fn make_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(LabError::io(format!("creating {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(LabError::io(format!("setting the mode of {}", path.display())))
}
