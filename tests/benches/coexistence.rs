//! Coexistence benchmark (`cargo xtask bench`, root; needs MHR_BIN): a real
//! systemd-networkd with its default networkd.conf deletes mhr's rules and
//! routes when it restarts. Under `mhr run`:
//!
//! - reconciles and corrections per networkd restart (goal: one reconcile,
//!   one correction per object removed);
//! - time from the restart until mhr's objects are whole again, next to
//!   the time networkd itself takes to configure the links again (its
//!   defaults back in main), and next to mhr healing one deleted rule
//!   (debounce + one reconcile), all measured in the same run.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mhr_tests::{
    Netns, TempDir,
    managers::{Addressing, ManagedLab, Manager, networkd::Networkd},
    probe::http_get,
    require_root,
    seed_lab::routing_section,
};

const ROUNDS: usize = 7;
const PORT: u16 = 9847;

fn main() {
    require_root();
    let binary = PathBuf::from(std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary"));
    let managed = ManagedLab::start([Addressing::Static; 2], Networkd::start).expect("networkd lab");
    let host = managed.host();
    let configured = || defaults_in_main(host) == 2;
    wait(configured, "networkd configures both uplinks");

    // Baseline 1: networkd alone, from SIGTERM until it runs again and
    // both its defaults are in main.
    let mut networkd_alone = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        managed.manager.restart().expect("networkd restart");
        wait(|| networkd_runs(host) && configured(), "networkd configured again");
        networkd_alone.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }

    let dir = TempDir::new("bench-coexistence").unwrap();
    let config = dir.path().join("mhr.toml");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n\n[[uplink]]\ninterface = \"ens4\"\n\n{}",
        routing_section(dir.path())
    );
    std::fs::write(&config, text).unwrap();
    // A fresh daemon per round: a networkd restart is one removal per
    // object, not a fight (three within a minute would be, and paced).
    let (mut one_rule, mut healed) = (Vec::new(), Vec::new());
    let (mut reconciles, mut corrections) = (Vec::new(), Vec::new());
    let mut objects = 0;
    for _ in 0..ROUNDS {
        let mut daemon = Daemon::start(host, &binary, &config);
        wait(|| whole(host) && counters(host).0 >= 1.0, "mhr run converges");
        objects = mhrs_objects(host);
        // Baseline 2: one rule deleted by hand, until it is back.
        let start = Instant::now();
        host.ip(["rule", "del", "priority", "7101"]).unwrap();
        wait(|| whole(host), "the rule is back");
        one_rule.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        let before = counters(host);
        let start = Instant::now();
        managed.manager.restart().expect("networkd restart");
        wait(
            || networkd_runs(host) && configured() && whole(host) && counters(host).1 > before.1,
            "mhr heals",
        );
        healed.push(start.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        let after = counters(host);
        reconciles.push(after.0 - before.0);
        corrections.push(after.1 - before.1);
        daemon.stop();
    }

    // Then a fight: restarts back to back under one daemon.
    let mut daemon = Daemon::start(host, &binary, &config);
    wait(|| whole(host) && counters(host).0 >= 1.0, "mhr run converges");
    let fight_start = counters(host);
    let mut fight = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        managed.manager.restart().expect("networkd restart");
        wait(|| networkd_runs(host) && configured() && whole(host), "mhr heals");
        fight.push(start.elapsed());
    }
    let fight_end = counters(host);
    daemon.stop();
    let (alone, rule, heal) = (median(&mut networkd_alone), median(&mut one_rule), median(&mut healed));
    println!("\n== beside systemd-networkd (default networkd.conf), {ROUNDS} restarts, medians");
    println!("{:<58} {:>10} {:>10}", "", "ms", "ratio");
    println!(
        "{:<58} {:>10.1} {:>10}",
        "networkd restart until it runs with its defaults in main",
        ms(alone),
        "1.00"
    );
    println!(
        "{:<58} {:>10.1} {:>10.2}",
        "networkd restart until mhr's objects are whole again",
        ms(heal),
        ms(heal) / ms(alone)
    );
    println!(
        "{:<58} {:>10.1}",
        "  of which after networkd (heal - networkd alone)",
        ms(heal.saturating_sub(alone))
    );
    println!("{:<58} {:>10.1}", "one rule deleted by hand until back (debounce + reconcile)", ms(rule));
    println!(
        "reconciles per restart: {reconciles:?} (goal: 1); corrections per restart: {corrections:?} ({objects} objects of mhr's)"
    );
    println!(
        "{ROUNDS} restarts back to back under one daemon: heal times {:?} ms, {} corrections (paced once contested: 3 removals within a minute)",
        fight.iter().map(|d| ms(*d).round()).collect::<Vec<_>>(),
        fight_end.1 - fight_start.1
    );
}

/// A systemd-networkd process in the host's network namespace.
fn networkd_runs(host: &Netns) -> bool {
    use std::os::unix::fs::MetadataExt as _;

    let Ok(namespace) = std::fs::metadata(format!("/run/netns/{}", host.name())) else { return false };
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        comm.trim_end() == "systemd-network"
            && std::fs::metadata(entry.path().join("ns/net")).is_ok_and(|ns| ns.ino() == namespace.ino())
    })
}

fn defaults_in_main(host: &Netns) -> usize {
    host.ip(["-4", "route", "show", "default", "table", "main"]).unwrap_or_default().lines().count()
}

/// mhr's IPv4 rules and routes (proto 210).
fn mhrs_objects(host: &Netns) -> usize {
    let rules = host.ip(["-4", "rule", "show"]).unwrap_or_default();
    let routes = host.ip(["-4", "route", "show", "table", "all", "proto", "210"]).unwrap_or_default();
    rules.lines().filter(|l| l.contains("proto 210")).count() + routes.lines().count()
}

/// Both uplinks' tables, the default and the four rules are in place.
fn whole(host: &Netns) -> bool {
    mhrs_objects(host) >= 4 + 5
}

/// Reconciles (ok) and drift corrections so far.
fn counters(host: &Netns) -> (f64, f64) {
    let body = http_get(host, PORT, "/metrics").map(|(_, body)| body).unwrap_or_default();
    let sum = |prefix: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (sum("mhr_reconciles_total{result=\"ok\"}"), sum("mhr_drift_corrections_total{"))
}

fn wait(mut done: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `mhr run` as a process in the host's namespace.
struct Daemon(Child);

impl Daemon {
    fn start(host: &Netns, binary: &PathBuf, config: &std::path::Path) -> Self {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.name()))
            .arg(binary)
            .arg("--config")
            .arg(config)
            .args(["run", "--no-guard", "--resync", "1h"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mhr run");
        Self(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
