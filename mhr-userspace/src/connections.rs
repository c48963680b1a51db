//! Established TCP connections (the southbound lists them) and which
//! uplink each leaves by: now (a route lookup from its local
//! address) and under a plan (the uplink that owns its local address, or
//! main's default).

use std::{io, net::IpAddr};

use serde::Serialize;

use crate::{model::Connection, plan::Desired};

/// Which uplink a connection leaves by once `desired` is in place: the one
/// that owns its local address (the from-rules), else main's default
/// holder when it leaves by a gateway now, else where it leaves now.
pub fn egress_after(desired: &Desired, connection: &Connection, now: Option<(u32, bool)>) -> Option<u32> {
    let local = connection.local.ip();
    if let Some(owner) = owner(desired, local) {
        return Some(owner);
    }
    match now {
        Some((_, true)) => {
            let holder = desired.active.get(&connection.family())?.first()?;
            desired.uplinks.iter().find(|u| &u.interface == holder).map(|u| u.index)
        }
        other => other.map(|(index, _)| index),
    }
}

/// The ifindex of the uplink whose address `local` is, under `desired`.
pub fn owner(desired: &Desired, local: IpAddr) -> Option<u32> {
    desired.uplinks.iter().find(|u| u.addresses.iter().any(|a| a.addr() == local)).map(|u| u.index)
}

/// One connection: the uplink it leaves by now and after a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionPath {
    pub connection: Connection,
    /// Interface the kernel sends it out of now.
    pub now: Option<String>,
    /// Interface it leaves by once the plan is applied.
    pub after: Option<String>,
    /// The uplink whose address its local address is.
    pub owner: Option<String>,
}

impl ConnectionPath {
    pub fn moves(&self) -> bool {
        self.now != self.after
    }

    /// Leaves by another uplink than the one that owns its address.
    pub fn asymmetric_now(&self) -> bool {
        self.owner.is_some() && self.now != self.owner
    }
}

/// Every established connection with where it leaves now (the kernel's
/// lookup) and under `desired`.
pub async fn paths(
    kernel: &dyn crate::southbound::Southbound,
    desired: &Desired,
    names: &crate::model::Names,
) -> io::Result<Vec<ConnectionPath>> {
    let mut paths = Vec::new();
    for connection in kernel.connections()? {
        let now = crate::southbound::path(kernel, connection.remote.ip(), Some(connection.local.ip()), None)
            .await
            .ok()
            .and_then(|path| Some((path.interface?, path.gateway.is_some())));
        let after = egress_after(desired, &connection, now);
        let name = |index: u32| names.interface(index);
        paths.push(ConnectionPath {
            connection,
            now: now.map(|(index, _)| name(index)),
            after: after.map(name),
            owner: owner(desired, connection.local.ip()).map(name),
        });
    }
    Ok(paths)
}
