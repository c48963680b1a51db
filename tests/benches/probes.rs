//! Probe CPU (`cargo xtask bench`, root; needs MHR_BIN, the release `mhr`).
//! Figures, not pass/fail.
//!
//! `mhr run` on a host with 16 uplinks, each probing 4 targets (ICMP, a TCP
//! connect the peer refuses, a DNS query nothing answers, an HTTP GET the
//! peer refuses) every second, next to the same daemon without probes
//! measured in the same run (the baseline): the daemon's CPU time from
//! /proc over the same wall time.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use mhr_tests::{TempDir, many_uplinks::ManyUplinks, require_root, seed_lab::routing_section};

const UPLINKS: usize = 16;
const MEASURE: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(5);

fn main() {
    require_root();
    let binary = std::path::PathBuf::from(
        std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary (cargo xtask bench sets it)"),
    );
    let host = ManyUplinks::start(UPLINKS, 1, 0).expect("bench host");
    let dir = TempDir::new("bench-probes").unwrap();
    let mut figures = Vec::new();
    for probes in [false, true] {
        let config = dir.path().join(format!("probes-{probes}.toml"));
        std::fs::write(&config, config_text(dir.path(), probes)).unwrap();
        let mut daemon = start(&binary, &host, &config);
        std::thread::sleep(WARM_UP);
        let (cpu_before, wall) = (cpu(daemon.id()), Instant::now());
        std::thread::sleep(MEASURE);
        let used = cpu(daemon.id()) - cpu_before;
        figures.push(used / wall.elapsed().as_secs_f64());
        let _ = daemon.kill();
        let _ = daemon.wait();
        let _ = host.host.command(&binary).arg("--config").arg(&config).arg("down").output();
    }
    let [idle, probing] = figures[..] else { unreachable!("two runs") };
    println!(
        "\n== probe CPU: mhr run, {UPLINKS} uplinks, {}s measured after {}s",
        MEASURE.as_secs(),
        WARM_UP.as_secs()
    );
    println!("   no probes (baseline)            {:>6.2} % of a core", idle * 100.0);
    println!(
        "   {UPLINKS} × 4 targets, 1 s interval    {:>6.2} % of a core   ratio {:.2}",
        probing * 100.0,
        probing / idle.max(1e-9)
    );
}

fn config_text(dir: &Path, probes: bool) -> String {
    let mut text = String::from("[health]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n");
    for i in 0..UPLINKS {
        text += &format!("[[uplink]]\ninterface = \"{}\"\n", ManyUplinks::interface(i));
        if i == 0 {
            text += "primary = true\n";
        }
        if probes {
            let peer = format!("10.100.{i}.1");
            text +=
                &format!("probe = [\"{peer}\", \"tcp:{peer}:9\", \"dns:{peer}\", \"http://{peer}:8080/\"]\n");
        }
        text += "\n";
    }
    text + &routing_section(dir)
}

fn start(binary: &Path, host: &ManyUplinks, config: &Path) -> Child {
    host.host
        .command(binary)
        .arg("--config")
        .arg(config)
        .args(["run", "--no-guard"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mhr run starts")
}

/// User and system CPU seconds of a process so far.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: field 3 on; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / per_second.max(1.0)
}
