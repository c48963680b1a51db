//! The routing engine on the seed lab, real kernel: the fix works over IPv4
//! and IPv6, apply is idempotent, down restores the host exactly, bad input
//! and failures change nothing, and `check` notices drift.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{mhr, snapshot, write_config};
use mhr_tests::{
    SeedLab, TempDir,
    probe::{TcpResponder, ping, tcp_exchange},
    require_root,
    seed_lab::{mhr_config, routing_section},
};
use mhr_userspace::{
    cli::Outcome,
    config::Config,
    engine::{Engine, EngineError},
};

const TIMEOUT: Duration = Duration::from_secs(1);

/// (ping, tcp) for every public address of every uplink.
fn reachability(lab: &SeedLab, responder: &TcpResponder) -> Vec<(String, bool, bool)> {
    lab.uplinks()
        .iter()
        .flat_map(|uplink| uplink.public_addresses())
        .map(|address| {
            let ping = ping(&lab.client, address, TIMEOUT).unwrap();
            let tcp = tcp_exchange(&lab.client, SocketAddr::new(address, responder.port()), TIMEOUT).unwrap();
            (address.to_string(), ping, tcp)
        })
        .collect()
}

#[test]
fn apply_makes_both_floating_ips_answer_over_ipv4_and_ipv6() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let responder = TcpResponder::start(&lab.host, 0).unwrap();

    let before = reachability(&lab, &responder);
    let expected_before: Vec<bool> = vec![true, true, false, false];
    assert_eq!(before.iter().map(|(_, ping, _)| *ping).collect::<Vec<_>>(), expected_before, "{before:?}");
    assert_eq!(before.iter().map(|(_, _, tcp)| *tcp).collect::<Vec<_>>(), expected_before, "{before:?}");

    let applied = mhr(&lab.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");

    let after = reachability(&lab, &responder);
    assert!(after.iter().all(|(_, ping, tcp)| *ping && *tcp), "every address answers after apply: {after:?}");
    let checked = mhr(&lab.host, &config, &["check"]);
    assert!(checked.succeeded(), "{}", checked.output);
}

#[test]
fn the_seed_layout_with_a_from_and_a_to_rule_per_address_answers_too() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let text = mhr_config(dir.path())
        .replace("[routing]\n", "[routing]\nsource_rules = \"address\"\nto_rules = true\n");
    let config = write_config(&dir, &text);
    let responder = TcpResponder::start(&lab.host, 0).unwrap();
    let before = snapshot(&lab.host);

    let applied = mhr(&lab.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    assert!(applied.output.contains("applied 22 change(s)"), "{}", applied.output);
    let rules = lab.host.ip(["rule"]).unwrap();
    for rule in ["7103:\tfrom 10.0.4.10 lookup 7101", "7102:\tfrom all to 10.0.4.10 lookup 7101"] {
        assert!(rules.contains(rule), "{rule} in:\n{rules}");
    }
    let after = reachability(&lab, &responder);
    assert!(after.iter().all(|(_, ping, tcp)| *ping && *tcp), "every address answers: {after:?}");
    assert!(mhr(&lab.host, &config, &["down"]).succeeded());
    assert_eq!(snapshot(&lab.host), before);
}

#[test]
fn two_uplinks_in_one_subnet_each_answer_through_their_own_interface() {
    require_root();
    // Two cloud ENIs in one subnet: one gateway, a bridge behind both.
    let host = mhr_tests::Netns::create("shared-host").unwrap();
    let peer = mhr_tests::Netns::create("shared-peer").unwrap();
    peer.ip_batch("link add br0 type bridge\naddr add 10.50.0.1/24 dev br0\nlink set br0 up\n").unwrap();
    let mut batch = String::new();
    for (i, address) in ["10.50.0.10", "10.50.0.11"].iter().enumerate() {
        batch += &format!("link add up{i} type veth peer name p{i} netns {}\n", peer.name());
        batch += &format!("addr add {address}/24 dev up{i}\nlink set up{i} up\n");
        batch += &format!("route add default via 10.50.0.1 dev up{i} metric {}\n", 100 + i);
    }
    host.ip_batch(&batch).unwrap();
    for i in 0..2 {
        peer.ip(["link", "set", &format!("p{i}"), "master", "br0", "up"]).unwrap();
    }
    let dir = TempDir::new("routing").unwrap();
    let text = format!(
        "[[uplink]]\ninterface = \"up0\"\nprimary = true\n[[uplink]]\ninterface = \"up1\"\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let applied = mhr(&host, &config, &["apply", "--no-guard"]);
    assert!(applied.succeeded(), "{applied:?}");
    let rules = host.ip(["rule"]).unwrap();
    assert!(
        rules.contains("from 10.50.0.10 lookup 7100") && rules.contains("from 10.50.0.11 lookup 7101"),
        "{rules}"
    );
    assert!(!rules.contains("10.50.0.0/24"), "a shared prefix is never one uplink's rule:\n{rules}");
    for (address, interface) in [("10.50.0.10", "up0"), ("10.50.0.11", "up1")] {
        let route = host.ip(["route", "get", "192.0.2.1", "from", address]).unwrap();
        assert!(route.contains(&format!("via 10.50.0.1 dev {interface}")), "{address}: {route}");
    }
    let check = mhr(&host, &config, &["check"]);
    assert!(check.succeeded(), "{}", check.output);
}

#[test]
fn only_main_mhrs_tables_and_gateway_defaults_elsewhere_are_read() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config_path = write_config(&dir, &mhr_config(dir.path()));
    // A big table nobody points at, as a BGP daemon or a CNI keeps it.
    let batch: String = (0..2000)
        .map(|i| format!("route add 198.18.{}.{}/32 dev ens3 table 500\n", i / 250, i % 250))
        .collect();
    lab.host.ip_batch(&batch).unwrap();
    // A table a rule points at: its BGP-learned route is not read, the
    // DHCP client's default is (ens4's gateway is learned from it).
    lab.host
        .ip([
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "10.0.4.1",
            "dev",
            "ens4",
            "proto",
            "bgp",
            "table",
            "600",
        ])
        .unwrap();
    lab.host.ip(["route", "del", "default", "via", "10.0.4.1", "dev", "ens4"]).unwrap();
    lab.host
        .ip(["route", "add", "default", "via", "10.0.4.1", "dev", "ens4", "proto", "dhcp", "table", "600"])
        .unwrap();
    lab.host.ip(["rule", "add", "from", "192.0.2.0/24", "lookup", "600", "priority", "600"]).unwrap();
    // Someone else's route in the first table mhr would allocate.
    lab.host.ip(["route", "add", "198.51.100.0/24", "dev", "ens3", "table", "7100"]).unwrap();

    let config = Config::load(&config_path).unwrap();
    let observed = lab
        .host
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async { Engine::connect(config).unwrap().observe().await.unwrap() })
        })
        .unwrap();
    let in_table = |table: u32| observed.routes.iter().filter(move |r| r.table == table);
    assert_eq!(in_table(500).count(), 0, "the unreferenced foreign table is not read");
    let table_600: Vec<_> = in_table(600).collect();
    assert_eq!(table_600.len(), 1, "only the DHCP default of table 600: {table_600:?}");
    assert!(table_600[0].is_default());
    assert_eq!(in_table(7100).count(), 1, "the free table mhr would take is checked");
    assert!(in_table(254).any(|r| r.is_default()), "main is read whole");

    let applied = mhr(&lab.host, &config_path, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    let status = mhr(&lab.host, &config_path, &["status"]);
    assert!(status.output.contains("IPv4 gateway: 10.0.4.1 (from another table)"), "{}", status.output);
    let tables = std::fs::read_to_string(dir.path().join("rt_tables.d/mhr.conf")).unwrap();
    assert!(tables.ends_with("7101 ens3\n7102 ens4\n7199 mhr-default\n"), "7100 is someone else's: {tables}");
    assert!(mhr(&lab.host, &config_path, &["check"]).succeeded());
}

#[test]
fn second_apply_changes_nothing_and_down_restores_the_host_with_foreign_objects_untouched() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    // A neighbour's table and rule that mhr must leave alone.
    lab.host.ip(["route", "add", "192.0.2.0/24", "via", "10.0.3.1", "dev", "ens3", "table", "500"]).unwrap();
    lab.host.ip(["rule", "add", "from", "192.0.2.99", "lookup", "500", "priority", "500"]).unwrap();
    let before = snapshot(&lab.host);

    let first = mhr(&lab.host, &config, &["apply"]);
    assert!(first.succeeded(), "{first:?}");
    assert!(first.output.contains("applied 18 change(s)"), "{}", first.output);
    let applied = snapshot(&lab.host);
    assert!(applied.contains("from 192.0.2.99 lookup 500"), "foreign rule kept:\n{applied}");
    assert!(
        applied.contains("192.0.2.0/24 via 10.0.3.1 dev ens3 table 500"),
        "foreign route kept:\n{applied}"
    );
    let tables = std::fs::read_to_string(dir.path().join("rt_tables.d/mhr.conf")).unwrap();
    assert!(tables.ends_with("7100 ens3\n7101 ens4\n7199 mhr-default\n"), "{tables}");
    assert!(
        lab.host.ip(["route", "show", "table", "7101"]).unwrap().contains("default via 10.0.4.1 dev ens4")
    );

    let second = mhr(&lab.host, &config, &["apply"]);
    assert!(second.succeeded(), "{second:?}");
    assert!(second.output.starts_with("no changes: the host is as desired\n"), "{}", second.output);
    assert!(
        second.output.contains("guard: ens4 program replaced, counters kept via tcx, monitor"),
        "{}",
        second.output
    );
    assert_eq!(snapshot(&lab.host), applied, "a second apply changes nothing");

    let down = mhr(&lab.host, &config, &["down"]);
    assert!(down.succeeded(), "{down:?}");
    assert_eq!(snapshot(&lab.host), before, "down restores every rule and route");
    assert_eq!(
        dir.files(),
        ["mhr.toml", "state/gateways.json", "state/lock"].map(std::path::PathBuf::from).to_vec(),
        "mhr's files are gone but the remembered gateways and the writer lock"
    );
    let again = mhr(&lab.host, &config, &["down"]);
    assert_eq!(again.output, "no changes: mhr owns nothing here\n");
}

#[test]
fn plan_and_dry_run_change_nothing_and_plan_prints_pasteable_commands() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    let before = snapshot(&lab.host);
    let plan = mhr(&lab.host, &config, &["plan", "--format", "ip"]);
    assert!(plan.succeeded(), "{plan:?}");
    assert!(
        plan.output.contains("ip -4 rule add from 10.0.4.0/24 lookup 7101 priority 7103 protocol 210\n"),
        "{}",
        plan.output
    );
    assert!(
        plan.output.contains("ip -4 route add default via 10.0.3.1 dev ens3 proto 210 table 7199\n"),
        "{}",
        plan.output
    );
    assert!(!plan.output.contains("route del"), "foreign defaults stay: {}", plan.output);
    let dry = mhr(&lab.host, &config, &["apply", "--dry-run"]);
    assert!(dry.output.ends_with("18 change(s) planned\n"), "{}", dry.output);
    assert_eq!(snapshot(&lab.host), before);
    assert!(dir.files().len() == 1, "no files written: {:?}", dir.files());

    // Pasting the commands gives the same result as `mhr apply`.
    for line in plan.output.lines().filter(|l| l.starts_with("ip ")) {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        lab.host.ip(&args).unwrap_or_else(|err| panic!("{line}: {err}"));
    }
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("in sync: apply would change nothing"), "{}", status.output);
}

#[test]
fn bad_input_is_one_clear_error_and_leaves_the_kernel_byte_identical() {
    require_root();
    let lab = SeedLab::start().unwrap();
    lab.host.ip(["route", "add", "192.0.2.0/24", "via", "10.0.3.1", "dev", "ens3", "table", "500"]).unwrap();
    let dir = TempDir::new("routing").unwrap();
    let routing = routing_section(dir.path());
    let uplink = |name: &str, extra: &str| format!("[[uplink]]\ninterface = \"{name}\"\n{extra}\n");
    let cases = [
        (
            format!("{}{}", uplink("ens3", "primary = true"), uplink("ens9", "")),
            "uplink `ens9` does not exist",
        ),
        (
            format!("{}{}", uplink("ens3", "primary = true"), uplink("ens4", "primary = true")),
            "both have `primary = true`",
        ),
        (format!("{}{}", uplink("ens3", ""), uplink("ens4", "")), "no uplink has `primary = true`"),
        (
            format!("{}{}", uplink("ens3", "primary = true"), uplink("ens4", "gateway = \"10.0.4.300\"")),
            "mhr.toml:6:11: uplink `ens4`: gateway must be an IPv4 address such as \"192.0.2.1\", not \"10.0.4.300\"",
        ),
        (
            format!("{}{}", uplink("ens3", "primary = true"), uplink("ens4", "table = 254")),
            "table 254 is reserved",
        ),
        (
            format!("{}{}", uplink("ens3", "primary = true"), uplink("ens4", "table = 500")),
            "table 500 (for `ens4`) is already used by a route mhr does not own: 192.0.2.0/24 via 10.0.3.1 dev ens3",
        ),
        (
            format!("{}{}", uplink("ens3", "primary = true"), uplink("ens3", "")),
            "uplink `ens3` is configured twice",
        ),
        (format!("{}[[uplink\n", uplink("ens3", "primary = true")), "mhr.toml:4:"),
    ];
    let before = snapshot(&lab.host);
    for (text, expected) in cases {
        let config = write_config(&dir, &format!("{text}{routing}"));
        let run = mhr(&lab.host, &config, &["apply"]);
        let error = run.error();
        assert!(error.contains(expected), "config:\n{text}\nexpected `{expected}` in: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
        assert_eq!(snapshot(&lab.host), before, "kernel untouched by:\n{text}");
        // Only the writer lock (taken before planning) may have appeared.
        let files: Vec<_> =
            dir.files().into_iter().filter(|f| f != std::path::Path::new("state/lock")).collect();
        assert_eq!(files, vec![std::path::PathBuf::from("mhr.toml")]);
    }
}

#[test]
fn a_failure_midway_undoes_everything_already_applied() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config_path = write_config(&dir, &mhr_config(dir.path()));
    let config = Config::load(&config_path).unwrap();
    let result = lab
        .host
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let engine = Engine::connect(config).unwrap();
                let planned = engine.plan().await.unwrap();
                // ens4 vanishes between plan and apply: ens3's table goes in
                // first, then ens4's routes fail.
                lab.host.ip(["link", "del", "ens4"]).unwrap();
                let vanished = snapshot(&lab.host);
                let first_failing = planned
                    .actions
                    .iter()
                    .map(|action| action.describe(&planned.names))
                    .find(|action| action.contains("dev ens4"))
                    .unwrap();
                (engine.apply(&planned).await, vanished, first_failing)
            })
        })
        .unwrap();
    let (outcome, vanished, first_failing) = result;
    let err = outcome.expect_err("apply fails");
    assert!(matches!(err, EngineError::Apply(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{first_failing} failed")),
        "names the first failed action, though later ones were in flight: {message}"
    );
    assert!(message.contains("every change this apply made was undone"), "{message}");
    assert_eq!(snapshot(&lab.host), vanished, "no partial state");
    assert_eq!(dir.files(), vec![std::path::PathBuf::from("mhr.toml")], "no state written");
}

#[test]
fn check_fails_when_a_rule_is_deleted_by_hand_and_passes_after_apply() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));

    let unmanaged = mhr(&lab.host, &config, &["check"]);
    assert!(matches!(unmanaged.result, Ok(Outcome::ChecksFailed)), "{unmanaged:?}");

    assert!(mhr(&lab.host, &config, &["apply"]).succeeded());
    let healthy = mhr(&lab.host, &config, &["check", "--json"]);
    assert!(healthy.succeeded(), "{}", healthy.output);
    assert!(healthy.output.contains("\"ok\": true"));

    lab.host.ip(["rule", "del", "from", "10.0.4.0/24", "lookup", "7101", "priority", "7103"]).unwrap();
    let drifted = mhr(&lab.host, &config, &["check"]);
    assert!(matches!(drifted.result, Ok(Outcome::ChecksFailed)), "{drifted:?}");
    assert!(
        drifted.output.contains("FAIL  replies from 10.0.4.10 (ens4) leave by ens4: ens3 via 10.0.3.1"),
        "{}",
        drifted.output
    );
    assert!(
        drifted
            .output
            .contains("the rule `from 10.0.4.0/24 lookup 7101 priority 7103 protocol 210` is missing")
    );

    let status = mhr(&lab.host, &config, &["status", "--json"]);
    assert!(status.output.contains("\"in_sync\": false"), "{}", status.output);
    assert!(mhr(&lab.host, &config, &["apply"]).succeeded());
    assert!(mhr(&lab.host, &config, &["check"]).succeeded());
}

#[test]
fn thirty_two_uplinks_with_several_addresses_apply_check_and_tear_down_exactly() {
    require_root();
    let host = mhr_tests::many_uplinks::ManyUplinks::start(32, 3, 2).unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let before = snapshot(&host.host);

    let applied = mhr(&host.host, &config, &["apply"]);
    assert!(applied.succeeded(), "{applied:?}");
    // Per uplink: a from rule per prefix (IPv4 and IPv6), 4 routes in its
    // table; mhr's own default and its two rules per family (main's stay).
    assert!(
        applied.output.contains(&format!("applied {} change(s)\n", 32 * 6 + 2 * 3)),
        "{}",
        applied.output
    );
    assert_eq!(applied.output.matches("guard: up").count(), 32, "{}", applied.output);
    let check = mhr(&host.host, &config, &["check"]);
    assert!(check.succeeded(), "{}", check.output);
    assert!(check.output.ends_with("all 322 checks passed\n"), "{}", check.output);
    assert!(mhr(&host.host, &config, &["apply"]).output.starts_with("no changes: the host is as desired\n"));
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
    assert_eq!(snapshot(&host.host), before);
}

#[test]
fn a_new_gateway_replaces_the_table_default_in_place() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    assert!(mhr(&lab.host, &config, &["apply"]).succeeded());
    // DHCP hands ens4 a new gateway: its default route shows up in main.
    lab.host
        .ip([
            "route", "replace", "default", "via", "10.0.4.2", "dev", "ens4", "proto", "dhcp", "metric", "200",
        ])
        .unwrap();
    let again = mhr(&lab.host, &config, &["apply", "--no-guard"]);
    assert!(again.succeeded(), "{again:?}");
    assert!(again.output.contains("replace route default via 10.0.4.1 dev ens4"), "{}", again.output);
    let table = lab.host.ip(["route", "show", "table", "7101"]).unwrap();
    assert!(table.contains("default via 10.0.4.2 dev ens4"), "{table}");
    assert!(!table.contains("10.0.4.1 "), "{table}");
    assert!(mhr(&lab.host, &config, &["check"]).succeeded());
    assert!(mhr(&lab.host, &config, &["down"]).succeeded());
}

#[test]
fn status_names_one_uplink_on_request_and_its_json_carries_a_schema_version() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("routing").unwrap();
    let config = write_config(&dir, &mhr_config(dir.path()));
    assert!(mhr(&lab.host, &config, &["apply", "--no-guard"]).succeeded());
    let one = mhr(&lab.host, &config, &["status", "ens4"]);
    assert!(one.succeeded(), "{one:?}");
    // The summary's header and line, then the details: ens4's only.
    assert!(
        one.output.starts_with("UPLINK") && one.output.lines().nth(1).is_some_and(|l| l.starts_with("ens4")),
        "{}",
        one.output
    );
    assert!(one.output.contains("\nens4 (ifindex"), "{}", one.output);
    assert!(!one.output.contains("ens3 (ifindex"), "{}", one.output);
    assert!(!one.output.lines().any(|l| l.starts_with("ens3")), "no summary line for ens3: {}", one.output);
    let unknown = mhr(&lab.host, &config, &["status", "ens9"]);
    assert!(
        unknown.error().contains("`ens9` is not a configured uplink (uplinks: ens3, ens4)"),
        "{unknown:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&mhr(&lab.host, &config, &["status", "--json", "ens3"]).output).unwrap();
    assert_eq!(json["version"], 3);
    assert_eq!(json["uplinks"].as_array().map(Vec::len), Some(1));
    assert!(mhr(&lab.host, &config, &["down"]).succeeded());
}
