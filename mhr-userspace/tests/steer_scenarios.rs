//! Steering rules on the in-memory kernel model, in paused time: TCP 443
//! leaves by the backup while other traffic takes the primary, moves to
//! the next uplink of its list when the backup fails, and a rule whose only
//! uplink fails is withdrawn (its traffic takes main's default). The
//! model's lookups walk the rules with the packet's protocol and port, as
//! `ip route get … ipproto tcp dport 443` does. Golden transcripts in
//! `tests/scenarios/`.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{Scenario, default_via, wait_until, with_daemon};
use mhr_userspace::{
    model::{Family, Flow},
    southbound::{Lookup, Southbound},
};

const PATIENCE: Duration = Duration::from_secs(30);

/// The interface index the kernel (model) sends a TCP packet to
/// `destination:port` by.
async fn tcp_via(
    model: &mhr_userspace::southbound::model::KernelModel,
    destination: &str,
    port: u16,
) -> Option<u32> {
    let destination: IpAddr = destination.parse().unwrap();
    let flow = Flow { ipproto: Some(6), dport: Some(port), ..Flow::default() };
    model.lookup(Lookup { destination, source: None, iif: None, flow }).await.ok()?.interface
}

#[tokio::test(start_paused = true)]
async fn https_leaves_by_the_backup_moves_down_its_list_and_a_single_uplink_rule_is_withdrawn() {
    let mut s = Scenario::new("steer", "seed-host.txt", "steer.toml");
    let model = s.model.clone();
    let engine = s.engine();
    with_daemon(engine, async {
        wait_until(&model, PATIENCE, "mhr run installs the default", || {
            default_via(&model, Family::V4) == ["ens3"]
        })
        .await;
        s.step("mhr run starts");
        let (ens3, ens4) = (Some(2), Some(3));
        assert_eq!(tcp_via(&model, "203.0.113.9", 443).await, ens4, "TCP 443 by the backup");
        assert_eq!(tcp_via(&model, "203.0.113.9", 80).await, ens3, "TCP 80 by main's default");
        assert_eq!(tcp_via(&model, "198.18.7.1", 80).await, ens4, "the customer prefix by ens4");
        assert_eq!(tcp_via(&model, "2001:db8:ffff::9", 443).await, ens4, "IPv6 too");

        model.silence("ens4", true);
        wait_until(&model, PATIENCE, "ens4 judged down", || {
            !model.render().contains("ip -4 rule add from all ipproto tcp dport 443 lookup 7101")
        })
        .await;
        s.step("ens4's upstream goes silent");
        assert_eq!(tcp_via(&model, "203.0.113.9", 443).await, ens3, "the next uplink of the list");
        assert_eq!(tcp_via(&model, "198.18.7.1", 80).await, ens3, "withdrawn: main's default");
        assert!(!model.render().contains("to 198.18.0.0/15"), "the single-uplink rule is gone");
        // IPv6 has no probe there: ens4 still carries steered IPv6.
        assert_eq!(tcp_via(&model, "2001:db8:ffff::9", 443).await, ens4);

        model.silence("ens4", false);
        wait_until(&model, PATIENCE, "back on ens4", || model.render().contains("to 198.18.0.0/15")).await;
        s.step("ens4 answers again");
        assert_eq!(tcp_via(&model, "203.0.113.9", 443).await, ens4);
    })
    .await;
    s.finish();
}

/// `check` runs as root: its lookups for main's default must not be caught
/// by a rule for uid 0, and the rule itself is checked with a uid it selects.
#[tokio::test]
async fn check_passes_with_a_rule_for_root_and_the_system_users() {
    let s = Scenario::new("steer-uid", "seed-host.txt", "steer-uid.toml");
    let engine = s.engine();
    engine.apply(&engine.plan().await.expect("plans")).await.expect("applies");
    let report = engine.check(false).await.expect("checks");
    let failed: Vec<_> = report.findings.iter().filter(|f| !f.ok).collect();
    assert!(failed.is_empty(), "check passes: {failed:#?}");
    let rule = report.findings.iter().find(|f| f.check.contains("rule #1 sends 203.0.113.1 uid 0 by ens4"));
    assert!(rule.is_some_and(|f| f.ok), "{:#?}", report.findings);
}
