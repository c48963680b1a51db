use std::{path::PathBuf, time::Duration};

use mhr_common::guard::MAX_ALLOW;

use super::AttachMode;
use super::*;

/// A file with one problem gives that problem, so tests match on it.
fn parse(text: &str) -> Result<Config, ConfigError> {
    match Config::parse(text, Path::new("mhr.toml")) {
        Err(ConfigError::Invalid { mut problems, .. }) if problems.len() == 1 => {
            Err(problems.remove(0).error)
        }
        other => other,
    }
}

/// The full text of the error `text` gives, one problem a line.
fn message(text: &str) -> String {
    match Config::parse(text, Path::new("mhr.toml")) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    }
}

const MINIMAL: &str = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n";

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.uplinks.len(), 2);
    assert!(config.uplinks[0].primary && !config.uplinks[1].primary);
    assert_eq!(config.routing, RoutingConfig::default());
    assert_eq!(config.guard.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
    assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9847");
    assert_eq!(config.metrics.top_offenders, 0);
    assert_eq!(config.guard_mode(&config.uplinks[0]), (GuardMode::Monitor, false));
    assert!(!config.routing.to_rules);
    assert_eq!(config.routing.source_rules, SourceRules::Prefix);
    assert_eq!(config.uplinks[1].gateway, None);
    assert!(config.uplinks[1].allow.is_empty());
}

#[test]
fn full_config_parses() {
    let text = r#"
[[uplink]]
interface = "ens3"
primary = true
gateway = "10.0.3.1"
gateway6 = "fe80::1"
table = 300
allow = ["192.0.2.0/24", "2001:db8::/32"]

[[uplink]]
interface = "ens4"

[routing]
table_range = [400, 410]
priority_range = [500, 520]
protocol = 200
rt_tables_dir = "/tmp/rt"
state_dir = "/tmp/state"
to_rules = true
source_rules = "address"
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.uplinks[0].table, Some(300));
    assert_eq!(config.uplinks[0].allow.len(), 2);
    assert_eq!(config.routing.tables(), 400..=410);
    assert!(config.routing.to_rules);
    assert_eq!(config.routing.source_rules, SourceRules::Address);
    assert!(parse(&format!("{MINIMAL}[routing]\nsource_rules = \"subnet\"\n")).is_err());
}

#[test]
fn guard_modes_default_globally_and_per_uplink() {
    let text = "mode = \"enforce\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\n[[uplink]]\ninterface = \"b\"\nmode = \"monitor\"\nenforce_asymmetric = true\n[datapath]\npin_dir = \"/sys/fs/bpf/x\"\n";
    let config = parse(text).unwrap();
    assert_eq!(config.guard_mode(&config.uplinks[0]), (GuardMode::Enforce, false));
    assert_eq!(config.guard_mode(&config.uplinks[1]), (GuardMode::Monitor, true));
    assert_eq!(config.guard.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
    assert_eq!(
        message("mode = \"block\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\n"),
        "mhr.toml:1:8: mode must be \"monitor\", \"enforce\" or \"steer\", not \"block\""
    );
}

#[test]
fn the_guard_section_is_read_under_its_old_name_too() {
    let guard =
        parse(&format!("{MINIMAL}[guard]\npin_dir = \"/sys/fs/bpf/g\"\nattach = \"clsact\"\n")).unwrap();
    assert_eq!(guard.guard.pin_dir, PathBuf::from("/sys/fs/bpf/g"));
    assert_eq!(guard.guard.attach, AttachMode::Clsact);
    let old =
        parse(&format!("{MINIMAL}[datapath]\npin_dir = \"/sys/fs/bpf/g\"\nattach = \"clsact\"\n")).unwrap();
    assert_eq!(old.guard, guard.guard);
    let both = parse(&format!("{MINIMAL}[guard]\npin_dir = \"/a\"\n[datapath]\npin_dir = \"/b\"\n"));
    assert!(both.is_err(), "one section, not two: {both:?}");
}

#[test]
fn unknown_keys_are_errors_with_position() {
    assert_eq!(
        message("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngatway = \"10.0.0.1\"\n"),
        "mhr.toml:4:1: uplink `ens3`: unknown key `gatway`; did you mean `gateway`?"
    );
}

#[test]
fn malformed_toml_reports_line_and_column() {
    let err = parse("[[uplink]]\ninterface = \"ens3\nprimary = true\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err:?}");
    assert!(err.to_string().starts_with("mhr.toml:2:"), "{err}");
}

#[test]
fn bad_addresses_are_rejected_with_position() {
    let with = |line: &str| message(&format!("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{line}\n"));
    assert_eq!(
        with("gateway = \"10.0.0.300\""),
        "mhr.toml:4:11: uplink `ens3`: gateway must be an IPv4 address such as \"192.0.2.1\", not \"10.0.0.300\""
    );
    assert_eq!(
        with("gateway = \"2001:db8::1\""),
        "mhr.toml:4:11: uplink `ens3`: `gateway` is IPv4; put IPv6 gateways (2001:db8::1) in `gateway6`"
    );
    assert_eq!(
        with("gateway6 = \"192.0.2.1\""),
        "mhr.toml:4:12: uplink `ens3`: `gateway6` is IPv6; put IPv4 gateways (192.0.2.1) in `gateway`"
    );
    assert_eq!(
        with("allow = [\"192.0.2.0/24\", \"192.0.2.0/33\"]"),
        "mhr.toml:4:26: uplink `ens3`: allow[1] = \"192.0.2.0/33\": prefix length 33 is more than 32 for IPv4"
    );
    assert!(with("allow = [\"2001:db8::/129\"]").ends_with("prefix length 129 is more than 128 for IPv6"));
    assert!(
        with("allow = [\"192.0.2.1\"]").ends_with("no prefix length; write \"192.0.2.1/32\" for one address")
    );
    assert!(with("allow = [\"192.0.2.x/24\"]").ends_with("`192.0.2.x` is not an IPv4 or IPv6 address"));
    assert!(
        with("probe = [\"192.0.2.1\", \"ns1\"]")
            .ends_with("probe[1] = \"ns1\": \"ns1\" is not an IPv4 or IPv6 address (probe targets are address literals, not names)")
    );
}

#[test]
fn exactly_one_primary() {
    let none = parse("[[uplink]]\ninterface = \"ens3\"\n").unwrap_err();
    assert!(matches!(none, ConfigError::NoPrimary));
    let two = parse(
        "[[uplink]]\ninterface = \"a\"\nprimary = true\n[[uplink]]\ninterface = \"b\"\nprimary = true\n",
    )
    .unwrap_err();
    assert!(
        matches!(two, ConfigError::SeveralPrimaries { ref first, ref second, .. } if first == "a" && second == "b")
    );
}

#[test]
fn duplicate_and_invalid_uplinks_are_rejected() {
    let dup = parse("[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens3\"\n")
        .unwrap_err();
    assert!(matches!(dup, ConfigError::DuplicateUplink { ref interface, .. } if interface == "ens3"));
    let long = parse("[[uplink]]\ninterface = \"averyveryverylongname\"\nprimary = true\n").unwrap_err();
    assert!(matches!(long, ConfigError::BadInterfaceName { .. }));
    assert!(matches!(parse("").unwrap_err(), ConfigError::NoUplinks));
    let many: String = (0..65)
        .map(|i| {
            format!("[[uplink]]\ninterface = \"up{i}\"\n{}", if i == 0 { "primary = true\n" } else { "" })
        })
        .collect();
    let many = parse(&format!("{many}[routing]\npriority_range = [100, 400]\n")).unwrap_err();
    assert!(matches!(many, ConfigError::TooManyUplinks { count: 65, max: 64, .. }), "{many:?}");
}

#[test]
fn kernel_tables_and_shared_tables_are_rejected() {
    for table in [0, 253, 254, 255] {
        let text = format!("[[uplink]]\ninterface = \"ens3\"\nprimary = true\ntable = {table}\n");
        assert!(matches!(parse(&text).unwrap_err(), ConfigError::ReservedTable { .. }), "table {table}");
    }
    let shared =
        parse("[[uplink]]\ninterface = \"a\"\nprimary = true\ntable = 9\n[[uplink]]\ninterface = \"b\"\ntable = 9\n")
            .unwrap_err();
    assert!(matches!(shared, ConfigError::SharedTable { table: 9, .. }));
}

#[test]
fn ranges_are_checked() {
    let with = |routing: &str| parse(&format!("{MINIMAL}[routing]\n{routing}\n"));
    assert!(matches!(
        with("table_range = [10, 5]").unwrap_err(),
        ConfigError::BadRange { key: "table_range", .. }
    ));
    assert!(matches!(with("table_range = [250, 260]").unwrap_err(), ConfigError::BadRange { .. }));
    assert!(matches!(with("priority_range = [0, 10]").unwrap_err(), ConfigError::BadRange { .. }));
    assert!(matches!(with("priority_range = [32000, 32766]").unwrap_err(), ConfigError::BadRange { .. }));
    assert!(matches!(
        with("priority_range = [100, 104]").unwrap_err(),
        ConfigError::PriorityRangeTooSmall { needed: 6, have: 5, .. }
    ));
    assert!(matches!(with("protocol = 4").unwrap_err(), ConfigError::ReservedProtocol { .. }));
    let dhcp = with("protocol = 16").unwrap_err();
    assert!(matches!(dhcp, ConfigError::ReservedProtocol { protocol: 16, owner: "dhcp", .. }), "{dhcp:?}");
    assert!(matches!(
        with("protocol = 186").unwrap_err(),
        ConfigError::ReservedProtocol { owner: "bgp", .. }
    ));
    // Written before mhr kept its default in its own table: accepted, unused.
    assert_eq!(with("main_metric = 0").map(|c| c.routing.main_metric), Ok(Some(0)));
    assert!(matches!(
        with("default_table = 254").unwrap_err(),
        ConfigError::ReservedDefaultTable { table: 254, .. }
    ));
    let taken = parse("[[uplink]]\ninterface = \"a\"\nprimary = true\ntable = 7199\n").unwrap_err();
    assert!(
        matches!(&taken, ConfigError::UplinkOnDefaultTable { table: 7199, interface, .. } if interface == "a"),
        "{taken:?}"
    );
    assert_eq!(with("default_table = 500").map(|c| c.routing.default_table()), Ok(500));
    let top = parse(&format!("{MINIMAL}[metrics]\ntop_offenders = 11\n")).unwrap_err();
    assert!(matches!(top, ConfigError::TooManyTopOffenders { value: 11, .. }));
    let listen =
        parse(&format!("{MINIMAL}[metrics]\nlisten = \"0.0.0.0:9100\"\ntop_offenders = 10\n")).unwrap();
    assert_eq!(listen.metrics.listen.port(), 9100);
    assert_eq!(with("priority_range = [100, 105]").map(|c| c.routing.default_priorities()), Ok((104, 105)));
}

#[test]
fn a_reserved_protocol_is_accepted_only_when_forced() {
    let forced = parse(&format!("{MINIMAL}[routing]\nprotocol = 16\nforce_protocol = true\n")).unwrap();
    assert_eq!(forced.routing.protocol, 16);
    assert!(!RoutingConfig::default().force_protocol, "not forced by default");
}

#[test]
fn allow_prefixes_beyond_the_guards_capacity_are_refused_per_family() {
    let prefixes = |count: u32, v6: bool| -> String {
        let list: Vec<String> = (0..count)
            .map(|i| {
                if v6 {
                    format!("\"2001:db8:{i:x}::/48\"")
                } else {
                    format!("\"10.{}.{}.0/24\"", i / 256, i % 256)
                }
            })
            .collect();
        list.join(", ")
    };
    let config = |v4: u32, v6: u32| {
        let allow = [prefixes(v4, false), prefixes(v6, true)]
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        parse(&format!("[[uplink]]\ninterface = \"a\"\nprimary = true\nallow = [{allow}]\n"))
    };
    assert!(config(MAX_ALLOW, MAX_ALLOW).is_ok());
    let err = config(MAX_ALLOW + 1, 0).unwrap_err();
    assert!(
        matches!(err, ConfigError::TooManyAllow { count: 1025, family: crate::model::Family::V4, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("1025 IPv4 `allow` prefixes"), "{err}");
    assert!(matches!(
        config(0, MAX_ALLOW + 1).unwrap_err(),
        ConfigError::TooManyAllow { family: crate::model::Family::V6, .. }
    ));
}

#[test]
fn health_and_failover_settings_parse_with_defaults_and_bounds() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.policy, Policy::Failover);
    assert_eq!(config.health, HealthConfig::default());
    assert_eq!(config.health.interval, Duration::from_secs(1));
    assert_eq!((config.health.down_after, config.health.up_after), (3, 5));
    assert_eq!(config.routing.default_table(), 7199);
    assert_eq!(config.routing.default_priorities(), (7298, 7299));

    let text = "policy = \"balance\"\n[[uplink]]\ninterface = \"a\"\nprimary = true\nprobe = [\"203.0.113.1\", \"2001:db8::53\"]\nweight = 3\n[[uplink]]\ninterface = \"b\"\npriority = 7\n[health]\ninterval = \"500ms\"\ntimeout = \"300ms\"\ndown_after = 2\nup_after = 10\n";
    let config = parse(text).unwrap();
    assert_eq!(config.policy, Policy::Balance);
    assert_eq!(config.health.interval, Duration::from_millis(500));
    assert_eq!(config.uplinks[0].probes(crate::model::Family::V6).count(), 1);
    assert_eq!((config.uplinks[0].weight(), config.uplinks[1].weight()), (3, 1));
    assert_eq!(config.uplinks[1].priority, Some(7));

    let with = |extra: &str| parse(&format!("[[uplink]]\ninterface = \"a\"\nprimary = true\n{extra}"));
    let nine: Vec<String> = (1..=9).map(|i| format!("\"1.1.1.{i}\"")).collect();
    let nine = with(&format!("probe = [{}]\n", nine.join(", ")));
    assert!(matches!(nine.unwrap_err(), ConfigError::TooManyProbes { count: 9, .. }));
    assert!(matches!(with("probe = [\"224.0.0.1\"]\n").unwrap_err(), ConfigError::BadProbe { .. }));
    assert!(matches!(with("weight = 0\n").unwrap_err(), ConfigError::BadWeight { weight: 0, .. }));
    assert!(matches!(with("weight = 257\n").unwrap_err(), ConfigError::BadWeight { .. }));
    for (health, key) in [
        ("interval = \"10ms\"", "interval"),
        ("interval = \"2s\"\ntimeout = \"3s\"", "timeout"),
        ("down_after = 0", "down_after"),
        ("up_after = 1000", "up_after"),
    ] {
        let err = with(&format!("[health]\n{health}\n")).unwrap_err();
        assert!(matches!(err, ConfigError::BadHealth { key: k, .. } if k == key), "{health}: {err:?}");
    }
    let random = message(&format!("policy = \"random\"\n{MINIMAL}"));
    assert_eq!(random, "mhr.toml:1:10: policy must be \"failover\" or \"balance\", not \"random\"");
}

#[test]
fn oversized_and_unreadable_config_files_are_refused_without_reading_them_whole() {
    let err = Config::load(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
    let err = Config::load(Path::new("/nonexistent/mhr.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("mhr init"), "a missing config points to mhr init: {err}");
    let err = Config::load(Path::new("/proc/self/mem")).unwrap_err();
    assert!(err.to_string().starts_with("cannot read config /proc/self/mem"), "{err}");
}

/// The boundaries the validation draws, each accepted exactly at the
/// limit and refused one past it.
#[test]
fn limits_hold_exactly_at_their_bounds() {
    let uplinks = |count: usize| -> String {
        (0..count)
            .map(|i| {
                format!("[[uplink]]\ninterface = \"up{i}\"\n{}", if i == 0 { "primary = true\n" } else { "" })
            })
            .collect()
    };
    let sixty_four = parse(&format!("{}[routing]\npriority_range = [100, 400]\n", uplinks(64)));
    assert_eq!(sixty_four.map(|c| c.uplinks.len()), Ok(64));
    // Two rule priorities an uplink and two for the default: three uplinks need eight.
    let three = |range: &str| parse(&format!("{}[routing]\npriority_range = {range}\n", uplinks(3)));
    assert!(three("[100, 107]").is_ok());
    let seven = three("[100, 106]").unwrap_err();
    assert!(matches!(seven, ConfigError::PriorityRangeTooSmall { needed: 8, have: 7, .. }), "{seven:?}");
    let one_table =
        parse("[[uplink]]\ninterface = \"a\"\nprimary = true\n[routing]\ntable_range = [7100, 7100]\n");
    assert_eq!(one_table.map(|c| c.routing.tables()), Ok(7100..=7100));
    let probes = |count: usize| {
        let targets: Vec<String> = (1..=count).map(|i| format!("\"192.0.2.{i}\"")).collect();
        parse(&format!("[[uplink]]\ninterface = \"a\"\nprimary = true\nprobe = [{}]\n", targets.join(", ")))
    };
    assert_eq!(probes(MAX_PROBES_PER_UPLINK).map(|c| c.uplinks[0].probe.len()), Ok(MAX_PROBES_PER_UPLINK));
    assert!(matches!(probes(MAX_PROBES_PER_UPLINK + 1), Err(ConfigError::TooManyProbes { .. })));
}

#[test]
fn interface_names_refuse_each_character_the_kernel_does() {
    for name in ["a/b", "a:b", "a b", "a\\tb", ".", ".."] {
        let text = format!("[[uplink]]\ninterface = \"{name}\"\nprimary = true\n");
        assert!(matches!(parse(&text), Err(ConfigError::BadInterfaceName { .. })), "{name:?}");
    }
    let text = "[[uplink]]\ninterface = \"a\\u0001b\"\nprimary = true\n";
    assert!(matches!(parse(text), Err(ConfigError::BadInterfaceName { .. })), "a control character");
    assert!(parse("[[uplink]]\ninterface = \"eth0.100\"\nprimary = true\n").is_ok());
}

#[test]
fn a_config_file_of_exactly_the_limit_loads_and_one_byte_more_does_not() {
    let dir = std::env::temp_dir().join(format!("mhr-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mhr.toml");
    let padded = |size: u64| {
        let mut text = format!("{MINIMAL}#");
        text.push_str(&"x".repeat(size as usize - text.len()));
        text
    };
    std::fs::write(&path, padded(MAX_CONFIG_BYTES)).unwrap();
    let loaded = Config::load(&path).map(|c| c.uplinks.len());
    std::fs::write(&path, padded(MAX_CONFIG_BYTES + 1)).unwrap();
    let too_large = Config::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded, Ok(2));
    assert!(matches!(too_large, Err(ConfigError::TooLarge { size, .. }) if size == MAX_CONFIG_BYTES + 1));
}

#[test]
fn probes_are_split_by_family_and_modes_print_as_written() {
    let text = "[[uplink]]\ninterface = \"a\"\nprimary = true\nprobe = [\"192.0.2.1\", \"2001:db8::1\", \"192.0.2.2\"]\n";
    let config = parse(text).unwrap();
    let probes = |family| config.uplinks[0].probes(family).map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(probes(crate::model::Family::V4), ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(probes(crate::model::Family::V6), ["2001:db8::1"]);
    assert_eq!(
        (GuardMode::Monitor.to_string(), GuardMode::Enforce.to_string()),
        ("monitor".into(), "enforce".into())
    );
    assert_eq!(
        (Policy::Failover.to_string(), Policy::Balance.to_string()),
        ("failover".into(), "balance".into())
    );
}

const UPLINK: &str = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n";

#[test]
fn numbers_out_of_range_say_the_range_in_words() {
    let with = |line: &str| message(&format!("{UPLINK}{line}\n"));
    assert_eq!(
        with("weight = -1"),
        "mhr.toml:4:10: uplink `ens3`: weight must be a whole number from 1 to 256, not -1"
    );
    assert_eq!(
        with("table = -5"),
        "mhr.toml:4:9: uplink `ens3`: table must be a whole number from 1 to 4294967295 other than 253–255, not -5"
    );
    assert_eq!(
        with("[routing]\nprotocol = 300"),
        "mhr.toml:5:12: [routing] protocol must be a whole number from 0 to 255, not 300"
    );
    assert_eq!(
        with("priority = \"3\""),
        "mhr.toml:4:12: uplink `ens3`: priority must be a whole number from 0 to 4294967295, not \"3\""
    );
    assert_eq!(
        with("[routing]\ntable_range = [1, 2, 3]"),
        "mhr.toml:5:15: [routing] table_range must be [first, last], two whole numbers from 1 to 4294967295, not [1, 2, 3]"
    );
    // In the field's type but outside what mhr allows: the same words, from validation.
    assert_eq!(
        with("weight = 0"),
        "mhr.toml:4:1: uplink `ens3`: weight must be a whole number from 1 to 256, not 0"
    );
    assert_eq!(
        with("[metrics]\nbasic_auth_users = [\"prometheus\"]"),
        "mhr.toml:5:20: [metrics] basic_auth_users must be a table of user = \"bcrypt hash\" pairs, not [\"prometheus\"]"
    );
    assert_eq!(
        with("optional = \"yes\""),
        "mhr.toml:4:12: uplink `ens3`: optional must be true or false, not \"yes\""
    );
}

#[test]
fn a_single_bracket_uplink_says_to_write_two() {
    assert_eq!(
        message("[uplink]\ninterface = \"ens3\"\nprimary = true\n"),
        "mhr.toml:1:2: uplinks are a list of tables: write `[[uplink]]` (two brackets) above each uplink's keys"
    );
    assert_eq!(
        message(&format!("{UPLINK}[[health]]\ninterval = \"1s\"\n")),
        "mhr.toml:4:3: [health] is one table: write `[health]` on a line of its own, then its keys"
    );
}

#[test]
fn bad_durations_show_what_one_looks_like() {
    assert_eq!(
        message(&format!("{UPLINK}[health]\ninterval = \"fast\"\ntimeout = 2\n")),
        "mhr.toml:5:12: [health] interval: durations look like 500ms, 2s or 1m, not \"fast\"\n\
         mhr.toml:6:11: [health] timeout: durations look like 500ms, 2s or 1m, not 2"
    );
}

#[test]
fn interface_names_say_why_they_are_refused() {
    assert_eq!(
        message("[[uplink]]\ninterface = \"averyverylongname\"\nprimary = true\n"),
        "mhr.toml:2:1: uplink `averyverylongname`: interface names have at most 15 characters (Linux's IFNAMSIZ)"
    );
    assert_eq!(
        message("[[uplink]]\ninterface = \"a/b\"\nprimary = true\n"),
        "mhr.toml:2:1: uplink `a/b`: interface names cannot hold `/`, `:`, spaces or control characters"
    );
}

#[test]
fn every_semantic_problem_is_reported_at_its_line() {
    let text = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweight = 0\n\
                [[uplink]]\ninterface = \"ens3\"\ntable = 254\n\
                [health]\ninterval = \"10ms\"\ndown_after = 0\n";
    assert_eq!(
        message(text),
        "mhr.toml:4:1: uplink `ens3`: weight must be a whole number from 1 to 256, not 0\n\
         mhr.toml:6:1: uplink `ens3` is configured twice\n\
         mhr.toml:7:1: uplink `ens3`: table 254 is reserved by the kernel (0, 253 default, 254 main, 255 local)\n\
         mhr.toml:9:1: [health] interval must be from 100ms to 1h, not 10ms\n\
         mhr.toml:10:1: [health] down_after must be a whole number from 1 to 100, not 0"
    );
    let Err(ConfigError::Invalid { problems, .. }) = Config::parse(text, Path::new("mhr.toml")) else {
        panic!("not Invalid")
    };
    assert!(matches!(problems[1].error, ConfigError::DuplicateUplink { .. }), "{problems:?}");
    assert_eq!(
        message("[[uplink]]\ninterface = \"a\"\n"),
        "mhr.toml:2:1: no uplink has `primary = true`; exactly one must carry the main default route"
    );
}

#[test]
fn unknown_keys_at_every_level_get_the_nearest_known_one() {
    let text = "moed = \"enforce\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweigth = 2\n\
                [heath]\n[routing]\nprotocl = 210\n[health]\nintervall = \"1s\"\n\
                [guard]\npin_dri = \"/x\"\n[metrics]\nlisten_addr = \"127.0.0.1:1\"\nzzz = 1\n";
    assert_eq!(
        message(text),
        "mhr.toml:1:1: unknown key `moed`; did you mean `mode`?\n\
         mhr.toml:5:1: uplink `ens3`: unknown key `weigth`; did you mean `weight`?\n\
         mhr.toml:6:2: unknown key `heath`; did you mean `health`?\n\
         mhr.toml:8:1: [routing] unknown key `protocl`; did you mean `protocol`?\n\
         mhr.toml:10:1: [health] unknown key `intervall`; did you mean `interval`?\n\
         mhr.toml:12:1: [guard] unknown key `pin_dri`; did you mean `pin_dir`?\n\
         mhr.toml:14:1: [metrics] unknown key `listen_addr`; did you mean `listen`?\n\
         mhr.toml:15:1: [metrics] unknown key `zzz` in [metrics]; known keys: listen, top_offenders, tls_cert, tls_key, basic_auth_users"
    );
    assert_eq!(
        message(&format!("{UPLINK}interval = \"2s\"\n")),
        "mhr.toml:4:1: uplink `ens3`: unknown key `interval`; it belongs in [health]; an uplink's own cadence is `probe_interval`"
    );
}

#[test]
fn a_top_level_key_after_an_uplink_header_is_named_as_such() {
    // `mode` is an uplink key too: it parses, with a warning.
    let config = Config::parse(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n\nmode = \"enforce\"\n",
        Path::new("mhr.toml"),
    )
    .unwrap();
    assert_eq!(config.guard_mode(&config.uplinks[0]).0, GuardMode::Monitor);
    assert_eq!(
        config.warnings,
        [
            "mhr.toml:7:1: `mode` follows [[uplink]] `ens4`, so TOML makes it that uplink's only; to set it for every uplink, move it above the first [[uplink]] (a top-level `mode` silences this)"
        ]
    );
    assert!(
        parse(&format!("mode = \"monitor\"\n{MINIMAL}mode = \"enforce\"\n")).unwrap().warnings.is_empty()
    );
    assert!(parse(&format!("{MINIMAL}mode = \"enforce\"\nweight = 2\n")).unwrap().warnings.is_empty());
    // `policy` is not: an error that says why it landed there.
    assert_eq!(
        message(&format!("{UPLINK}policy = \"balance\"\n")),
        "mhr.toml:4:1: uplink `ens3`: unknown key `policy`; `policy` is a top-level key, and TOML puts every key after a [[uplink]] header into that table: move it above the first table"
    );
}

/// The key schema that words the errors and serde's structs list the
/// same keys: a key added to one is added to the other.
#[test]
fn the_key_schema_matches_the_config_structs() {
    for (table, prefix) in [
        ("", ""),
        ("uplink", "[[uplink]]\ninterface = \"a\"\n"),
        ("health", "[health]\n"),
        ("routing", "[routing]\n"),
        ("guard", "[guard]\n"),
        ("metrics", "[metrics]\n"),
    ] {
        let err = toml::from_str::<RawConfig>(&format!("{prefix}not_a_key = 1\n")).unwrap_err();
        let message = err.message();
        // serde words it "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, `c`".
        let expected = message.split_once("expected ").map_or("", |(_, list)| list);
        let expected = expected.trim_start_matches("one of ").replace(" or ", ", ");
        let mut serde: Vec<&str> = expected.split(", ").map(|k| k.trim().trim_matches('`')).collect();
        let mut schema = check::known_keys(table);
        serde.sort_unstable();
        schema.sort_unstable();
        assert_eq!(serde, schema, "[{table}]: {message}");
    }
}

#[test]
fn a_missing_interface_and_both_guard_names_are_named() {
    assert_eq!(
        message(&format!("{UPLINK}[[uplink]]\nprimary = false\n")),
        "mhr.toml:4:1: uplink #2: `interface` is missing: each [[uplink]] names its network interface, e.g. interface = \"eth0\""
    );
    assert_eq!(
        message(&format!("{UPLINK}[guard]\npin_dir = \"/a\"\n[datapath]\npin_dir = \"/b\"\n")),
        "mhr.toml:6:2: [datapath] is the old name of [guard]: write one of them"
    );
}

#[test]
fn a_key_written_twice_is_named() {
    assert_eq!(
        message(&format!("{UPLINK}interface = \"ens4\"\n")),
        "mhr.toml:4:1: `interface` is written twice; a key (or a [table]) may appear once in its table"
    );
    assert_eq!(
        message(&format!("{UPLINK}[health]\n[health]\n")),
        "mhr.toml:5:2: `health` is written twice; a key (or a [table]) may appear once in its table"
    );
}

/// Every prefix of a full config (cut mid-key, mid-string, mid-table)
/// is an error with a position or a config, never a panic.
#[test]
fn every_truncation_of_a_config_fails_cleanly() {
    let full = "mode = \"enforce\"\npolicy = \"balance\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\
                gateway = \"192.0.2.1\"\ngateway6 = \"fe80::1\"\nallow = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n\
                probe = [\"192.0.2.53\"]\nweight = 3\ntable = 300\n[[uplink]]\ninterface = \"wwan0\"\noptional = true\n\
                [health]\ninterval = \"500ms\"\ntimeout = \"300ms\"\n[routing]\ntable_range = [400, 410]\n\
                [metrics]\nbasic_auth_users = { prometheus = \"x\" }\n";
    for end in (0..=full.len()).filter(|&end| full.is_char_boundary(end)) {
        match Config::parse(&full[..end], Path::new("mhr.toml")) {
            Ok(_) => {}
            Err(ConfigError::Syntax { line, column, .. }) => assert!(line >= 1 && column >= 1),
            Err(ConfigError::Invalid { problems, .. }) => {
                assert!(!problems.is_empty() && problems.iter().all(|p| p.line >= 1 && p.column >= 1))
            }
            Err(other) => panic!("{end}: {other:?}"),
        }
    }
}

#[test]
fn line_column_counts_from_one() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
}

#[test]
fn an_unreadable_config_names_the_path_and_the_systems_answer() {
    let dir = tempfile::tempdir().expect("a directory");
    let binary = dir.path().join("mhr.toml");
    std::fs::write(&binary, [0xff, 0xfe, b'\n']).expect("writes");
    assert_eq!(Config::load(&binary), Err(ConfigError::NotText { path: binary.clone() }));
    // A directory opens, but does not read.
    let err = Config::load(dir.path()).expect_err("a directory is no config");
    assert_eq!(err, ConfigError::Read { path: dir.path().to_owned(), errno: libc::EISDIR });
    let cause = std::io::Error::from_raw_os_error(libc::EISDIR);
    assert_eq!(err.to_string(), format!("cannot read config {}: {cause}", dir.path().display()));
}
