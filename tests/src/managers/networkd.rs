//! systemd-networkd on the lab host, with its default `networkd.conf`
//! (ManageForeignRoutes=yes, ManageForeignRoutingPolicyRules=yes): an empty
//! file is bind-mounted over /etc/systemd/networkd.conf so the machine's
//! own settings never leak in.
//!
//! networkd waits for udev (not running in the lab) unless /sys is
//! read-only; with it read-only it takes links as they are enumerated,
//! before it has read the rules and routes, and so a restart leaves other
//! agents' rules and routes alone. A real host's networkd drops them on a
//! restart (systemd issues 19106, 22077). So the lab plays udev: /sys stays
//! writable and /run/udev is a database in which every ifindex up to
//! [`UDEV_LINKS`] is already initialised. networkd then configures each
//! link after its enumeration, as on a host, and a new link at once.
//!
//! With [`KEEP_FOREIGN`] (what `mhr init` advises) the uplinks' .network
//! files also get `KeepConfiguration=static`: without it a restart drops
//! and re-adds the addresses, and the kernel takes every route through
//! them, mhr's tables included (measured: the test fails without it).
//!
//! Static uplinks get `Address=` and `Gateway=` (networkd installs the
//! default at metric 0), DHCP uplinks `DHCP=yes` (metric 1024). IPv6 stays
//! off (`LinkLocalAddressing=no`, `IPv6AcceptRA=no`): the lab is IPv4.

use std::path::{Path, PathBuf};

use super::{Addressing, Daemon, Manager, make_dir, write};
use crate::{Netns, Result, seed_lab::UPLINKS};

/// $0 is the lab's directory. /sys is mounted again (this namespace's
/// devices); /run/udev is the lab's udev database.
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 none /run
mkdir -p /run/systemd /run/udev
mount -t sysfs sysfs /sys
mount --bind "$0/networkd/udev" /run/udev
mount --bind "$0/networkd/network" /etc/systemd/network
mount --bind "$0/networkd/networkd.conf" /etc/systemd/networkd.conf
/lib/systemd/systemd-networkd
exit $?"#;

pub struct Networkd {
    daemon: Daemon,
    config: PathBuf,
    /// Its networkd.conf leaves foreign rules and routes alone.
    keeps_foreign: bool,
}

/// What `mhr init` tells a networkd host to set.
pub const KEEP_FOREIGN: &str = "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n";

/// The ifindexes the lab's udev database marks initialised.
pub const UDEV_LINKS: u32 = 64;

impl Networkd {
    /// Writes a `.network` file per uplink and starts networkd on `host`
    /// with its default networkd.conf.
    pub fn start(host: &Netns, dir: &Path, addressing: [Addressing; 2]) -> Result<Self> {
        Self::start_with(host, dir, addressing, "")
    }

    /// [`Networkd::start`] with `networkd_conf` as its networkd.conf.
    pub fn start_with(
        host: &Netns,
        dir: &Path,
        addressing: [Addressing; 2],
        networkd_conf: &str,
    ) -> Result<Self> {
        let config = dir.join("networkd/network");
        make_dir(&config, 0o755)?;
        write(&dir.join("networkd/networkd.conf"), networkd_conf, 0o644)?;
        for (uplink, addressing) in UPLINKS.iter().zip(addressing) {
            let network = match addressing {
                Addressing::Static => {
                    format!("Address={}/{}\nGateway={}\n", uplink.address, uplink.prefix_len, uplink.gateway)
                }
                Addressing::Dhcp => "DHCP=yes\n".to_owned(),
            };
            let keep = if networkd_conf == KEEP_FOREIGN { "KeepConfiguration=static\n" } else { "" };
            let text = format!(
                "[Match]\nName={}\n\n[Network]\n{network}LinkLocalAddressing=no\nIPv6AcceptRA=no\n{keep}",
                uplink.interface
            );
            write(&config.join(format!("10-{}.network", uplink.interface)), &text, 0o644)?;
        }
        let udev = dir.join("networkd/udev/data");
        make_dir(&udev, 0o755)?;
        for index in 1..=UDEV_LINKS {
            write(&udev.join(format!("n{index}")), "I:1\n", 0o644)?;
        }
        let daemon = Daemon::start(host, SCRIPT, dir, "systemd-network")?;
        Ok(Self { daemon, config, keeps_foreign: networkd_conf == KEEP_FOREIGN })
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

    fn deletes_foreign(&self) -> bool {
        !self.keeps_foreign
    }
}
