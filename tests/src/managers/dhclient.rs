//! ISC dhclient on the lab host, one process for both uplinks, with
//! Debian's dhclient-script and hooks and /etc/dhcp/dhclient.conf. Its
//! mount namespace has a private /run (the hooks find no systemd there), a
//! read-only /etc and a lab file bound over /etc/resolv.conf (the script
//! rewrites it); leases and pid file are in the lab's directory.
//!
//! dhclient-script installs each lease's default route without a metric
//! (0): the first uplink bound gets it, the second's `ip route add` fails
//! (same destination and metric), so one uplink has no default in any
//! route ([`Dhclient::without_default`]). It never re-adds a default the
//! kernel removed with its link, until the lease is bound anew.

use std::path::Path;

use super::{Addressing, Daemon, Manager, make_dir, write};
use crate::{LabError, Netns, Result, seed_lab::UPLINKS};

/// $0 is the lab's directory, then the interfaces.
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 none /run
mount --bind -o ro /etc /etc
mount --bind "$0/dhclient/resolv.conf" /etc/resolv.conf
dhclient -4 -d -v -pf "$0/dhclient/dhclient.pid" -lf "$0/dhclient/dhclient.leases" ens3 ens4
exit $?"#;

pub struct Dhclient {
    daemon: Daemon,
}

impl Dhclient {
    /// Starts dhclient on `host` for both uplinks; both must be served by
    /// DHCP (`addressing`).
    pub fn start(host: &Netns, dir: &Path, addressing: [Addressing; 2]) -> Result<Self> {
        if addressing.contains(&Addressing::Static) {
            return Err(LabError::Parse {
                command: "Dhclient::start".into(),
                output: format!("dhclient only leases addresses, asked for {addressing:?}"),
            });
        }
        make_dir(&dir.join("dhclient"), 0o755)?;
        write(&dir.join("dhclient/resolv.conf"), "", 0o644)?;
        let daemon = Daemon::start(host, SCRIPT, dir, "dhclient")?;
        Ok(Self { daemon })
    }

    /// The uplinks (index, interface) without a default route in main:
    /// dhclient-script could not add their lease's (it writes nowhere else).
    pub fn without_default(host: &Netns) -> Vec<(usize, &'static str)> {
        UPLINKS
            .iter()
            .enumerate()
            .filter(|(_, uplink)| super::main_defaults_on(host, uplink.interface).is_empty())
            .map(|(index, uplink)| (index, uplink.interface))
            .collect()
    }
}

impl Manager for Dhclient {
    fn name(&self) -> &'static str {
        "ISC dhclient"
    }

    fn restart(&self) -> Result<()> {
        self.daemon.restart()
    }

    fn log(&self) -> String {
        self.daemon.log()
    }
}
