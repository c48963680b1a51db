//! systemd-networkd on the lab host, with its default `networkd.conf`
//! (ManageForeignRoutes=yes, ManageForeignRoutingPolicyRules=yes): an empty
//! file is bind-mounted over /etc/systemd/networkd.conf so the machine's
//! own settings never leak in.
//!
//! Static uplinks get `Address=` and `Gateway=` (networkd installs the
//! default at metric 0), DHCP uplinks `DHCP=yes` (metric 1024). IPv6 stays
//! off (`LinkLocalAddressing=no`, `IPv6AcceptRA=no`): the lab is IPv4.

use std::path::{Path, PathBuf};

use super::{Addressing, Daemon, Manager, make_dir, write};
use crate::{Netns, Result, seed_lab::UPLINKS};

/// $0 is the lab's directory. /sys is mounted again (this namespace's
/// devices) read-only, so networkd does not wait for udev (not running).
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 none /run/systemd
mount -t sysfs -o ro sysfs /sys
mount --bind "$0/networkd/network" /etc/systemd/network
mount --bind "$0/networkd/networkd.conf" /etc/systemd/networkd.conf
/lib/systemd/systemd-networkd
exit $?"#;

pub struct Networkd {
    daemon: Daemon,
    config: PathBuf,
}

impl Networkd {
    /// Writes a `.network` file per uplink and starts networkd on `host`.
    pub fn start(host: &Netns, dir: &Path, addressing: [Addressing; 2]) -> Result<Self> {
        let config = dir.join("networkd/network");
        make_dir(&config, 0o755)?;
        write(&dir.join("networkd/networkd.conf"), "", 0o644)?;
        for (uplink, addressing) in UPLINKS.iter().zip(addressing) {
            let network = match addressing {
                Addressing::Static => {
                    format!("Address={}/{}\nGateway={}\n", uplink.address, uplink.prefix_len, uplink.gateway)
                }
                Addressing::Dhcp => "DHCP=yes\n".to_owned(),
            };
            let text = format!(
                "[Match]\nName={}\n\n[Network]\n{network}LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
                uplink.interface
            );
            write(&config.join(format!("10-{}.network", uplink.interface)), &text, 0o644)?;
        }
        let daemon = Daemon::start(host, SCRIPT, dir, "systemd-network")?;
        Ok(Self { daemon, config })
    }

    /// The directory networkd reads as /etc/systemd/network.
    pub fn config_dir(&self) -> &Path {
        &self.config
    }
}

impl Manager for Networkd {
    fn name(&self) -> &'static str {
        "systemd-networkd"
    }

    fn restart(&self) -> Result<()> {
        self.daemon.restart()
    }

    fn log(&self) -> String {
        self.daemon.log()
    }
}
