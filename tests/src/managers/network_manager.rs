//! NetworkManager on the lab host, with a D-Bus system bus of its own (in
//! its mount namespace: nothing reaches the machine's bus). Its config,
//! keyfile connections, /var/lib and /run/NetworkManager are lab
//! directories, so its state survives a restart as on a host; /sys is
//! read-only, so it does not wait for udev.
//!
//! One keyfile connection per uplink: `method=manual` with the lab's
//! address and gateway, or `method=auto` (its internal DHCP client). It
//! picks the default routes' metrics itself (100, 101, … by device);
//! IPv6 is disabled: the lab is IPv4.

use std::path::Path;

use super::{Addressing, Daemon, Manager, make_dir, write};
use crate::{Netns, Result, seed_lab::UPLINKS};

/// $0 is the lab's directory.
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 none /run
mkdir -p /run/dbus /run/NetworkManager
mount --bind "$0/nm/run" /run/NetworkManager
mount --bind "$0/nm/etc" /etc/NetworkManager
mount --bind "$0/nm/lib" /var/lib/NetworkManager
mount -t sysfs -o ro sysfs /sys
dbus-daemon --config-file="$0/nm/dbus.conf" --fork
NetworkManager --debug
exit $?"#;

/// A system bus for NetworkManager alone: anyone may own and call
/// anything, no service is ever activated.
const DBUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

pub struct NetworkManager {
    daemon: Daemon,
}

impl NetworkManager {
    /// Writes NetworkManager.conf (keyfiles only, no DNS, hostname or
    /// connectivity checks; only the uplinks managed, no automatic
    /// connections) and a connection per uplink; starts it on `host`.
    pub fn start(host: &Netns, dir: &Path, addressing: [Addressing; 2]) -> Result<Self> {
        let nm = dir.join("nm");
        for sub in ["etc/system-connections", "etc/conf.d", "lib", "run"] {
            make_dir(&nm.join(sub), 0o755)?;
        }
        write(&nm.join("dbus.conf"), DBUS_CONF, 0o644)?;
        let managed: Vec<String> =
            UPLINKS.iter().map(|uplink| format!("except:interface-name:{}", uplink.interface)).collect();
        let conf = format!(
            "[main]\nplugins=keyfile\ndns=none\nrc-manager=unmanaged\nhostname-mode=none\n\
             auth-polkit=false\nno-auto-default=*\n\n[keyfile]\nunmanaged-devices={}\n\n\
             [connectivity]\nenabled=false\n",
            managed.join(";")
        );
        write(&nm.join("etc/NetworkManager.conf"), &conf, 0o644)?;
        for (uplink, addressing) in UPLINKS.iter().zip(addressing) {
            let ipv4 = match addressing {
                Addressing::Static => format!(
                    "method=manual\naddress1={}/{},{}\n",
                    uplink.address, uplink.prefix_len, uplink.gateway
                ),
                Addressing::Dhcp => "method=auto\n".to_owned(),
            };
            let ifname = uplink.interface;
            let text = format!(
                "[connection]\nid={ifname}\ntype=ethernet\ninterface-name={ifname}\n\n\
                 [ipv4]\n{ipv4}\n[ipv6]\nmethod=disabled\n"
            );
            // NetworkManager ignores connection files others can read.
            write(&nm.join(format!("etc/system-connections/{ifname}.nmconnection")), &text, 0o600)?;
        }
        let daemon = Daemon::start(host, SCRIPT, dir, "NetworkManager")?;
        Ok(Self { daemon })
    }
}

impl Manager for NetworkManager {
    fn name(&self) -> &'static str {
        "NetworkManager"
    }

    fn restart(&self) -> Result<()> {
        self.daemon.restart()
    }

    fn log(&self) -> String {
        self.daemon.log()
    }
}
