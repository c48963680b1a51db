//! Daemons the lab runs (DHCP servers and clients, network managers) as
//! child processes that can be stopped and started again.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
};

use crate::{LabError, Result, describe};

/// A daemon that can be stopped and started again, its output appended to
/// `log`; killed on drop unless kept.
pub(crate) struct Process {
    pub(crate) log: PathBuf,
    keep: bool,
    child: Mutex<Option<Child>>,
}

impl Process {
    pub(crate) fn new(log: PathBuf, keep: bool) -> Self {
        Self { log, keep, child: Mutex::default() }
    }

    pub(crate) fn start(&self, mut command: Command) -> Result<()> {
        self.stop();
        let shown = describe(&command);
        let open = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(LabError::io(format!("opening {}", self.log.display())))
        };
        // Own process group: a Ctrl-C meant for the test does not reach it.
        command.stdin(Stdio::null()).stdout(open()?).stderr(open()?).process_group(0);
        if !self.keep {
            // SAFETY: prctl is async-signal-safe and nothing is allocated.
            unsafe {
                command.pre_exec(|| {
                    let signal = nix::libc::SIGKILL as nix::libc::c_ulong;
                    match nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, signal) {
                        -1 => Err(std::io::Error::last_os_error()),
                        _ => Ok(()),
                    }
                });
            }
        }
        let child = command.spawn().map_err(LabError::io(format!("could not start `{shown}`")))?;
        *self.lock() = Some(child);
        Ok(())
    }

    pub(crate) fn stop(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut child = self.lock();
        let child = child.as_mut()?;
        matches!(child.try_wait(), Ok(None)).then(|| child.id())
    }

    pub(crate) fn running(&self) -> bool {
        self.pid().is_some()
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}

/// `program` in network namespace `netns`, as [`Netns::command`] runs it.
pub(crate) fn in_netns(netns: &str, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net=/run/netns/{netns}")).arg(program);
    command
}

/// The children of process `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}
