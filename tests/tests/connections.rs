//! Connection-aware `plan` and `check --connections`: real TCP connections
//! between namespaces, listed by the kernel's sock_diag.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{FromRawFd as _, IntoRawFd as _},
};

use common::{mhr, write_config};
use mhr_tests::{TempDir, many_uplinks::ManyUplinks, require_root};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};

/// A remote address behind the peer, reached through main's default.
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// up1's address.
const UP1: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 10);
const PORT: u16 = 2022;

/// A TCP connection from REMOTE (on the peer) to up1's address: it comes
/// in on up1, and without mhr its replies leave by up0 (main's default).
fn asymmetric_connection(host: &ManyUplinks) -> (TcpStream, TcpStream) {
    host.peer.ip(["addr", "add", &format!("{REMOTE}/32"), "dev", "lo"]).unwrap();
    let listener = host.host.run(|| TcpListener::bind(SocketAddrV4::new(UP1, PORT)).unwrap()).unwrap();
    let client = host
        .peer
        .run(|| {
            let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(SocketAddrV4::new(REMOTE, 0)))
                .unwrap();
            connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(SocketAddrV4::new(UP1, PORT)))
                .unwrap();
            // SAFETY: a connected socket this closure owns.
            unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
        })
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn plan_names_the_connections_it_moves_and_check_verifies_each_one() {
    require_root();
    let host = ManyUplinks::start(2, 1, 0).unwrap();
    let dir = TempDir::new("connections").unwrap();
    let config = write_config(&dir, &host.mhr_config(dir.path()));
    let (_client, _server) = asymmetric_connection(&host);
    let connection = format!("tcp {UP1}:{PORT} ⇄ {REMOTE}:");

    let plan = mhr(&host.host, &config, &["plan"]);
    assert!(plan.succeeded(), "{plan:?}");
    let line = plan.output.lines().find(|line| line.contains(&connection)).unwrap_or_else(|| {
        panic!("the connection is listed:\n{}", plan.output);
    });
    assert!(
        line.ends_with("leaves by up0 now, by up1 after (asymmetric now: its address is up1's; fixed)"),
        "{line}"
    );
    assert!(plan.output.contains("connections that change uplink (1 of 1 established)"), "{}", plan.output);

    assert!(mhr(&host.host, &config, &["apply", "--no-guard"]).succeeded());
    let check = mhr(&host.host, &config, &["check", "--connections"]);
    assert!(check.succeeded(), "{}", check.output);
    assert!(check.output.contains(&connection), "{}", check.output);
    let again = mhr(&host.host, &config, &["plan"]);
    assert!(again.output.contains("connections: 1 established, none changes uplink"), "{}", again.output);

    // Someone removes the rule that keeps up1's replies on up1.
    host.host.ip(["rule", "del", "from", "10.100.1.0/24", "lookup", "7101"]).unwrap();
    let check = mhr(&host.host, &config, &["check", "--connections"]);
    assert!(!check.succeeded(), "{}", check.output);
    let failing = check.output.lines().find(|line| line.contains(&connection) && line.contains("FAIL"));
    assert!(failing.is_some(), "the connection is named as failing:\n{}", check.output);
    assert!(check.output.contains("leaves by up0"), "{}", check.output);
    assert!(mhr(&host.host, &config, &["down"]).succeeded());
}
