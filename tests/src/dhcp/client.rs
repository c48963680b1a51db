//! dhcpcd on the host, one per uplink, in mount and PID namespaces of its
//! own so that it never touches the machine's files or outlives the lab.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    LabError, Netns, Result, checked,
    process::{Process, children, in_netns},
    seed_lab::Uplink,
};

/// dhcpcd on the host for one uplink: IPv4 only, the uplink's metric.
pub struct DhcpClient {
    netns: String,
    pub(super) uplink: Uplink,
    /// Its config, and what it sees as /run and /var/lib/dhcpcd.
    dir: PathBuf,
    pub(super) process: Process,
}

/// Run by `unshare` as PID 1 of dhcpcd's PID namespace, with $0 = the
/// client's directory and $1 = the interface. It stays PID 1 (`exit` after
/// dhcpcd, no `exec`): dhcpcd drops privileges, which would clear the
/// parent-death signal `unshare --kill-child` sets.
const DHCPCD_SCRIPT: &str = r#"set -e
mount -n --bind "$0/run" /run
mkdir -p /run/dhcpcd
mount -n --bind "$0/lib" /var/lib/dhcpcd
mount -n --bind -o ro /etc /etc
dhcpcd --nobackground --debug --config "$0/dhcpcd.conf" "$1"
exit $?"#;

impl DhcpClient {
    /// Starts dhcpcd for `uplink` on `host`, its files under `dir`.
    pub fn start(host: &Netns, uplink: &Uplink, dir: &Path, keep: bool) -> Result<Self> {
        let ifname = uplink.interface;
        let dir = dir.join(format!("dhcpcd-{ifname}"));
        let lib = dir.join("lib");
        fs::create_dir_all(&lib).map_err(LabError::io(format!("creating {}", lib.display())))?;
        let config = dir.join("dhcpcd.conf");
        let text = format!(
            "# The seed lab's {ifname}: IPv4 only, no hook script.\n\
             script \"\"\nipv4only\nnoipv6rs\nnoipv4ll\nnoarp\nnodelay\nnodev\n\
             metric {}\n\
             # The same lease when {ifname} is re-created with another MAC address.\n\
             clientid mhr-lab-{ifname}\n",
            uplink.metric
        );
        fs::write(&config, text).map_err(LabError::io(format!("writing {}", config.display())))?;
        let log = dir.with_extension("log");
        let process = Process::new(log, keep);
        let client = Self { netns: host.name().to_owned(), uplink: *uplink, dir, process };
        client.restart()?;
        Ok(client)
    }

    /// Kills dhcpcd (its address and routes stay, as after a crash) and
    /// starts it again: it asks for its lease again at once. Needed after
    /// its interface was deleted (dhcpcd then exits).
    pub fn restart(&self) -> Result<()> {
        self.process.stop();
        // A fresh /run: no control sockets left from the killed one.
        let run = self.dir.join("run");
        let _ = fs::remove_dir_all(&run);
        fs::create_dir_all(&run).map_err(LabError::io(format!("creating {}", run.display())))?;
        let mut command = in_netns(&self.netns, "unshare");
        command
            .args(["--mount", "--propagation=private", "--uts", "--pid", "--fork", "--kill-child=SIGKILL"])
            .args(["sh", "-c", DHCPCD_SCRIPT])
            .arg(&self.dir)
            .arg(self.uplink.interface);
        self.process.start(command)
    }

    /// Kills dhcpcd without releasing: the address and routes stay until
    /// the address's lifetime (the lease) runs out.
    pub fn stop(&self) {
        self.process.stop();
    }

    /// Makes the running dhcpcd renew its lease now (SIGUSR1), as it does
    /// by itself at T1. It re-adds its default route if it is missing.
    pub fn renew(&self) -> Result<()> {
        let pid = self.dhcpcd_pid().ok_or_else(|| LabError::Parse {
            command: format!("finding dhcpcd for {}", self.uplink.interface),
            output: format!("not running:\n{}", self.log()),
        })?;
        checked(Command::new("kill").args(["-USR1", &pid.to_string()])).map(drop)
    }

    pub fn is_running(&self) -> bool {
        self.process.running()
    }

    /// What dhcpcd logged (`--debug`).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// dhcpcd's main process: the child of the shell below `unshare`.
    fn dhcpcd_pid(&self) -> Option<u32> {
        let init = children(self.process.pid()?).into_iter().next()?;
        children(init).into_iter().next()
    }
}
