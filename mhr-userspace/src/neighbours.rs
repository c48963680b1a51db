//! The network managers beside mhr on this host: which run or are
//! configured, and what to set so they and mhr never undo each other's
//! work. Read-only. `MHR_HOST_ROOT` points at another root (a container
//! with the host's `/` mounted elsewhere).

use std::{
    fmt,
    path::{Path, PathBuf},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Manager {
    Networkd,
    NetworkManager,
    Netplan,
    Dhcpcd,
    Dhclient,
    Ifupdown,
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Networkd => "systemd-networkd",
            Self::NetworkManager => "NetworkManager",
            Self::Netplan => "netplan",
            Self::Dhcpcd => "dhcpcd",
            Self::Dhclient => "ISC dhclient",
            Self::Ifupdown => "ifupdown",
        })
    }
}

/// A manager found, how, and what to set beside mhr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub manager: Manager,
    /// `running (pid 412)`, `/etc/netplan/50-cloud-init.yaml`, …
    pub evidence: String,
    pub advice: &'static str,
    /// Something configured to remove mhr's objects (networkd's defaults).
    pub warning: Option<String>,
}

/// The root to read the host from: `/`, or `MHR_HOST_ROOT`.
pub fn host_root() -> PathBuf {
    std::env::var_os("MHR_HOST_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

const NETWORKD_ADVICE: &str = "set ManageForeignRoutingPolicyRules=no and ManageForeignRoutes=no under [Network] in /etc/systemd/networkd.conf (or a drop-in in networkd.conf.d/), and KeepConfiguration=static under [Network] in the uplinks' .network files: with the defaults a networkd restart deletes mhr's rules and routes, and without KeepConfiguration it drops and re-adds the uplinks' addresses, which takes every route through them (mhr's tables too); `mhr run` puts them back";

/// Every manager found under `root`.
pub fn detect(root: &Path) -> Vec<Neighbour> {
    let running = running(root);
    let pid_of =
        |names: &[&str]| running.iter().find(|(_, name)| names.contains(&name.as_str())).map(|(pid, _)| *pid);
    let mut found = Vec::new();
    let mut add = |manager, evidence: String, advice, warning| {
        found.push(Neighbour { manager, evidence, advice, warning });
    };
    let networkd_files = files(&root.join("etc/systemd/network"), ".network");
    let networkd_pid = pid_of(&["systemd-network", "systemd-networkd"]);
    if networkd_pid.is_some() || !networkd_files.is_empty() {
        let evidence = evidence(networkd_pid, &networkd_files);
        // A running networkd reads its config in its own mount namespace.
        let config_root =
            networkd_pid.map_or_else(|| root.to_owned(), |pid| root.join(format!("proc/{pid}/root")));
        let warning = networkd_deletes_foreign(&config_root).map(|keys| {
            format!(
                "systemd-networkd is set to delete foreign {keys}: mhr's would go on every networkd restart"
            )
        });
        add(Manager::Networkd, evidence, NETWORKD_ADVICE, warning);
    }
    let netplan = files(&root.join("etc/netplan"), ".yaml");
    if !netplan.is_empty() {
        add(
            Manager::Netplan,
            evidence(None, &netplan),
            "netplan renders networkd (or NetworkManager) configs and `netplan apply` restarts networkd: put the networkd.conf settings in a drop-in, /etc/systemd/networkd.conf.d/mhr.conf",
            None,
        );
    }
    let nm_files = files(&root.join("etc/NetworkManager/system-connections"), "");
    let nm_pid = pid_of(&["NetworkManager"]);
    if nm_pid.is_some() || !nm_files.is_empty() {
        add(
            Manager::NetworkManager,
            evidence(nm_pid, &nm_files),
            "nothing to set: NetworkManager leaves rules it did not make alone; never give a connection an ipv4.route-table inside mhr's table_range",
            None,
        );
    }
    let dhcpcd_pid = pid_of(&["dhcpcd"]);
    if dhcpcd_pid.is_some() {
        add(
            Manager::Dhcpcd,
            evidence(dhcpcd_pid, &[]),
            "nothing to set: dhcpcd installs a default per interface (metric 200 and up), mhr's choice is looked up first",
            None,
        );
    }
    let dhclient_pid = pid_of(&["dhclient"]);
    if dhclient_pid.is_some() {
        add(
            Manager::Dhclient,
            evidence(dhclient_pid, &[]),
            "nothing to set: dhclient-script installs one default only (metric 0); mhr learns the other uplinks' gateways from dhclient's lease files (or an uplink's `dhcp_lease`)",
            None,
        );
    }
    let interfaces = root.join("etc/network/interfaces");
    let ifupdown = std::fs::read_to_string(&interfaces).is_ok_and(|text| {
        text.lines().map(str::trim).any(|l| l.starts_with("iface ") && !l.starts_with("iface lo "))
    });
    if ifupdown {
        add(
            Manager::Ifupdown,
            interfaces.display().to_string(),
            "nothing to set: `gateway` lines install defaults at metric 0, which mhr's choice is looked up ahead of",
            None,
        );
    }
    found
}

fn evidence(pid: Option<u32>, files: &[PathBuf]) -> String {
    let mut parts = Vec::new();
    if let Some(pid) = pid {
        parts.push(format!("running (pid {pid})"));
    }
    if let Some(first) = files.first() {
        let more = if files.len() > 1 { format!(" and {} more", files.len() - 1) } else { String::new() };
        parts.push(format!("{}{more}", first.display()));
    }
    parts.join(", ")
}

/// Files in `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Processes by pid and command name, in mhr's own network namespace
/// (a manager in another one manages other links).
fn running(root: &Path) -> Vec<(u32, String)> {
    let proc = root.join("proc");
    let Ok(entries) = std::fs::read_dir(&proc) else { return Vec::new() };
    // The calling thread's: a thread may have entered another namespace.
    let own = std::fs::read_link(proc.join("thread-self/ns/net")).ok();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse().ok()?;
            if let Some(own) = &own
                && std::fs::read_link(entry.path().join("ns/net")).ok().as_ref() != Some(own)
            {
                return None;
            }
            let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((pid, name.trim().to_owned()))
        })
        .collect()
}

/// Which of networkd's foreign-object settings are on ("routing policy
/// rules", "routes", or both), reading networkd.conf and its drop-ins in
/// systemd's order (later ones win); `None` when both are off.
fn networkd_deletes_foreign(root: &Path) -> Option<String> {
    let mut configs = vec![root.join("etc/systemd/networkd.conf")];
    let mut drop_ins: Vec<PathBuf> =
        ["usr/lib/systemd/networkd.conf.d", "run/systemd/networkd.conf.d", "etc/systemd/networkd.conf.d"]
            .iter()
            .flat_map(|dir| files(&root.join(dir), ".conf"))
            .collect();
    // Drop-ins apply in file-name order, whatever their directory.
    drop_ins.sort_by_key(|path| path.file_name().map(|n| n.to_owned()));
    configs.extend(drop_ins);
    let (mut rules, mut routes) = (true, true);
    for config in configs {
        let Ok(text) = std::fs::read_to_string(&config) else { continue };
        let mut in_network = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_network = line == "[Network]";
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            if !in_network {
                continue;
            }
            let on = !matches!(value.trim(), "no" | "false" | "0" | "off");
            match key.trim() {
                "ManageForeignRoutingPolicyRules" => rules = on,
                "ManageForeignRoutes" => routes = on,
                _ => {}
            }
        }
    }
    match (rules, routes) {
        (true, true) => Some("routing policy rules and routes".to_owned()),
        (true, false) => Some("routing policy rules".to_owned()),
        (false, true) => Some("routes".to_owned()),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn managers_are_found_by_their_files_and_processes() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        assert_eq!(detect(root), vec![]);
        put(root, "etc/systemd/network/10-ens3.network", "[Match]\nName=ens3\n");
        put(root, "etc/netplan/50-cloud-init.yaml", "network: {}\n");
        put(root, "proc/412/comm", "NetworkManager\n");
        put(root, "proc/77/comm", "dhclient\n");
        put(root, "proc/78/comm", "bash\n");
        put(root, "etc/network/interfaces", "auto lo\niface lo inet loopback\n");
        let found = detect(root);
        let kinds: Vec<Manager> = found.iter().map(|n| n.manager).collect();
        assert_eq!(kinds, [Manager::Networkd, Manager::Netplan, Manager::NetworkManager, Manager::Dhclient]);
        assert!(found[0].evidence.ends_with("10-ens3.network"), "{}", found[0].evidence);
        assert_eq!(found[2].evidence, "running (pid 412)");
        put(root, "etc/network/interfaces", "iface ens3 inet static\n  gateway 10.0.3.1\n");
        assert!(detect(root).iter().any(|n| n.manager == Manager::Ifupdown), "an interface besides lo");
    }

    #[test]
    fn networkd_is_flagged_until_both_foreign_settings_are_off_in_systemds_order() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        put(root, "etc/systemd/network/10-ens3.network", "[Match]\nName=ens3\n");
        let warning = || detect(root)[0].warning.clone();
        assert_eq!(
            warning().as_deref(),
            Some(
                "systemd-networkd is set to delete foreign routing policy rules and routes: mhr's would go on every networkd restart"
            )
        );
        put(root, "etc/systemd/networkd.conf", "[Network]\nManageForeignRoutingPolicyRules=no\n");
        assert!(warning().is_some_and(|w| w.contains("foreign routes:")), "{:?}", warning());
        put(root, "etc/systemd/networkd.conf.d/50-mhr.conf", "[Network]\nManageForeignRoutes=no\n");
        assert_eq!(warning(), None);
        // A later drop-in (by name) turns it back on; another section does not count.
        put(
            root,
            "usr/lib/systemd/networkd.conf.d/90-vendor.conf",
            "[DHCPv4]\nManageForeignRoutes=yes\n[Network]\nManageForeignRoutingPolicyRules=yes\n",
        );
        assert!(warning().is_some_and(|w| w.contains("foreign routing policy rules:")), "{:?}", warning());
        // A running networkd's config is read through its own root (its
        // mount namespace); only one in mhr's network namespace counts.
        std::fs::create_dir_all(root.join("proc/thread-self/ns")).unwrap();
        std::os::unix::fs::symlink("net:[1]", root.join("proc/thread-self/ns/net")).unwrap();
        std::fs::create_dir_all(root.join("proc/9")).unwrap();
        put(root, "proc/9/comm", "systemd-network\n");
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("proc/9/root")).unwrap();
        put(
            root,
            "elsewhere/etc/systemd/networkd.conf",
            "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n",
        );
        std::fs::create_dir_all(root.join("proc/9/ns")).unwrap();
        std::os::unix::fs::symlink("net:[2]", root.join("proc/9/ns/net")).unwrap();
        assert!(!detect(root)[0].evidence.contains("running"), "another network namespace's networkd");
        assert!(warning().is_some(), "judged by the host's files then");
        std::fs::remove_file(root.join("proc/9/ns/net")).unwrap();
        std::os::unix::fs::symlink("net:[1]", root.join("proc/9/ns/net")).unwrap();
        assert!(detect(root)[0].evidence.contains("running (pid 9)"));
        assert_eq!(warning(), None);
    }
}
