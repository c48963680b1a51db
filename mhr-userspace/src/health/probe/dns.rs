//! DNS probes: one UDP query for the root zone's SOA; any answer with the
//! query's id counts (NOERROR, REFUSED or SERVFAIL all prove the server
//! heard us through this uplink). The query is fixed bytes, so no DNS
//! library is needed.

use std::{net::SocketAddr, time::Duration};

use super::{ProbePlan, socket};

/// Header (id, RD set, one question) and the question `. IN SOA`.
fn question(id: u16) -> [u8; 17] {
    let [high, low] = id.to_be_bytes();
    [high, low, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x00, 0, 6, 0, 1]
}

/// Whether `reply` answers the query `id`: the same id and the QR bit set.
fn answers(reply: &[u8], id: u16) -> bool {
    reply.len() >= 12 && reply[..2] == id.to_be_bytes() && reply[2] & 0x80 != 0
}

pub(super) async fn query(plan: &ProbePlan, to: SocketAddr, timeout: Duration) -> std::io::Result<Duration> {
    let started = tokio::time::Instant::now();
    let exchange = async {
        let socket = socket::udp(plan, to).await?;
        let id = rand_id();
        socket.send(&question(id)).await?;
        let mut reply = [0u8; 512];
        loop {
            let length = socket.recv(&mut reply).await?;
            if answers(&reply[..length], id) {
                return Ok(started.elapsed());
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
    })
}

/// A query id that an off-path sender cannot guess from the clock alone.
fn rand_id() -> u16 {
    let mut bytes = [0u8; 2];
    if getrandom(&mut bytes).is_err() {
        return std::process::id() as u16;
    }
    u16::from_ne_bytes(bytes)
}

fn getrandom(buffer: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: the buffer is valid for its length; getrandom writes at most that.
    let written = unsafe { libc::getrandom(buffer.as_mut_ptr().cast(), buffer.len(), 0) };
    if written == buffer.len() as isize { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_asks_the_root_for_its_soa_and_only_its_own_reply_counts() {
        let bytes = question(0xabcd);
        assert_eq!(&bytes[..2], &[0xab, 0xcd]);
        assert_eq!(&bytes[4..6], &[0, 1], "one question");
        assert_eq!(&bytes[12..], &[0, 0, 6, 0, 1], "root name, type SOA, class IN");
        let mut reply = bytes.to_vec();
        assert!(!answers(&reply, 0xabcd), "a query is not a reply");
        reply[2] |= 0x80;
        reply[3] = 0x05; // REFUSED still proves the path
        assert!(answers(&reply, 0xabcd));
        assert!(!answers(&reply, 0xabce), "another query's reply");
        assert!(!answers(&reply[..11], 0xabcd), "shorter than a header");
    }
}
