//! Real DHCP and IPv6 router advertisements for the seed lab
//! ([`SeedLab::start_dhcp`](crate::SeedLab::start_dhcp)): dnsmasq on each
//! router's `lan` leases the uplink's one address with the router as
//! gateway and advertises itself as IPv6 default router; dhcpcd on the host
//! takes the lease (IPv4 only: the host's kernel learns the IPv6 default
//! route, `proto ra` at the uplink's metric, from the advertisements).
//!
//! Both are child processes owned here, killed when dropped, and also when
//! the thread that started them ends (`PR_SET_PDEATHSIG`), so a test killed
//! before its Drop ran leaves nothing running: start and restart them from
//! the thread that owns the lab. dhcpcd never touches the machine's files:
//! it runs without hook script, in a mount namespace of its own where /run
//! and /var/lib/dhcpcd are lab directories and /etc is read-only, and in a
//! PID namespace of its own so that its privilege-separation helpers die
//! with it.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    LabError, Netns, Result, TempDir, describe,
    process::{Process, in_netns},
    seed_lab::Uplink,
};

mod client;

pub use client::DhcpClient;

/// The lease dnsmasq hands out: its shortest (it raises anything shorter to
/// two minutes). dhcpcd renews at T1, half of it.
pub const LEASE: Duration = Duration::from_secs(120);
/// Lifetime of the IPv6 default route a router advertisement installs; the
/// routers advertise every few seconds. After a router stops, the kernel
/// removes the route up to about 30 s after the lifetime ran out.
pub const RA_LIFETIME: Duration = Duration::from_secs(60);
const RA_INTERVAL_SECS: u64 = 5;
/// How long starting the lab waits for the leases and default routes.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The DHCP side of a seed lab: one server per router and one client per
/// uplink, in [`UPLINKS`](crate::seed_lab::UPLINKS) order. Configs, logs and
/// leases are in [`Dhcp::dir`].
pub struct Dhcp {
    pub servers: Vec<DhcpServer>,
    pub clients: Vec<DhcpClient>,
    // Last: removed once the processes are gone.
    dir: TempDir,
}

impl Dhcp {
    /// Starts a server in each router and a client per uplink on `host`,
    /// and waits until the host is configured (see [`Dhcp::wait_configured`]).
    /// With `keep` the processes and the directory outlive this process.
    pub fn start(host: &Netns, routers: &[Netns], uplinks: &[Uplink], keep: bool) -> Result<Self> {
        let mut dir = TempDir::new("dhcp")?;
        if keep {
            dir.keep();
        }
        let servers = uplinks
            .iter()
            .zip(routers)
            .map(|(uplink, router)| DhcpServer::start(router, uplink, dir.path(), keep, true))
            .collect::<Result<_>>()?;
        let clients = uplinks
            .iter()
            .map(|uplink| DhcpClient::start(host, uplink, dir.path(), keep))
            .collect::<Result<_>>()?;
        let dhcp = Self { servers, clients, dir };
        dhcp.wait_configured(host, START_TIMEOUT)?;
        Ok(dhcp)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until every uplink has its leased address and, in main, its
    /// `default via <gateway> proto dhcp metric <metric>` and a default
    /// route from router advertisements (before anything moves them).
    pub fn wait_configured(&self, host: &Netns, timeout: Duration) -> Result<()> {
        let uplinks: Vec<Uplink> = self.clients.iter().map(|client| client.uplink).collect();
        self.wait(host, timeout, &uplinks, true)
    }

    /// Waits until uplink `index` has its leased address (dhcpcd adds its
    /// routes right after), e.g. after [`DhcpClient::restart`].
    pub fn wait_for_lease(&self, host: &Netns, index: usize, timeout: Duration) -> Result<()> {
        self.wait(host, timeout, &[self.clients[index].uplink], false)
    }

    fn wait(&self, host: &Netns, timeout: Duration, uplinks: &[Uplink], routes: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let lacking: Vec<String> =
                uplinks.iter().flat_map(|uplink| lacks(host, uplink, routes)).collect();
            if lacking.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Parse {
                    command: format!(
                        "waiting {timeout:?} for DHCP and router advertisements in {}",
                        host.name()
                    ),
                    output: format!("still missing: {}\n{}", lacking.join("; "), self.report(host)),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The host's addresses and routes and the end of every log, for error
    /// messages.
    pub fn report(&self, host: &Netns) -> String {
        let mut report = String::new();
        for args in [["-br", "addr"], ["-4", "route"], ["-6", "route"]] {
            let output = host.ip(args).unwrap_or_else(|err| err.to_string());
            report += &format!("--- ip {}\n{output}", args.join(" "));
        }
        let logs =
            self.servers.iter().map(|s| &s.process.log).chain(self.clients.iter().map(|c| &c.process.log));
        for log in logs {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            report += &format!("--- {} (end)\n", log.display());
            for line in &lines[lines.len().saturating_sub(15)..] {
                report += &format!("{line}\n");
            }
        }
        report
    }
}

/// dnsmasq in a router's namespace serving its `lan` (the host's uplink):
/// DHCPv4 for the uplink's address only, router advertisements, no DNS.
pub struct DhcpServer {
    netns: String,
    uplink: Uplink,
    dir: PathBuf,
    /// Whether it also sends router advertisements.
    ra: bool,
    process: Process,
}

impl DhcpServer {
    /// Starts dnsmasq for `uplink` in `router`, its files in `dir`; with
    /// `ra` it also advertises the router for IPv6. Killed when dropped
    /// unless `keep`.
    pub fn start(router: &Netns, uplink: &Uplink, dir: &Path, keep: bool, ra: bool) -> Result<Self> {
        let log = dir.join(format!("dnsmasq-{}.log", uplink.interface));
        let server = Self {
            netns: router.name().to_owned(),
            uplink: *uplink,
            dir: dir.to_owned(),
            ra,
            process: Process::new(log, keep),
        };
        server.restart()?;
        Ok(server)
    }

    /// Starts dnsmasq (stopping it first if it runs); leases it gave out
    /// are kept. Returns once it serves.
    pub fn restart(&self) -> Result<()> {
        let pid_file = self.file("pid");
        let _ = fs::remove_file(&pid_file);
        self.process.start(self.command())?;
        // dnsmasq writes its pid file once its sockets are open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pid_file.exists() {
            if Instant::now() >= deadline || !self.process.running() {
                return Err(LabError::Parse {
                    command: describe(&self.command()),
                    output: format!("no pid file after 5 s:\n{}", self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Restarts dnsmasq leasing `address` with `gateway` as router from now
    /// on (the router must own `gateway`). A client renewing the old
    /// address is refused (NAK) and takes the new lease.
    pub fn serve(&mut self, address: Ipv4Addr, gateway: Ipv4Addr) -> Result<()> {
        self.uplink.address = address;
        self.uplink.gateway = gateway;
        self.restart()
    }

    /// Stops dnsmasq: no more DHCP answers nor router advertisements. The
    /// host keeps its address and IPv4 default route until the lease
    /// expires ([`LEASE`]), its IPv6 default route until [`RA_LIFETIME`]
    /// after the last advertisement.
    pub fn stop(&self) {
        self.process.stop();
    }

    /// What dnsmasq logged (every DHCP exchange, with options).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// dnsmasq's lease file.
    pub fn leases(&self) -> String {
        fs::read_to_string(self.file("leases")).unwrap_or_default()
    }

    fn file(&self, kind: &str) -> PathBuf {
        self.dir.join(format!("dnsmasq-{}.{kind}", self.uplink.interface))
    }

    fn command(&self) -> Command {
        let uplink = &self.uplink;
        let mut command = in_netns(&self.netns, "dnsmasq");
        command.args([
            "--keep-in-foreground",
            "--log-facility=-",
            "--log-dhcp",
            // Nothing from the machine: no config, resolv.conf or hosts; no DNS.
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=0",
            // Stay root: changing user or group clears the parent-death signal.
            "--user=root",
            "--group=root",
            // Not bound to lan's index, so a re-created lan is served too.
            "--interface=lan",
            "--dhcp-authoritative",
            "--no-ping",
        ]);
        if self.ra {
            command.args(["--enable-ra", "--dhcp-range=::,constructor:lan,ra-only"]);
        }
        let (address, mask, lease) = (uplink.address, netmask(uplink.prefix_len), LEASE.as_secs());
        command
            .arg(format!("--dhcp-range={address},{address},{mask},{lease}"))
            .arg(format!("--dhcp-option=option:router,{}", uplink.gateway))
            .arg(format!("--dhcp-leasefile={}", self.file("leases").display()))
            .arg(format!("--pid-file={}", self.file("pid").display()));
        if self.ra {
            command.arg(format!("--ra-param=lan,{RA_INTERVAL_SECS},{}", RA_LIFETIME.as_secs()));
        }
        command
    }
}

/// What `host` still lacks for `uplink`: its leased address and, with
/// `routes`, its DHCP and router-advertised default routes in main.
fn lacks(host: &Netns, uplink: &Uplink, routes: bool) -> Vec<String> {
    let ifname = uplink.interface;
    let address = format!("{}/{}", uplink.address, uplink.prefix_len);
    let mut lacking = Vec::new();
    let addresses = host.ip(["-4", "-o", "addr", "show", "dev", ifname]).unwrap_or_default();
    if !addresses.lines().any(|line| field(line, "inet") == Some(&address)) {
        lacking.push(format!("{ifname}: address {address}"));
    }
    if !routes {
        return lacking;
    }
    let defaults = host.ip(["-4", "route", "show", "default", "dev", ifname]).unwrap_or_default();
    let (gateway, metric) = (uplink.gateway.to_string(), uplink.metric.to_string());
    let leased = defaults.lines().any(|line| {
        field(line, "via") == Some(&gateway)
            && field(line, "proto") == Some("dhcp")
            && field(line, "metric") == Some(&metric)
    });
    if !leased {
        lacking.push(format!("{ifname}: default via {gateway} proto dhcp metric {metric}"));
    }
    if ra_gateway(host, ifname).is_none() {
        lacking.push(format!("{ifname}: IPv6 default route proto ra"));
    }
    lacking
}

/// The router `host` learned from router advertisements on `ifname`: the
/// link-local gateway of its `proto ra` default route in main, if any.
pub fn ra_gateway(host: &Netns, ifname: &str) -> Option<Ipv6Addr> {
    let routes = host.ip(["-6", "route", "show", "default", "dev", ifname]).ok()?;
    routes
        .lines()
        .filter(|line| field(line, "proto") == Some("ra"))
        .find_map(|line| field(line, "via")?.parse().ok())
}

/// The word after `key` in a line of `ip` output.
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|word| *word == key)?;
    words.next()
}

pub(crate) fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32u32.saturating_sub(prefix_len.into())).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_ip_route_lines() {
        let line = "default via 10.0.3.1 dev ens3 proto dhcp src 10.0.3.10 metric 100 ";
        assert_eq!(field(line, "via"), Some("10.0.3.1"));
        assert_eq!(field(line, "metric"), Some("100"));
        assert_eq!(field(line, "table"), None);
        assert_eq!(field("default via", "via"), None);
    }

    #[test]
    fn netmasks_follow_prefix_lengths() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
    }
}
