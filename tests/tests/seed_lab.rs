//! The lab harness is real: it reproduces the seed's failure before any fix.

use std::{net::SocketAddr, path::Path, time::Duration};

use mhr_tests::{
    SeedLab,
    probe::{TcpResponder, ping, tcp_exchange},
    require_root,
};

const TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn primary_floating_ip_answers_and_secondary_does_not_before_any_fix() {
    require_root();
    let lab = SeedLab::start().expect("lab starts");
    let responder = TcpResponder::start(&lab.host, 0).expect("responder listens");
    let [primary, secondary] = lab.uplinks() else { panic!("the seed lab has two uplinks") };

    for address in primary.public_addresses() {
        assert!(ping(&lab.client, address, TIMEOUT).unwrap(), "primary {address} answers ping");
        let service = SocketAddr::new(address, responder.port());
        assert!(tcp_exchange(&lab.client, service, TIMEOUT).unwrap(), "primary {service} answers TCP");
    }
    assert_eq!(lab.spoof_drops(0).unwrap(), 0, "nothing spoofed reached the primary's router yet");

    for address in secondary.public_addresses() {
        assert!(!ping(&lab.client, address, TIMEOUT).unwrap(), "secondary {address} must not answer ping");
        let service = SocketAddr::new(address, responder.port());
        assert!(
            !tcp_exchange(&lab.client, service, TIMEOUT).unwrap(),
            "secondary {service} must not answer TCP"
        );
    }
    // The secondary's replies left through the primary's uplink and its
    // router dropped them as spoofed; none went out the secondary's.
    assert!(lab.spoof_drops(0).unwrap() >= 4, "the primary's router dropped the secondary's replies");
    assert_eq!(lab.spoof_drops(1).unwrap(), 0);
}

#[test]
fn lab_namespaces_are_removed_when_dropped_and_when_a_test_panics() {
    require_root();
    let lab = SeedLab::start().expect("lab starts");
    let names: Vec<String> = lab.namespaces().map(|ns| ns.name().to_owned()).collect();
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|name| exists(name)));
    drop(lab);
    assert!(names.iter().all(|name| !exists(name)), "dropped lab left {names:?}");

    let names = std::panic::catch_unwind(|| {
        let lab = SeedLab::start().expect("lab starts");
        let names: Vec<String> = lab.namespaces().map(|ns| ns.name().to_owned()).collect();
        std::panic::panic_any(names);
    })
    .expect_err("the closure panics")
    .downcast::<Vec<String>>()
    .expect("the panic carries the names");
    assert!(names.iter().all(|name| !exists(name)), "panicking test left {names:?}");
}

fn exists(netns: &str) -> bool {
    Path::new("/run/netns").join(netns).exists()
}
