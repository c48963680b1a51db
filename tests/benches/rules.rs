//! Rule-walk benchmark (`cargo xtask bench`, root; needs MHR_BIN, the
//! release `mhr`). Figures, not pass/fail.
//!
//! The kernel walks the rule list on every uncached route lookup: each
//! datagram of an unconnected UDP socket, each new TCP connection. A host
//! with 16 uplinks × 50 IPv4 addresses sends unconnected UDP from the last
//! uplink's last address; CPU per `sendto` with mhr's rules laid out per
//! prefix (the default), per address with `to` rules (the seed's layout),
//! and, as the baseline measured in the same round, a single-uplink config
//! (one rule before main).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
};

use mhr_tests::{TempDir, many_uplinks::ManyUplinks, raw::mac_of, require_root, seed_lab::routing_section};

const UPLINKS: usize = 16;
const ADDRESSES: usize = 50;
const SENDS: u32 = 200_000;
const ROUNDS: usize = 7;
/// Outside every uplink's prefix: the lookup ends at the table's default.
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn main() {
    require_root();
    let binary = PathBuf::from(
        std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary (cargo xtask bench sets it)"),
    );
    let host = ManyUplinks::start(UPLINKS, ADDRESSES, 0).expect("bench host");
    let dir = TempDir::new("bench-rules").unwrap();
    let last = UPLINKS - 1;
    let source = Ipv4Addr::new(10, 100, last as u8, 10 + ADDRESSES as u8 - 1);
    let gateway = format!("10.100.{last}.1");
    let port = format!("p{last}");
    let mac = mac_of(&host.peer, &port).unwrap();
    let lladdr = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let interface = ManyUplinks::interface(last);
    // The gateway's address is known for good; the peer's ends go down
    // while measuring, so veth drops right after transmit and the figure is
    // the sender's path: socket, rule walk, FIB, neighbour, device.
    host.host
        .ip(["neigh", "replace", &gateway, "lladdr", &lladdr, "dev", &interface, "nud", "permanent"])
        .unwrap();
    let set_peers = |state: &str| {
        let batch: String = (0..UPLINKS).map(|i| format!("link set p{i} {state}\n")).collect();
        host.peer.ip_batch(&batch).unwrap();
    };

    let one = write(&dir, "one.toml", &format!("[[uplink]]\ninterface = \"{interface}\"\nprimary = true\n"));
    let all = host.mhr_config(dir.path());
    let by_prefix = write(&dir, "prefix.toml", &all);
    let seed = all.replace("[routing]\n", "[routing]\nsource_rules = \"address\"\nto_rules = true\n");
    let by_address = write(&dir, "address.toml", &seed);
    let layouts = [
        ("one uplink (baseline)", &one),
        ("per prefix (default)", &by_prefix),
        ("per address + to", &by_address),
    ];

    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); layouts.len()];
    let mut rule_counts = vec![0; layouts.len()];
    let mut baselines = Vec::new();
    for _ in 0..ROUNDS {
        let mut baseline = 0.0;
        for (index, (_, config)) in layouts.iter().enumerate() {
            set_peers("up");
            mhr(&binary, &host, config, &["apply", "--no-guard"]);
            set_peers("down");
            rule_counts[index] = host.host.ip(["-4", "rule"]).unwrap().lines().count();
            let cost = host.host.run(|| ns_per_send(source)).unwrap();
            if index == 0 {
                baseline = cost;
                baselines.push(cost);
            }
            figures[index].push(cost / baseline);
            mhr(&binary, &host, config, &["down"]);
        }
    }
    println!(
        "\n== rule walk: unconnected UDP sendto from the last of {UPLINKS} uplinks × {ADDRESSES} IPv4 addresses, {SENDS} sends, median of {ROUNDS} rounds"
    );
    let baseline = median(baselines);
    for ((name, _), (ratios, rules)) in layouts.iter().zip(figures.into_iter().zip(rule_counts)) {
        let ratio = median(ratios);
        println!(
            "   {name:<24} {rules:>5} IPv4 rules   {:>6.0} ns per send   ratio {ratio:.2}",
            ratio * baseline
        );
    }
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    let text = if text.contains("[routing]") {
        text.to_owned()
    } else {
        text.to_owned() + &routing_section(dir.path())
    };
    std::fs::write(&path, text).unwrap();
    path
}

fn mhr(binary: &Path, host: &ManyUplinks, config: &Path, args: &[&str]) {
    let mut command: Command = host.host.command(binary);
    let output = command.arg("--config").arg(config).args(args).output().unwrap();
    assert!(output.status.success(), "mhr {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Thread CPU ns per unconnected `sendto` from `source`.
fn ns_per_send(source: Ipv4Addr) -> f64 {
    let socket = UdpSocket::bind(SocketAddrV4::new(source, 0)).unwrap();
    let target = SocketAddrV4::new(REMOTE, 9);
    let payload = [0x5a; 22];
    let start = mhr_tests::measure::thread_cpu();
    for _ in 0..SENDS {
        let _ = socket.send_to(&payload, target);
    }
    (mhr_tests::measure::thread_cpu() - start).as_nanos() as f64 / f64::from(SENDS)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
