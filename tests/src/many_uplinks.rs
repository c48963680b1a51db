//! A host with many uplinks (veth pairs to one peer namespace), several
//! addresses each and every uplink's default route in main, as DHCP would
//! leave it: the scale case for the routing engine.

use std::fmt::Write as _;

use crate::{Netns, Result};

pub struct ManyUplinks {
    pub host: Netns,
    pub peer: Netns,
    pub count: usize,
}

impl ManyUplinks {
    /// `count` uplinks `up0…`, each with `v4` IPv4 and `v6` IPv6 addresses;
    /// `up0` has the lowest default-route metric.
    pub fn start(count: usize, v4: usize, v6: usize) -> Result<Self> {
        let host = Netns::create("many-host")?;
        let peer = Netns::create("many-peer")?;
        for netns in [&host, &peer] {
            netns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            netns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        // One `ip -batch` per namespace keeps set-up fast at any scale.
        let (mut host_batch, mut peer_batch) = (String::new(), String::new());
        for i in 0..count {
            let (name, port) = (Self::interface(i), format!("p{i}"));
            let _ = writeln!(host_batch, "link add {name} type veth peer name {port} netns {}", peer.name());
            let _ = writeln!(host_batch, "link set {name} up");
            let _ = writeln!(peer_batch, "link set {port} up");
            let (high, low) = (i / 256, i % 256);
            for a in 0..v4 {
                let _ = writeln!(host_batch, "addr add 10.{}.{low}.{}/24 dev {name}", 100 + high, 10 + a);
            }
            let _ = writeln!(peer_batch, "addr add 10.{}.{low}.1/24 dev {port}", 100 + high);
            for a in 0..v6 {
                let _ = writeln!(host_batch, "addr add 2001:db8:{i:x}::{:x}/64 dev {name} nodad", 0x10 + a);
            }
            let _ = writeln!(peer_batch, "addr add 2001:db8:{i:x}::1/64 dev {port} nodad");
            let metric = 100 + i;
            let _ = writeln!(
                host_batch,
                "route add default via 10.{}.{low}.1 dev {name} metric {metric}",
                100 + high
            );
            if v6 > 0 {
                let _ =
                    writeln!(host_batch, "route add ::/0 via 2001:db8:{i:x}::1 dev {name} metric {metric}");
            }
        }
        host.ip_batch(&host_batch)?;
        peer.ip_batch(&peer_batch)?;
        Ok(Self { host, peer, count })
    }

    pub fn interface(index: usize) -> String {
        format!("up{index}")
    }

    /// An mhr config with every uplink, `up0` primary, files under `dir`.
    pub fn mhr_config(&self, dir: &std::path::Path) -> String {
        let mut text = String::new();
        for i in 0..self.count {
            let primary = if i == 0 { "primary = true\n" } else { "" };
            let _ = write!(text, "[[uplink]]\ninterface = \"{}\"\n{primary}\n", Self::interface(i));
        }
        text + &crate::seed_lab::routing_section(dir)
    }
}
