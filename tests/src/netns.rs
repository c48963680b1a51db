//! A named network namespace that removes itself when dropped (also while
//! unwinding from a panic).

use std::{
    ffi::OsStr,
    fs::File,
    process::Command,
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

use nix::sched::{CloneFlags, setns};

use crate::{LabError, Result, checked};

/// Every namespace made here is named `mhrlab-<pid>-<n>-<role>`, or
/// `mhrlab-kept-<pid>-<n>-<role>` when it is meant to outlive the process.
const PREFIX: &str = "mhrlab-";
const NETNS_DIR: &str = "/run/netns";

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates a fresh namespace with loopback up, removed on drop. `role`
    /// ends its name.
    pub fn create(role: &str) -> Result<Self> {
        Self::create_with(role, false)
    }

    /// Like [`Netns::create`]; with `keep` the namespace outlives this
    /// process (and is not swept as an orphan by later runs).
    pub fn create_with(role: &str, keep: bool) -> Result<Self> {
        SWEEP.call_once(remove_orphans);
        let kept = if keep { "kept-" } else { "" };
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{kept}{}-{seq}-{role}", std::process::id());
        checked(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { name, keep };
        netns.ip(["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> ARGS`, returning stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = checked(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `ip -n <name> -batch -` fed with `commands` (one per line).
    pub fn ip_batch(&self, commands: &str) -> Result<()> {
        crate::checked_with_input(Command::new("ip").args(["-n", &self.name, "-batch", "-"]), commands)
            .map(drop)
    }

    /// `tc -n <name> ARGS`, returning stdout.
    pub fn tc<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = checked(Command::new("tc").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A command that runs `program` inside this namespace. Only the
    /// network namespace changes (`nsenter --net`): unlike `ip netns exec`,
    /// which remounts /sys, bpffs at /sys/fs/bpf stays visible.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={NETNS_DIR}/{}", self.name)).arg(program);
        command
    }

    /// Runs `f` on a thread that has entered this namespace; sockets, netlink
    /// and bpf attachments made there belong to it.
    pub fn run<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("{NETNS_DIR}/{}", self.name);
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || -> Result<R> {
                let file = File::open(&path).map_err(LabError::io(format!("opening {path}")))?;
                setns(file, CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| LabError::io(format!("entering {path}"))(errno.into()))?;
                Ok(f())
            });
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward` style key).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .map_err(LabError::io(format!("writing {value} to {path} in {}", self.name)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(err) = checked(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: could not remove network namespace {}: {err}", self.name);
        }
    }
}

/// Removes namespaces left by test processes that were killed before their
/// Drop ran (their pid no longer exists).
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
    }
}
