//! The seed's scenario as a lab: a multihomed host with two uplinks (ens3,
//! ens4), each behind its own router that does 1:1 NAT for a floating IPv4
//! address, routes the uplink's IPv6 prefix, and drops forwarded packets
//! whose source is not from its own LAN (as cloud providers do); an internet
//! client sits behind both routers.
//!
//! ```text
//!  client ── br0 ─┬─ wan [r3] lan ── ens3 ┐
//!  192.0.2.100    │  NAT 198.51.100.3      ├ [host] (both default routes in main)
//!                 └─ wan [r4] lan ── ens4 ┘
//!                    NAT 198.51.100.4
//! ```
//!
//! Without policy routing, replies from ens4's address leave through ens3
//! (main's best default route) and r3 drops them: the secondary floating IP
//! and ens4's IPv6 address are unreachable.
//!
//! [`SeedLab::start`] gives the host its addresses and default routes
//! statically; [`SeedLab::start_dhcp`] from a real DHCP server and client
//! and real router advertisements (see [`crate::dhcp`]); [`SeedLab::start_bare`]
//! leaves the host's uplinks to a real network manager (see
//! [`crate::managers`]).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

mod router;
mod upstream;

use router::{nft, reach_all, router_ruleset, router_suffix};

use crate::{Netns, Result, checked, dhcp::Dhcp};

/// One uplink of the lab host and the router behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub interface: &'static str,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The public address the router maps 1:1 to `address`.
    pub floating: Ipv4Addr,
    pub address6: Ipv6Addr,
    pub prefix6_len: u8,
    pub gateway6: Ipv6Addr,
    /// The router's address on the internet segment.
    pub router_wan: Ipv4Addr,
    pub router_wan6: Ipv6Addr,
    /// Metric of this uplink's default routes in main (as DHCP would set).
    pub metric: u32,
}

impl Uplink {
    /// The addresses a client on the internet uses to reach this uplink.
    pub fn public_addresses(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.floating), IpAddr::V6(self.address6)]
    }

    fn subnet(&self) -> String {
        let octets = self.address.octets();
        format!("{}.{}.{}.0/{}", octets[0], octets[1], octets[2], self.prefix_len)
    }

    fn subnet6(&self) -> String {
        let segments = self.address6.segments();
        format!("{:x}:{:x}:{:x}::/{}", segments[0], segments[1], segments[2], self.prefix6_len)
    }
}

/// ens3 is the primary (lowest metric), ens4 the secondary.
pub const UPLINKS: [Uplink; 2] = [
    Uplink {
        interface: "ens3",
        address: Ipv4Addr::new(10, 0, 3, 10),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 3, 1),
        floating: Ipv4Addr::new(198, 51, 100, 3),
        address6: Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10),
        prefix6_len: 64,
        gateway6: Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1),
        router_wan: Ipv4Addr::new(192, 0, 2, 3),
        router_wan6: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 3),
        metric: 100,
    },
    Uplink {
        interface: "ens4",
        address: Ipv4Addr::new(10, 0, 4, 10),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 4, 1),
        floating: Ipv4Addr::new(198, 51, 100, 4),
        address6: Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, 0, 0x10),
        prefix6_len: 64,
        gateway6: Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, 0, 1),
        router_wan: Ipv4Addr::new(192, 0, 2, 4),
        router_wan6: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 4),
        metric: 200,
    },
];

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x100);
const INTERNET_PREFIX_LEN: u8 = 24;
const INTERNET_PREFIX6_LEN: u8 = 64;

/// The running lab. Dropping it removes every namespace (and with them every
/// interface), unless it was started to be kept.
pub struct SeedLab {
    /// The DHCP servers and clients of a lab started with
    /// [`SeedLab::start_dhcp`] (first: they stop before the namespaces go).
    pub dhcp: Option<Dhcp>,
    pub host: Netns,
    /// One router per uplink, in [`UPLINKS`] order.
    pub routers: Vec<Netns>,
    pub client: Netns,
    setup: HostSetup,
}

/// Who configures the host's uplinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostSetup {
    /// The lab, statically (addresses and default routes).
    Static,
    /// dhcpcd (IPv4) and router advertisements (IPv6 default routes).
    Dhcp,
    /// Nobody yet: links without addresses, down, IPv6 off.
    Bare,
}

impl SeedLab {
    /// Builds the lab; it is removed when dropped.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// Builds the lab; with `keep` its namespaces outlive this process.
    pub fn start_with(keep: bool) -> Result<Self> {
        Self::build(keep, HostSetup::Static)
    }

    /// Builds the lab with the host's uplinks created but down, without
    /// addresses and with IPv6 disabled: a network manager started on the
    /// host brings them up and configures them (IPv4). The neighbours on
    /// the host's segments are learned once it did
    /// ([`SeedLab::learn_host_neighbours`]).
    pub fn start_bare() -> Result<Self> {
        Self::build(false, HostSetup::Bare)
    }

    /// Builds the lab with the host's IPv4 addresses and default routes
    /// from DHCP (dnsmasq in the routers, dhcpcd on the host) and its IPv6
    /// default routes from router advertisements; its IPv6 addresses stay
    /// static. Returns once all are in place; removed when dropped.
    pub fn start_dhcp() -> Result<Self> {
        Self::start_dhcp_with(false)
    }

    /// Like [`SeedLab::start_dhcp`]; with `keep` the namespaces, the DHCP
    /// processes and their directory outlive this process.
    pub fn start_dhcp_with(keep: bool) -> Result<Self> {
        Self::build(keep, HostSetup::Dhcp)
    }

    fn build(keep: bool, setup: HostSetup) -> Result<Self> {
        let client = Netns::create_with("client", keep)?;
        let host = Netns::create_with("host", keep)?;
        let mut routers = Vec::with_capacity(UPLINKS.len());
        for uplink in &UPLINKS {
            routers.push(Netns::create_with(&format!("r{}", &uplink.interface[3..]), keep)?);
        }
        let mut lab = Self { dhcp: None, host, routers, client, setup };
        for netns in lab.namespaces() {
            // Addresses usable at once: no duplicate address detection delay.
            netns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            netns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        if setup == HostSetup::Bare {
            // The uplinks, created below, start without IPv6.
            lab.host.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        lab.build_client()?;
        for (uplink, router) in UPLINKS.iter().zip(&lab.routers) {
            lab.build_uplink(uplink, router)?;
        }
        if setup == HostSetup::Dhcp {
            lab.dhcp = Some(Dhcp::start(&lab.host, &lab.routers, &UPLINKS, keep)?);
        }
        lab.learn_neighbours(setup != HostSetup::Bare)?;
        Ok(lab)
    }

    pub fn uplinks(&self) -> &'static [Uplink] {
        &UPLINKS
    }

    fn build_client(&self) -> Result<()> {
        let c = &self.client;
        // No multicast snooping: neighbour discovery is flooded from the start.
        c.ip(["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        c.ip(["addr", "add", &format!("{CLIENT}/{INTERNET_PREFIX_LEN}"), "dev", "br0"])?;
        c.ip(["addr", "add", &format!("{CLIENT6}/{INTERNET_PREFIX6_LEN}"), "dev", "br0", "nodad"])?;
        c.ip(["link", "set", "br0", "up"])?;
        Ok(())
    }

    fn build_uplink(&self, uplink: &Uplink, router: &Netns) -> Result<()> {
        let client = &self.client;
        let port = format!("to-{}", router_suffix(router));

        // Router wan <-> client bridge port; forwarding, NAT, anti-spoofing.
        router.ip(["link", "add", "wan", "type", "veth", "peer", "name", &port, "netns", client.name()])?;
        client.ip(["link", "set", &port, "master", "br0", "up"])?;
        router.ip(["addr", "add", &format!("{}/{INTERNET_PREFIX_LEN}", uplink.router_wan), "dev", "wan"])?;
        let wan6 = format!("{}/{INTERNET_PREFIX6_LEN}", uplink.router_wan6);
        router.ip(["addr", "add", &wan6, "dev", "wan", "nodad"])?;
        router.ip(["link", "set", "wan", "up"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        nft(router, &router_ruleset(uplink))?;
        self.connect_uplink(uplink, router)?;

        // Client: reach the floating IP and the routed prefix via this router.
        let floating = format!("{}/32", uplink.floating);
        client.ip(["route", "add", &floating, "via", &uplink.router_wan.to_string()])?;
        client.ip(["-6", "route", "add", &uplink.subnet6(), "via", &uplink.router_wan6.to_string()])?;
        Ok(())
    }

    /// The host's uplink and the router's LAN side: the link, addresses, and
    /// the host's default routes in main, as a DHCP client would leave them.
    /// With `dhcp`, only the link, the router's addresses and the host's
    /// IPv6 address: DHCP and router advertisements bring the rest. Bare,
    /// only the link (down) and the router's addresses.
    fn connect_uplink(&self, uplink: &Uplink, router: &Netns) -> Result<()> {
        let host = &self.host;
        let ifname = uplink.interface;
        host.ip(["link", "add", ifname, "type", "veth", "peer", "name", "lan", "netns", router.name()])?;
        router.ip(["addr", "add", &format!("{}/{}", uplink.gateway, uplink.prefix_len), "dev", "lan"])?;
        let gateway6 = format!("{}/{}", uplink.gateway6, uplink.prefix6_len);
        router.ip(["addr", "add", &gateway6, "dev", "lan", "nodad"])?;
        router.ip(["link", "set", "lan", "up"])?;
        if self.setup == HostSetup::Bare {
            return Ok(());
        }
        let address6 = format!("{}/{}", uplink.address6, uplink.prefix6_len);
        if self.setup == HostSetup::Dhcp {
            host.ip(["addr", "add", &address6, "dev", ifname, "nodad"])?;
            // The default route from router advertisements at the uplink's
            // metric (as dhcpcd or NetworkManager would set it), no SLAAC
            // address; the static address survives a link flap, as a
            // network manager would put it back.
            let metric = uplink.metric.to_string();
            let settings = [
                ("accept_ra", "2"),
                ("autoconf", "0"),
                ("keep_addr_on_down", "1"),
                ("ra_defrtr_metric", &metric),
            ];
            for (key, value) in settings {
                host.sysctl(&format!("net.ipv6.conf.{ifname}.{key}"), value)?;
            }
            host.ip(["link", "set", ifname, "up"])?;
            return Ok(());
        }
        host.ip(["addr", "add", &format!("{}/{}", uplink.address, uplink.prefix_len), "dev", ifname])?;
        host.ip(["addr", "add", &address6, "dev", ifname, "nodad"])?;
        host.ip(["link", "set", ifname, "up"])?;
        let metric = uplink.metric.to_string();
        let gateway = uplink.gateway.to_string();
        host.ip(["route", "add", "default", "via", &gateway, "dev", ifname, "metric", &metric])?;
        let gateway6 = uplink.gateway6.to_string();
        host.ip(["-6", "route", "add", "default", "via", &gateway6, "dev", ifname, "metric", &metric])?;
        Ok(())
    }

    /// Deletes uplink `index`'s interface (the router's LAN end goes with
    /// it) and creates it again: same name, new ifindex, as after a NIC is
    /// hot-plugged. In a DHCP lab its client (which exits when its interface
    /// goes) starts again; this returns once the address is leased again.
    pub fn recreate_uplink(&self, index: usize) -> Result<()> {
        let uplink = &UPLINKS[index];
        self.host.ip(["link", "del", uplink.interface])?;
        self.connect_uplink(uplink, &self.routers[index])?;
        if let Some(dhcp) = &self.dhcp {
            dhcp.clients[index].restart()?;
            dhcp.wait_for_lease(&self.host, index, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// In a DHCP lab, waits until every uplink has its lease and both its
    /// default routes in main (see [`Dhcp::wait_configured`]).
    pub fn wait_for_dhcp(&self, timeout: Duration) -> Result<()> {
        match &self.dhcp {
            Some(dhcp) => dhcp.wait_configured(&self.host, timeout),
            None => Err(crate::LabError::Parse {
                command: "SeedLab::wait_for_dhcp".into(),
                output: "this lab was started without DHCP".into(),
            }),
        }
    }

    /// Resolves the neighbours on every segment (host–router, router–client),
    /// as the host's DHCP client and router discovery would have. Without it
    /// the first IPv6 reply may leave by another uplink: the kernel prefers
    /// default routers whose neighbour entry is known reachable over the
    /// lower metric.
    /// With `host` false only the routers' and the client's (the host's
    /// uplinks are not configured yet).
    fn learn_neighbours(&self, host: bool) -> Result<()> {
        if host {
            self.learn_host_neighbours(true)?;
        }
        for uplink in &UPLINKS {
            let pairs = [
                (&self.client, IpAddr::V4(uplink.router_wan)),
                (&self.client, IpAddr::V6(uplink.router_wan6)),
            ];
            reach_all(&pairs)?;
        }
        Ok(())
    }

    /// Resolves the neighbours between the host and its routers (both
    /// ways), over IPv4 and, with `ipv6`, IPv6; for a bare lab once its
    /// manager configured the uplinks.
    pub fn learn_host_neighbours(&self, ipv6: bool) -> Result<()> {
        for (uplink, router) in UPLINKS.iter().zip(&self.routers) {
            let mut pairs =
                vec![(&self.host, IpAddr::V4(uplink.gateway)), (router, IpAddr::V4(uplink.address))];
            if ipv6 {
                pairs.push((&self.host, IpAddr::V6(uplink.gateway6)));
                pairs.push((router, IpAddr::V6(uplink.address6)));
            }
            reach_all(&pairs)?;
        }
        Ok(())
    }

    /// Packets the router of `uplink_index` dropped because their source was
    /// not from its LAN.
    pub fn spoof_drops(&self, uplink_index: usize) -> Result<u64> {
        let router = &self.routers[uplink_index];
        let output =
            checked(router.command("nft").args(["list", "chain", "inet", "mhr_lab_filter", "forward"]))?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    /// Every namespace of the lab: host, routers, client.
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.host).chain(&self.routers).chain(std::iter::once(&self.client))
    }

    /// Commands a person can paste to look inside the lab.
    pub fn enter_hints(&self) -> Vec<String> {
        self.namespaces().map(|ns| format!("nsenter --net=/run/netns/{} bash", ns.name())).collect()
    }

    /// The command that removes the lab (for a kept lab).
    pub fn teardown_hint(&self) -> String {
        let names: Vec<&str> = self.namespaces().map(Netns::name).collect();
        match &self.dhcp {
            None => format!("for ns in {}; do ip netns del $ns; done", names.join(" ")),
            Some(dhcp) => format!(
                "for ns in {}; do ip netns pids $ns | xargs -r kill -9; ip netns del $ns; done; rm -r {}",
                names.join(" "),
                dhcp.dir().display()
            ),
        }
    }
}

/// An mhr config for the lab host: both uplinks, ens3 primary, gateways
/// learned; mhr's files go under `dir` so nothing outside the lab changes.
pub fn mhr_config(dir: &std::path::Path) -> String {
    format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\n[[uplink]]\ninterface = \"ens4\"\n\n{}",
        routing_section(dir)
    )
}

/// `[routing]` and `[guard]` sections keeping mhr's files under `dir`
/// and its pins in the bpffs directory paired with it.
pub fn routing_section(dir: &std::path::Path) -> String {
    format!(
        "[routing]\nrt_tables_dir = \"{}\"\nstate_dir = \"{}\"\n\n[guard]\npin_dir = \"{}\"\n",
        dir.join("rt_tables.d").display(),
        dir.join("state").display(),
        crate::temp_dir::pin_dir_for(dir).display()
    )
}
