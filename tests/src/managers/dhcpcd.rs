//! dhcpcd on the lab host, as the DHCP lab runs it ([`crate::dhcp`]): one
//! process per uplink, IPv4 only, no hook script, the uplink's metric
//! (100 for ens3, 200 for ens4).

use std::path::Path;

use super::{Addressing, Manager};
use crate::{LabError, Netns, Result, dhcp::DhcpClient, seed_lab::UPLINKS};

pub struct Dhcpcd {
    clients: Vec<DhcpClient>,
}

impl Dhcpcd {
    /// Starts a dhcpcd per uplink on `host`; both must be served by DHCP.
    pub fn start(host: &Netns, dir: &Path, addressing: [Addressing; 2]) -> Result<Self> {
        if addressing.contains(&Addressing::Static) {
            return Err(LabError::Parse {
                command: "Dhcpcd::start".into(),
                output: format!("the lab's dhcpcd only leases addresses, asked for {addressing:?}"),
            });
        }
        let clients = UPLINKS
            .iter()
            .map(|uplink| DhcpClient::start(host, uplink, dir, false))
            .collect::<Result<_>>()?;
        Ok(Self { clients })
    }
}

impl Manager for Dhcpcd {
    fn name(&self) -> &'static str {
        "dhcpcd"
    }

    /// Kills each dhcpcd (as after a crash: its addresses and routes stay)
    /// and starts it again: SIGTERM would make it deconfigure first.
    fn restart(&self) -> Result<()> {
        self.clients.iter().try_for_each(DhcpClient::restart)
    }

    fn log(&self) -> String {
        self.clients.iter().map(DhcpClient::log).collect::<Vec<_>>().join("\n")
    }
}
