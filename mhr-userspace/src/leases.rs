//! Gateways from where the network managers keep their DHCP leases. ISC
//! dhclient installs a default for only one of several interfaces (the
//! others fail at the same metric 0), so an uplink's gateway is often in
//! no route at all; its lease still names the router. Read-only: mhr never
//! writes these files.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

pub use crate::model::LeaseKeeper;
use crate::model::Link;

/// The router a lease names, and who keeps the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGateway {
    pub router: Ipv4Addr,
    pub keeper: LeaseKeeper,
}

/// Lease files larger than this are not read (a lease is a few KiB;
/// dhclient appends, so its file grows between restarts).
const MAX_LEASE_BYTES: u64 = 4 << 20;

/// Where each keeper puts an interface's lease, under `root` (`/` on a
/// host). `{name}` and `{index}` are the interface's.
const PLACES: [(&str, LeaseKeeper); 6] = [
    ("run/systemd/netif/leases/{index}", LeaseKeeper::Networkd),
    ("var/lib/dhcpcd/{name}.lease", LeaseKeeper::Dhcpcd),
    ("var/lib/dhcp/dhclient.{name}.leases", LeaseKeeper::Dhclient),
    ("var/lib/dhcp/dhclient.leases", LeaseKeeper::Dhclient),
    ("var/lib/dhclient/dhclient.leases", LeaseKeeper::Dhclient),
    ("var/lib/NetworkManager", LeaseKeeper::NetworkManager),
];

/// The lease router of every link that has one: from `explicit` files
/// (per interface, from the config) first, then the usual places under
/// `root`.
pub fn gateways(
    root: &Path,
    links: &[Link],
    explicit: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, LeaseGateway> {
    let mut found = BTreeMap::new();
    for link in links {
        let from_config = explicit.get(&link.name).and_then(|path| read_any(path, &link.name));
        let gateway = from_config.or_else(|| {
            PLACES.iter().find_map(|(pattern, keeper)| {
                let path = root
                    .join(pattern.replace("{name}", &link.name).replace("{index}", &link.index.to_string()));
                match keeper {
                    LeaseKeeper::NetworkManager => network_manager(&path, &link.name),
                    _ => read_any(&path, &link.name),
                }
            })
        });
        if let Some(gateway) = gateway {
            found.insert(link.name.clone(), gateway);
        }
    }
    found
}

/// Reads a lease of any of the formats, told apart by their content.
fn read_any(path: &Path, interface: &str) -> Option<LeaseGateway> {
    use std::io::Read as _;

    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(MAX_LEASE_BYTES).read_to_end(&mut bytes).ok()?;
    if let Some(router) = bootp_router(&bytes) {
        return Some(LeaseGateway { router, keeper: LeaseKeeper::Dhcpcd });
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("lease {") {
        let router = dhclient_router(&text, interface)?;
        return Some(LeaseGateway { router, keeper: LeaseKeeper::Dhclient });
    }
    let router = key_value_router(&text)?;
    Some(LeaseGateway { router, keeper: LeaseKeeper::Networkd })
}

/// NetworkManager keeps `internal-UUID-IF.lease` (networkd's format, its
/// own DHCP client) or `dhclient-UUID-IF.lease` in its state directory.
fn network_manager(dir: &Path, interface: &str) -> Option<LeaseGateway> {
    let suffix = format!("-{interface}.lease");
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(&suffix) || !(name.starts_with("internal-") || name.starts_with("dhclient-")) {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
            newest = Some((modified, entry.path()));
        }
    }
    let found = read_any(&newest?.1, interface)?;
    Some(LeaseGateway { keeper: LeaseKeeper::NetworkManager, ..found })
}

/// `ROUTER=10.0.3.1 10.0.3.2` (systemd-networkd, NetworkManager's own client).
fn key_value_router(text: &str) -> Option<Ipv4Addr> {
    let value = text.lines().find_map(|line| line.trim().strip_prefix("ROUTER="))?;
    value.split_whitespace().find_map(|word| word.parse().ok())
}

/// The last `lease { … }` block of `interface` with `option routers`.
fn dhclient_router(text: &str, interface: &str) -> Option<Ipv4Addr> {
    let mut last = None;
    for block in text.split("lease {").skip(1) {
        let block = block.split('}').next().unwrap_or("");
        let mut on_interface = None;
        let mut router = None;
        for statement in block.split(';').map(str::trim) {
            if let Some(name) = statement.strip_prefix("interface ") {
                on_interface = Some(name.trim_matches('"') == interface);
            } else if let Some(routers) = statement.strip_prefix("option routers ") {
                router = routers.split(',').find_map(|r| r.trim().parse().ok());
            }
        }
        // A file of one interface (dhclient.IF.leases) may omit the name.
        if on_interface != Some(false) && router.is_some() {
            last = router;
        }
    }
    last
}

/// Option 3 (routers) of a DHCP message, as dhcpcd stores its lease.
fn bootp_router(bytes: &[u8]) -> Option<Ipv4Addr> {
    const COOKIE: [u8; 4] = [99, 130, 83, 99];
    if bytes.get(236..240)? != COOKIE {
        return None;
    }
    let mut options = bytes.get(240..)?;
    while let [code, rest @ ..] = options {
        match code {
            0 => options = rest,
            255 => return None,
            _ => {
                let (&length, rest) = rest.split_first()?;
                let value = rest.get(..usize::from(length))?;
                if *code == 3 && length >= 4 {
                    return Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]));
                }
                options = &rest[usize::from(length)..];
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Framing;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            up: true,
            carrier: true,
            point_to_point: false,
            framing: Framing::Ethernet,
        }
    }

    fn bootp(options: &[u8]) -> Vec<u8> {
        let mut message = vec![0u8; 236];
        message.extend([99, 130, 83, 99]);
        message.extend(options);
        message
    }

    #[test]
    fn each_keepers_format_names_its_router() {
        let root = tempfile::tempdir().unwrap();
        let put = |path: &str, bytes: &[u8]| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        put(
            "run/systemd/netif/leases/2",
            b"# This is private data.\nADDRESS=10.0.3.10\nROUTER=10.0.3.1 10.0.3.2\n",
        );
        put(
            "var/lib/dhcp/dhclient.leases",
            b"lease {\n  interface \"ens4\";\n  fixed-address 10.0.4.10;\n  option routers 10.0.4.9;\n}\nlease {\n  interface \"ens5\";\n  option routers 10.0.5.1;\n}\nlease {\n  interface \"ens4\";\n  option subnet-mask 255.255.255.0;\n  option routers 10.0.4.1, 10.0.4.2;\n  renew 4 2026/12/03 10:00:00;\n}\n",
        );
        // pad, subnet mask, routers 10.0.6.1, end
        put("var/lib/dhcpcd/ens6.lease", &bootp(&[0, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 6, 1, 255]));
        put("var/lib/NetworkManager/internal-0d6e-ens7.lease", b"ADDRESS=10.0.7.10\nROUTER=10.0.7.1\n");
        put("elsewhere/ens8.leases", b"lease {\n  option routers 10.0.8.1;\n}\n");
        let links = [
            link(2, "ens3"),
            link(3, "ens4"),
            link(4, "ens6"),
            link(5, "ens7"),
            link(6, "ens8"),
            link(7, "ens9"),
        ];
        let explicit = BTreeMap::from([("ens8".to_owned(), root.path().join("elsewhere/ens8.leases"))]);
        let found = gateways(root.path(), &links, &explicit);
        let router = |name: &str| found.get(name).map(|g| (g.router.to_string(), g.keeper));
        assert_eq!(router("ens3"), Some(("10.0.3.1".into(), LeaseKeeper::Networkd)));
        assert_eq!(
            router("ens4"),
            Some(("10.0.4.1".into(), LeaseKeeper::Dhclient)),
            "the interface's last lease"
        );
        assert_eq!(router("ens6"), Some(("10.0.6.1".into(), LeaseKeeper::Dhcpcd)));
        assert_eq!(router("ens7"), Some(("10.0.7.1".into(), LeaseKeeper::NetworkManager)));
        assert_eq!(
            router("ens8"),
            Some(("10.0.8.1".into(), LeaseKeeper::Dhclient)),
            "a file the config names"
        );
        assert_eq!(router("ens9"), None);
    }

    #[test]
    fn truncated_or_foreign_bytes_name_no_router() {
        assert_eq!(bootp_router(&bootp(&[3, 4, 10, 0])), None, "option cut short");
        assert_eq!(bootp_router(&bootp(&[3])), None);
        assert_eq!(bootp_router(&bootp(&[6, 4, 1, 1, 1, 1, 255])), None, "no routers option");
        assert_eq!(bootp_router(&[0; 100]), None);
        assert_eq!(dhclient_router("lease { option routers nonsense; }", "ens3"), None);
        assert_eq!(key_value_router("ROUTER=\n"), None);
    }
}
