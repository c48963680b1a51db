//! `failback = "reset"` on the seed lab: a TCP connection the host opened
//! while failed over to ens4 is reset when main's default returns to ens3
//! (the application sees the connection aborted and reconnects through
//! the primary); a connection from before the failover stays open.

mod common;

use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{
    daemon::{DaemonThread, METRICS_PORT, eventually, sample, wait_default_v4},
    write_config,
};
use mhr_tests::{
    Netns, SeedLab, TempDir,
    probe::http_get,
    require_root,
    seed_lab::{CLIENT, routing_section},
};
use mhr_userspace::daemon::DaemonOptions;

/// A server in the client's namespace that accepts and holds every
/// connection open, sending nothing.
fn holding_server(client: &Netns, port: u16) -> std::thread::JoinHandle<()> {
    let listener = client.run(move || TcpListener::bind((IpAddr::V4(CLIENT), port))).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
            if held.len() == 2 {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
        }
    })
}

fn connect(host: &Netns, port: u16) -> TcpStream {
    let stream = host
        .run(move || {
            TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(CLIENT), port), Duration::from_secs(2))
        })
        .unwrap()
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    stream
}

/// Whether the connection is still open (a read times out rather than
/// failing or ending).
fn open(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(err) => matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        // The end of the stream.
        Ok(0) => false,
        // The server sends nothing: a byte is not this test's connection.
        Ok(_) => false,
    }
}

#[test]
fn connections_the_failover_put_on_the_backup_are_reset_at_fail_back() {
    require_root();
    let lab = SeedLab::start().unwrap();
    let dir = TempDir::new("failback").unwrap();
    let _server = holding_server(&lab.client, 7000);
    let text = format!(
        "failback = \"reset\"\n\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\nprobe = [\"{CLIENT}\"]\n\n[[uplink]]\ninterface = \"ens4\"\nprobe = [\"{CLIENT}\"]\n\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\ndown_after = 2\nup_after = 2\n\n{}",
        routing_section(dir.path())
    );
    let config = write_config(&dir, &text);
    let options =
        DaemonOptions { resync: Duration::from_secs(3600), guard: false, ..DaemonOptions::default() };
    let _daemon = DaemonThread::start(&lab.host, &config, options);
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(8));
    let mut before = connect(&lab.host, 7000);
    assert_eq!(before.local_addr().unwrap().ip(), IpAddr::V4("10.0.3.10".parse().unwrap()));

    lab.silence_upstream(0).unwrap();
    wait_default_v4(&lab.host, "ens4", Duration::from_secs(8));
    let mut during = connect(&lab.host, 7000);
    assert_eq!(during.local_addr().unwrap().ip(), IpAddr::V4("10.0.4.10".parse().unwrap()), "by the backup");
    assert!(open(&mut during));

    lab.restore_upstream(0).unwrap();
    wait_default_v4(&lab.host, "ens3", Duration::from_secs(8));
    eventually("the failover's connection is reset", Duration::from_secs(3), || {
        if open(&mut during) { Err("still open".to_owned()) } else { Ok(()) }
    });
    assert!(open(&mut before), "the connection from before the failover (on ens3) stays");
    let body = http_get(&lab.host, METRICS_PORT, "/metrics").unwrap().1;
    assert_eq!(sample(&body, "mhr_failback_resets_total", ""), Some(1.0), "{body}");
}
