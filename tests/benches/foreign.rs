//! Foreign routing tables (`cargo xtask bench`, root; needs MHR_BIN, the
//! release `mhr`). Figures, not pass/fail.
//!
//! A host carrying 1,000,000 routes in a table mhr does not own (a BGP
//! full table, a CNI's routes):
//! 1. `mhr plan` wall time next to the same host without them;
//! 2. `mhr run` CPU over 10 s while 20 routes a second change in that
//!    table (and two periodic resyncs run), next to the same daemon and
//!    churn with the table nearly empty.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mhr_tests::{Netns, TempDir, quiet_host::QuietHost, require_root, seed_lab::routing_section};

const FOREIGN_ROUTES: u32 = 1_000_000;
const PLANS: usize = 5;
const WINDOW: Duration = Duration::from_secs(10);
const CHURN_PER_SECOND: u32 = 20;

fn main() {
    require_root();
    let binary = PathBuf::from(
        std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary (cargo xtask bench sets it)"),
    );
    let host = QuietHost::start(&["ens3", "ens4"]).expect("host");
    let dir = TempDir::new("bench-foreign").unwrap();
    let config = dir.path().join("mhr.toml");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    std::fs::write(&config, text).unwrap();
    host.host.ip(["route", "add", "198.18.0.0/32", "dev", "ens3", "table", "500"]).unwrap();

    let plan_small = plan_time(&binary, &host.host, &config);
    let cpu_small = daemon_cpu(&binary, &host.host, &config);

    let started = Instant::now();
    let mut batch = String::with_capacity(FOREIGN_ROUTES as usize * 40);
    for i in 1..FOREIGN_ROUTES {
        let address = std::net::Ipv4Addr::from(0x2000_0000 + i);
        batch.push_str(&format!("route add {address}/32 dev ens3 table 500\n"));
    }
    host.host.ip_batch(&batch).expect("a million routes");
    let filled = started.elapsed();
    let plan_big = plan_time(&binary, &host.host, &config);
    let cpu_big = daemon_cpu(&binary, &host.host, &config);

    println!(
        "\n== foreign table: {FOREIGN_ROUTES} routes in table 500 (added in {:.1} s), next to 1 route",
        filled.as_secs_f64()
    );
    println!(
        "   mhr plan          {:>8.1} ms with 1 route   {:>8.1} ms with {FOREIGN_ROUTES}   ratio {:.2}",
        ms(plan_small),
        ms(plan_big),
        plan_big.as_secs_f64() / plan_small.as_secs_f64()
    );
    println!(
        "   mhr run CPU       {:>7.2} % of a core         {:>7.2} % of a core   ({CHURN_PER_SECOND} changes/s in table 500, resync every 5 s); target ≤ 2 %",
        cpu_small * 100.0,
        cpu_big * 100.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mhr(binary: &Path, netns: &Netns, config: &Path) -> Command {
    let mut command = netns.command(binary);
    command.arg("--config").arg(config);
    command
}

/// Median wall time of `mhr plan`.
fn plan_time(binary: &Path, netns: &Netns, config: &Path) -> Duration {
    let mut times: Vec<Duration> = (0..PLANS)
        .map(|_| {
            let start = Instant::now();
            let output = mhr(binary, netns, config).arg("plan").output().unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// CPU seconds (user + system) of a process so far.
fn cpu_of(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // Fields after the command name (in parentheses): utime is the 14th
    // field overall, stime the 15th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Share of one core `mhr run` uses over WINDOW while routes in table 500
/// change CHURN_PER_SECOND times a second.
fn daemon_cpu(binary: &Path, netns: &Netns, config: &Path) -> f64 {
    let mut child = mhr(binary, netns, config)
        .args(["run", "--no-guard", "--resync", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mhr run starts");
    // Settled: its first reconcile done.
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_of(&child);
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < WINDOW {
        let address = format!("198.19.{}.{}/32", (i / 250) % 250, i % 250);
        netns.ip(["route", "replace", &address, "dev", "ens3", "table", "500"]).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(u64::from(1000 / CHURN_PER_SECOND)));
    }
    let used = cpu_of(&child) - before;
    let _ = child.kill();
    let _ = child.wait();
    used / start.elapsed().as_secs_f64()
}
