//! The southbound: everything that speaks netlink. Messages are encoded
//! and decoded here, change notifications subscribed to here; observe,
//! apply, check and the daemon work on mhr's model only.

pub mod decode;
pub mod dump;
pub mod encode;
pub mod subscribe;

use rtnetlink::Handle;

pub use encode::describe_error;

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
        tracing::info!(%err, "no strict netlink dump checking: reading every routing table");
        return Ok(None);
    }
    tokio::spawn(connection);
    Ok(Some(handle))
}
