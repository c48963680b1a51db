//! The real kernel behind [`crate::southbound::Southbound`]: everything
//! that speaks rtnetlink. Link, address, route, rule and neighbour
//! messages are encoded and decoded here, route lookups asked and change
//! notifications subscribed to here, established connections listed
//! (sock_diag); the rest of mhr works on its model.

pub mod decode;
pub mod encode;
mod kernel;
pub mod nexthop;
pub mod observe;
pub mod sock_diag;
pub mod subscribe;

pub use kernel::Kernel;

use std::net::IpAddr;

use futures::TryStreamExt as _;
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::{model::Route, southbound::KernelError};

use encode::kernel_error;

/// rtnetlink connections in the calling thread's network namespace (needs
/// a tokio runtime): a plain one, and one whose dumps the kernel filters
/// (NETLINK_GET_STRICT_CHK), None where the kernel does not offer it.
pub fn connect() -> std::io::Result<(Handle, Option<Handle>)> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok((handle, filtering_connection()?))
}

fn filtering_connection() -> std::io::Result<Option<Handle>> {
    use rtnetlink::sys::AsyncSocket as _;
    let (mut connection, handle, _) = rtnetlink::new_connection()?;
    if let Err(err) = connection.socket_mut().socket_mut().set_netlink_get_strict_chk(true) {
        tracing::info!(error = %crate::Chain(&err), "no strict netlink dump checking: reading every routing table");
        return Ok(None);
    }
    tokio::spawn(connection);
    Ok(Some(handle))
}

/// The route the kernel picks for `destination`, from `source` and as if
/// received on `iif` when given (`ip route get`); the answer's fields, as a
/// route.
pub async fn route_lookup(
    handle: &Handle,
    destination: IpAddr,
    source: Option<IpAddr>,
    iif: Option<u32>,
    flow: &crate::model::Flow,
) -> Result<Route, KernelError> {
    let host = |address: IpAddr| if address.is_ipv4() { 32 } else { 128 };
    let invalid = |_| KernelError::Refused(libc::EINVAL);
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination, host(destination))
        .map_err(invalid)?;
    if let Some(source) = source {
        builder = builder.source_prefix(source, host(source)).map_err(invalid)?;
    }
    if let Some(iif) = iif {
        builder = builder.input_interface(iif);
    }
    let mut message = builder.build();
    // `ip route get … ipproto tcp dport 443 uid 1000 mark 1`: what steering
    // rules select on.
    use rtnetlink::packet_route::route::RouteAttribute;
    let flow_attributes = [
        flow.ipproto.map(RouteAttribute::IpProto),
        flow.sport.map(RouteAttribute::Sport),
        flow.dport.map(RouteAttribute::Dport),
        flow.uid.map(RouteAttribute::Uid),
        flow.mark.map(RouteAttribute::Mark),
    ];
    message.attributes.extend(flow_attributes.into_iter().flatten());
    let messages: Vec<_> =
        handle.route().get(message).execute().try_collect().await.map_err(|err| kernel_error(&err))?;
    messages.iter().find_map(decode::route_fields).ok_or(KernelError::Refused(libc::ENETUNREACH))
}
