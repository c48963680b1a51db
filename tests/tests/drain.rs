//! `mhr drain` on the seed lab with a running daemon: the drained primary
//! hands main's default to the backup within a health round, while
//! connections to its own address keep answering through it (its table and
//! `from` rules stay); `mhr undrain` brings it back; `status` says so.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use common::{
    daemon::{DaemonThread, METRICS_PORT, sample, wait_default_v4},
    mhr, write_config,
};
use mhr_tests::{
    SeedLab, TempDir,
    probe::{TcpResponder, http_get, tcp_exchange},
    require_root,
    seed_lab::{UPLINKS, routing_section},
};
use mhr_userspace::daemon::DaemonOptions;

#[test]
fn a_drained_primary_gives_up_main_keeps_answering_on_its_address_and_comes_back() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("drain").unwrap();
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\n[[uplink]]\ninterface = \"ens4\"\n\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let options =
        DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() };
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(5));
    let _responder = TcpResponder::start(&lab.host, 8080).unwrap();

    let drained = mhr(&lab.host, &config, &["drain", "ens3", "--for", "1h"]);
    assert!(drained.succeeded(), "{drained:?}");
    assert!(drained.output.contains("ens3 drained until"), "{}", drained.output);
    wait_default_v4(&lab.host, "ens4", Duration::from_secs(5));
    // The client still reaches the host on ens3's address, and the reply
    // leaves by ens3 (its router masquerades nothing inbound: a reply by
    // ens4 would never reach the client with ens3's address).
    let ens3 = SocketAddr::new(IpAddr::V4(UPLINKS[0].floating), 8080);
    assert!(
        tcp_exchange(&lab.client, ens3, Duration::from_secs(2)).unwrap(),
        "ens3's address answers while drained"
    );
    let status = mhr(&lab.host, &config, &["status"]);
    assert!(status.output.contains("DRAINED since"), "{}", status.output);
    let body = http_get(&lab.host, METRICS_PORT, "/metrics").unwrap().1;
    let state = sample(&body, "mhr_uplink_state", "uplink=\"ens3\",family=\"ipv4\",state=\"drained\"");
    assert_eq!(state, Some(1.0), "{body}");

    let undrained = mhr(&lab.host, &config, &["undrain", "ens3"]);
    assert!(undrained.output.contains("ens3 undrained"), "{}", undrained.output);
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(5));
    let again = mhr(&lab.host, &config, &["undrain", "ens3"]);
    assert!(again.succeeded() && again.output.contains("was not drained"), "{again:?}");
    let unknown = mhr(&lab.host, &config, &["drain", "ens9"]);
    assert!(
        unknown.error().contains("ens9 is not a configured uplink (uplinks: ens3, ens4); nothing changed"),
        "{unknown:?}"
    );
}
