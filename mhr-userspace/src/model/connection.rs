//! An established TCP connection of this host, as sock_diag lists it.

use std::net::SocketAddr;

use serde::Serialize;

use super::Family;

/// An established TCP connection of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Connection {
    pub fn family(&self) -> Family {
        Family::of(&self.local.ip())
    }

    /// `tcp 10.0.3.10:22 ⇄ 192.0.2.100:51234 (ssh)`.
    pub fn describe(&self) -> String {
        let service = if self.local.port() == 22 { " (ssh)" } else { "" };
        format!("tcp {} ⇄ {}{service}", self.local, self.remote)
    }
}
