//! The servers TCP, DNS and HTTP probes reach in the lab, each the real
//! thing from a Debian package: dnsmasq answering DNS (no upstream, so the
//! root's SOA gets an answer with an error code, which is all a probe
//! needs) and busybox's httpd serving files.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{LabError, Netns, Result, describe, process::Process};

/// Starts `command` and waits until `ready` (it serves).
fn start(process: &Process, command: Command, ready: impl Fn() -> bool) -> Result<()> {
    let shown = describe(&command);
    process.start(command)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        if Instant::now() >= deadline || !process.running() {
            return Err(LabError::Parse {
                command: shown,
                output: format!("not serving after 5 s:\n{}", process.log()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// dnsmasq as a DNS server only, on `address` port 53 in `netns`.
pub struct DnsServer {
    process: Process,
}

impl DnsServer {
    pub fn start(netns: &Netns, address: IpAddr, dir: &Path) -> Result<Self> {
        let pid_file = dir.join(format!("dns-{address}.pid"));
        let _ = fs::remove_file(&pid_file);
        let mut command = netns.command("dnsmasq");
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--log-queries",
            "--log-facility=-",
        ]);
        command.arg(format!("--listen-address={address}")).arg(format!("--pid-file={}", pid_file.display()));
        let process = Process::new(dir.join(format!("dns-{address}.log")), false);
        // dnsmasq writes its pid file once its sockets are open.
        start(&process, command, || pid_file.exists())?;
        Ok(Self { process })
    }

    /// What dnsmasq logged (every query it answered).
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn stop(&self) {
        self.process.stop();
    }
}

/// busybox httpd on `address` in `netns`, serving `/health` (200) from a
/// directory of its own.
pub struct HttpServer {
    process: Process,
    root: PathBuf,
}

impl HttpServer {
    pub fn start(netns: &Netns, address: SocketAddr, dir: &Path) -> Result<Self> {
        let root = dir.join(format!("www-{}", address.port()));
        fs::create_dir_all(&root).map_err(LabError::io(format!("creating {}", root.display())))?;
        fs::write(root.join("health"), "ok\n").map_err(LabError::io("writing the health page"))?;
        let mut command = netns.command("busybox");
        command.args(["httpd", "-f", "-vv", "-p", &address.to_string(), "-h"]).arg(&root);
        let process = Process::new(dir.join(format!("httpd-{}.log", address.port())), false);
        let listening = || {
            netns
                .run(move || {
                    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok()
                })
                .unwrap_or(false)
        };
        start(&process, command, listening)?;
        Ok(Self { process, root })
    }

    /// `/health` answers 404 from now on (the server itself still answers).
    pub fn fail_health(&self) -> Result<()> {
        fs::remove_file(self.root.join("health")).map_err(LabError::io("removing the health page"))
    }

    /// What httpd logged (every request, with `-vv`).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A DNS responder that answers late: this kernel has no `netem`, so delay
/// on one uplink's path is made here. It answers every query (any name,
/// any type) with the query's id and no records, `delay` after it came.
pub struct SlowDnsResponder {
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowDnsResponder {
    pub fn start(netns: &Netns, address: SocketAddr) -> Result<Self> {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64},
        };
        let socket = netns
            .run(move || std::net::UdpSocket::bind(address))?
            .map_err(LabError::io(format!("binding {address} in {}", netns.name())))?;
        socket.set_read_timeout(Some(Duration::from_millis(5))).map_err(LabError::io("socket timeout"))?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (delay, stopped) = (Arc::clone(&delay_ms), Arc::clone(&stop));
        let thread = std::thread::spawn(move || serve_late(&socket, &delay, &stopped));
        Ok(Self { delay_ms, stop, thread: Some(thread) })
    }

    /// Answers take `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve_late(
    socket: &std::net::UdpSocket,
    delay_ms: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let mut pending: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((length, from)) = socket.recv_from(&mut buffer)
            && length >= 12
        {
            let mut reply = buffer[..length].to_vec();
            reply[2] |= 0x80; // QR: a response
            let due = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
            pending.push((due, reply, from));
        }
        let now = Instant::now();
        pending.retain(|(due, reply, to)| {
            if *due > now {
                return true;
            }
            let _ = socket.send_to(reply, to);
            false
        });
    }
}

impl Drop for SlowDnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
