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
