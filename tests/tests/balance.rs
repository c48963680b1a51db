//! Balance over four uplinks on the real kernel: a resilient nexthop
//! group, so losing one uplink moves only the flows it carried, and one
//! destination stays on one uplink.

mod common;

use common::{mhr, write_config};
use mhr_tests::{Netns, TempDir, many_uplinks::ManyUplinks, require_root};

const UPLINKS: usize = 4;
const DESTINATIONS: usize = 400;

/// The uplink each destination's flows leave by (`ip route get`, one batch).
fn uplinks(host: &Netns, dir: &TempDir, port: u16) -> Vec<String> {
    let commands: String = (0..DESTINATIONS)
        .map(|d| format!("route get 198.{}.{}.1 ipproto tcp sport {port} dport 443\n", 18 + d / 250, d % 250))
        .collect();
    let batch = dir.path().join("lookups.batch");
    std::fs::write(&batch, commands).unwrap();
    let output = host.command("ip").arg("-batch").arg(&batch).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let found: Vec<String> = words.windows(2).filter(|w| w[0] == "dev").map(|w| w[1].to_owned()).collect();
    assert_eq!(found.len(), DESTINATIONS, "one answer per lookup: {text}");
    found
}

#[test]
fn losing_one_of_four_balanced_uplinks_moves_only_its_own_flows() {
    require_root();
    let host = ManyUplinks::start(UPLINKS, 1, 0).unwrap();
    let dir = TempDir::new("balance").unwrap();
    let config = write_config(&dir, &format!("policy = \"balance\"\n{}", host.mhr_config(dir.path())));
    let applied = mhr(&host.host, &config, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "{applied:?}");
    let group = host.host.ip(["nexthop", "show", "id", "1835532288"]).unwrap();
    assert!(group.contains("type resilient"), "{group}");
    let route = host.host.ip(["route", "show", "default", "table", "7199"]).unwrap();
    assert!(route.contains("nhid 1835532288"), "main's default uses the group: {route}");
    let again = mhr(&host.host, &config, &["apply", "--no-guard"]);
    assert!(again.succeeded() && !again.output.contains("nexthop"), "idempotent: {}", again.output);

    let before = uplinks(&host.host, &dir, 20000);
    assert_eq!(before, uplinks(&host.host, &dir, 31000), "one destination, one uplink, whatever the ports");
    for i in 0..UPLINKS {
        let share = before.iter().filter(|u| **u == ManyUplinks::interface(i)).count();
        assert!(share > DESTINATIONS / 8, "{} carries {share} of {DESTINATIONS}", ManyUplinks::interface(i));
    }
    let failed = ManyUplinks::interface(1);
    host.host.ip(["link", "set", &failed, "down"]).unwrap();
    let applied = mhr(&host.host, &config, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "{applied:?}");
    let group = host.host.ip(["nexthop", "show", "id", "1835532288"]).unwrap();
    assert_eq!(group.matches('/').count(), 2, "three members left: {group}");
    let after = uplinks(&host.host, &dir, 20000);
    for (was, now) in before.iter().zip(&after) {
        assert_ne!(*now, failed);
        if *was != failed {
            assert_eq!(was, now, "a flow on a healthy uplink stays where it was");
        }
    }
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
    let left = host.host.ip(["nexthop", "show"]).unwrap_or_default();
    assert!(!left.contains("id 18355322"), "down removes mhr's nexthops: {left}");
}
