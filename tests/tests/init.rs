//! `mhr init`: a config from the uplinks the host has, that then works.

mod common;

use common::mhr;
use mhr_tests::{TempDir, many_uplinks::ManyUplinks, require_root, seed_lab::routing_section};

#[test]
fn init_finds_the_uplinks_writes_a_config_that_applies_and_never_overwrites() {
    require_root();
    let host = ManyUplinks::start(2, 1, 1).unwrap();
    // Not an uplink: an address but no default route.
    let peer = host.peer.name().to_owned();
    host.host.ip(["link", "add", "dummy0", "type", "veth", "peer", "name", "side0", "netns", &peer]).unwrap();
    host.host.ip(["addr", "add", "172.31.0.1/24", "dev", "dummy0"]).unwrap();
    host.host.ip(["link", "set", "dummy0", "up"]).unwrap();
    let dir = TempDir::new("init").unwrap();
    let config = dir.path().join("etc/mhr.toml");

    let missing = mhr(&host.host, &config, &["plan"]);
    assert!(missing.error().contains("no config at") && missing.error().contains("mhr init"), "{missing:?}");

    let printed = mhr(&host.host, &config, &["init"]);
    assert!(printed.succeeded(), "{printed:?}");
    let text = &printed.output;
    assert!(text.contains("interface = \"up0\"   # 10.100.0.10/24, 2001:db8::10/64; default via 10.100.0.1 (boot, metric 100)"), "{text}");
    assert!(text.contains("interface = \"up1\""), "{text}");
    assert!(!text.contains("dummy0"), "{text}");
    let primary = text.lines().skip_while(|l| !l.contains("\"up0\"")).nth(1).unwrap_or_default();
    assert!(primary.starts_with("primary = true"), "up0 (lowest metric) is primary: {text}");
    assert!(!config.exists(), "printing writes nothing");

    let written = mhr(&host.host, &config, &["init", "--write"]);
    assert!(written.succeeded(), "{written:?}");
    assert!(written.output.contains("with 2 uplink(s): up0, up1"), "{}", written.output);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), *text);
    let again = mhr(&host.host, &config, &["init", "--write"]);
    assert!(again.error().contains("never overwrites it without --force"), "{again:?}");
    assert!(mhr(&host.host, &config, &["init", "--write", "--force"]).succeeded());

    // What `plan` would refuse is said at once, with the fix.
    host.host.ip(["rule", "add", "from", "192.0.2.7", "lookup", "500", "priority", "7101"]).unwrap();
    let refused = mhr(&host.host, &config, &["init"]);
    assert!(refused.succeeded(), "{refused:?}");
    assert!(refused.output.contains("# `mhr plan` would refuse this until these are fixed:\n# - priority 7101 (for `up0`) is already used by a rule mhr does not own"), "{}", refused.output);
    host.host.ip(["rule", "del", "priority", "7101"]).unwrap();

    // Keep mhr's own files in the test's directory, then use it.
    let usable = std::fs::read_to_string(&config).unwrap() + "\n" + &routing_section(dir.path());
    std::fs::write(&config, usable).unwrap();
    let applied = mhr(&host.host, &config, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "{applied:?}");
    let check = mhr(&host.host, &config, &["check"]);
    assert!(check.succeeded(), "{}", check.output);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}
