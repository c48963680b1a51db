//! Reachability probes: ping and a TCP exchange, run from inside a namespace.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{LabError, Netns, Result};

/// What a [`TcpResponder`] sends to every connection.
pub const BANNER: &[u8] = b"mhr-lab\n";

/// One ICMP echo from `from` to `to`; true when the reply came back in time.
pub fn ping(from: &Netns, to: IpAddr, timeout: Duration) -> Result<bool> {
    let seconds = timeout.as_secs().max(1).to_string();
    let mut command = from.command("ping");
    command.args(["-n", "-q", "-c", "1", "-W", &seconds, &to.to_string()]);
    let output = command.output().map_err(LabError::io(format!("could not run ping in {}", from.name())))?;
    Ok(output.status.success())
}

/// Connects from `from` to `to` and reads the responder's banner; true when
/// the whole exchange finished within `timeout`.
pub fn tcp_exchange(from: &Netns, to: SocketAddr, timeout: Duration) -> Result<bool> {
    from.run(move || -> std::io::Result<bool> {
        let mut stream = match TcpStream::connect_timeout(&to, timeout) {
            Ok(stream) => stream,
            Err(err) if matches!(err.kind(), std::io::ErrorKind::TimedOut) => return Ok(false),
            Err(err) => return Err(err),
        };
        stream.set_read_timeout(Some(timeout))?;
        let mut banner = [0u8; BANNER.len()];
        Ok(stream.read_exact(&mut banner).is_ok() && banner == BANNER)
    })?
    .map_err(LabError::io(format!("TCP probe from {} to {to}", from.name())))
}

/// A TCP server inside a namespace that greets every connection with
/// [`BANNER`]; listens on all IPv4 and IPv6 addresses. Stops when dropped.
pub struct TcpResponder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl TcpResponder {
    pub fn start(netns: &Netns, port: u16) -> Result<Self> {
        let listener = netns
            .run(move || TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)))?
            .map_err(LabError::io(format!("listening on port {port} in {}", netns.name())))?;
        listener.set_nonblocking(true).map_err(LabError::io("making the listener non-blocking"))?;
        let port = listener.local_addr().map_err(LabError::io("reading the listener address"))?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(BANNER);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { stop, thread: Some(thread), port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TcpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port` inside `netns`: the status
/// code and body, or `None` if nothing answered.
pub fn http_get(netns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_owned();
    netns
        .run(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            let (head, body) = response.split_once("\r\n\r\n")?;
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((status, body.to_owned()))
        })
        .ok()
        .flatten()
}
