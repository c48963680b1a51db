//! Passive health benchmarks (`cargo xtask bench`, root; part 2 needs
//! MHR_BIN, the `mhr` binary). Figures, not pass/fail; each next to a
//! baseline measured in the same run.
//!
//! 1. CPU per TCP segment with passive quality on (the TCP tracepoints
//!    attached and the guard counting sent segments) next to off (the
//!    guard alone), over veth with GSO off so every segment is a packet
//!    (the worst case: with GSO the guard runs once per 64 KiB). System
//!    CPU from /proc/stat over a fixed transfer, alternating rounds; and
//!    the programs' own run time per segment (BPF_ENABLE_STATS).
//! 2. A silent upstream under a live TCP stream: time from the silence to
//!    main's default on the other uplink, `mhr run` with `passive = true`
//!    next to probes alone at the same interval (1 s, down_after 3).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use mhr_tests::{
    TempDir,
    quiet_host::QuietHost,
    require_root,
    seed_lab::{CLIENT, SeedLab, routing_section},
    traffic::{StopOnDrop, stream_until},
};
use mhr_userspace::guard::{
    Enforcement, Guard, GuardUplink,
    tc::{AttachMode, interface_index},
    teardown,
};

const ROUNDS: usize = 7;
const TRANSFER_BYTES: usize = 256 << 20;
/// TCP payload per segment over veth (MTU 1500, timestamps on).
const MSS: f64 = 1448.0;
const FAILOVER_RUNS: usize = 3;

fn main() {
    require_root();
    cpu_per_segment();
    if std::env::var_os("MHR_BENCH_CPU_ONLY").is_none() {
        failover_times();
    }
}

/// Busy CPU time of the whole machine so far (every CPU; softirq, where
/// the receive path and the tracepoints run, included).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal ...
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| fields.get(*i)).sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(busy * 1000 / per_second)
}

/// Run time and runs of mhr's programs so far (stats are on while the
/// BPF_ENABLE_STATS descriptor is held).
fn mhr_program_stats() -> (Duration, u64) {
    let mut total = (Duration::ZERO, 0);
    for info in aya::programs::loaded_programs().flatten() {
        if info.name_as_str().is_some_and(|name| name.starts_with("mhr_")) {
            total.0 += info.run_time();
            total.1 += info.run_count();
        }
    }
    total
}

/// Moves TRANSFER_BYTES from the host's ens3 to its peer; returns the
/// machine's busy CPU and mhr's programs' run time over it.
fn transfer(host: &QuietHost) -> (Duration, Duration) {
    let to = host.uplinks[0].peer_address;
    let listener = host.peer.run(move || TcpListener::bind((to, 0)).unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = vec![0u8; 1 << 16];
        while stream.read(&mut buffer).is_ok_and(|n| n > 0) {}
    });
    let (busy, programs) = (machine_busy(), mhr_program_stats().0);
    host.host
        .run(move || {
            let mut socket = TcpStream::connect((to, port)).unwrap();
            let buffer = vec![0x5a; 1 << 16];
            for _ in 0..TRANSFER_BYTES / buffer.len() {
                socket.write_all(&buffer).unwrap();
            }
        })
        .unwrap();
    sink.join().unwrap();
    (machine_busy() - busy, mhr_program_stats().0 - programs)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn cpu_per_segment() {
    let host = QuietHost::start(&["ens3"]).expect("bench host");
    host.host.ip(["link", "set", "dev", "ens3", "gso_max_segs", "1"]).unwrap();
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let pin = PathBuf::from(format!("/sys/fs/bpf/mhr-bench-passive-{}", std::process::id()));
    let mut guard = host
        .host
        .run(|| {
            let ifindex = interface_index("ens3").unwrap();
            let mut guard = Guard::load(&pin).expect("guard loads");
            let uplink = GuardUplink {
                interface: "ens3".into(),
                ifindex,
                addresses: vec![IpAddr::V4(host.uplinks[0].address)],
                allow: vec![],
                enforcement: Enforcement::Monitor,
                l3: false,
                steer_to: Default::default(),
            };
            guard.configure(std::slice::from_ref(&uplink)).expect("maps filled");
            guard.attach(&[uplink], AttachMode::Tcx).expect("guard attached");
            guard
        })
        .unwrap();
    let segments = TRANSFER_BYTES as f64 / MSS;
    let (mut ratios, mut off_ns, mut on_ns, mut off_bpf, mut on_bpf) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so drift on a shared machine cancels.
        let mut figures = [(Duration::ZERO, Duration::ZERO); 2];
        for on in if round % 2 == 0 { [false, true] } else { [true, false] } {
            if on {
                guard.watch_tcp().expect("tracepoints attach");
            } else {
                guard.unwatch_tcp();
            }
            figures[usize::from(on)] = transfer(&host);
        }
        let [(off, off_programs), (on, on_programs)] = figures;
        ratios.push(on.as_secs_f64() / off.as_secs_f64().max(1e-9));
        off_ns.push(off.as_nanos() as f64 / segments);
        on_ns.push(on.as_nanos() as f64 / segments);
        off_bpf.push(off_programs.as_nanos() as f64 / segments);
        on_bpf.push(on_programs.as_nanos() as f64 / segments);
    }
    let per_program = program_breakdown();
    guard.unwatch_tcp();
    drop(guard);
    let _ = teardown(&pin, &[]);
    println!(
        "\n== passive quality: CPU per TCP segment, {} MiB over veth (GSO off), median of {ROUNDS} rounds",
        TRANSFER_BYTES >> 20
    );
    println!(
        "   passive off (guard only)   {:>7.0} ns machine CPU, {:>5.1} ns in mhr's programs",
        median(off_ns),
        median(off_bpf)
    );
    println!(
        "   passive on                 {:>7.0} ns machine CPU, {:>5.1} ns in mhr's programs",
        median(on_ns),
        median(on_bpf)
    );
    println!("   ratio on/off {:.3}; goal ≤ 1.03", median(ratios));
    for (name, runs, ns) in per_program {
        println!("   {name:<16} {runs:>9} runs, {:>6.1} ns a run", ns / runs.max(1) as f64);
    }
}

/// Each of mhr's programs: runs and run time over the whole benchmark.
fn program_breakdown() -> Vec<(String, u64, f64)> {
    aya::programs::loaded_programs()
        .flatten()
        .filter_map(|info| {
            let name = info.name_as_str()?.to_owned();
            name.starts_with("mhr_").then(|| (name, info.run_count(), info.run_time().as_nanos() as f64))
        })
        .collect()
}

fn config_text(dir: &Path, passive: bool) -> String {
    let probe = format!("probe = [\"{CLIENT}\"]\n");
    format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{probe}\n[[uplink]]\ninterface = \"ens4\"\n{probe}\n[health]\ninterval = \"1s\"\ntimeout = \"500ms\"\ndown_after = 3\nup_after = 2\npassive = {passive}\nrx_silence = \"500ms\"\n\n{}",
        routing_section(dir)
    )
}

fn mhr_default_v4(lab: &SeedLab) -> String {
    let routes =
        lab.host.ip(["-4", "route", "show", "default", "table", "7199", "proto", "210"]).unwrap_or_default();
    let words: Vec<&str> = routes.split_whitespace().collect();
    words.windows(2).filter(|pair| pair[0] == "dev").map(|pair| pair[1]).collect::<Vec<_>>().join("+")
}

fn wait_default(lab: &SeedLab, device: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if mhr_default_v4(lab) == device {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn start(binary: &Path, lab: &SeedLab, config: &Path) -> Child {
    lab.host
        .command(binary)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mhr run starts")
}

/// One failover under a stream; None when it did not happen within 20 s.
fn failover(binary: &Path, lab: &SeedLab, config: &Path) -> Option<Duration> {
    let mut daemon = start(binary, lab, config);
    wait_default(lab, "ens3", Duration::from_secs(15)).expect("mhr run routes by ens3");
    let stop = AtomicBool::new(false);
    let took = std::thread::scope(|scope| {
        scope.spawn(|| stream_until(&lab.host, &lab.client, CLIENT.into(), &stop));
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(2));
        lab.silence_upstream(0).expect("upstream silenced");
        wait_default(lab, "ens4", Duration::from_secs(20))
    });
    lab.restore_upstream(0).expect("upstream restored");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = lab.host.command(binary).arg("--config").arg(config).arg("down").output();
    took
}

fn failover_times() {
    let binary = PathBuf::from(
        std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary (cargo xtask bench sets it)"),
    );
    let lab = SeedLab::start().expect("seed lab");
    let dir = TempDir::new("bench-passive").unwrap();
    let mut medians = Vec::new();
    for passive in [false, true] {
        let config = dir.path().join(format!("passive-{passive}.toml"));
        std::fs::write(&config, config_text(dir.path(), passive)).unwrap();
        let times: Vec<f64> = (0..FAILOVER_RUNS)
            .filter_map(|_| failover(&binary, &lab, &config))
            .map(|d| d.as_secs_f64())
            .collect();
        assert!(!times.is_empty(), "no failover with passive = {passive}");
        medians.push(median(times));
    }
    let [probes, passive] = medians[..] else { unreachable!("two runs") };
    println!("\n== silent upstream under a TCP stream: time to fail over, median of {FAILOVER_RUNS}");
    println!("   probes alone (1 s interval, down_after 3)   {probes:>6.2} s");
    println!(
        "   passive = true (rx_silence 500 ms)         {passive:>6.2} s   ratio {:.2}; goal < 0.33",
        passive / probes.max(1e-9)
    );
}
