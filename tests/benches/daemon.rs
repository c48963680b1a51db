//! Daemon benchmarks (`cargo xtask bench`, root; needs MHR_BIN, the release
//! `mhr`). Figures, each next to a baseline measured in the same run.
//!
//! 1. Event → converged latency: an address added on an uplink until its
//!    `from` rule exists (and removed until the rule is gone), p50/p99;
//!    baseline: the same add/remove until the address itself shows in a
//!    dump (what any reaction costs at least).
//! 2. Daemon RSS next to `ip monitor` subscribed to the same events.
//! 3. Scrape time with a full offender table next to an empty one.
//! 4. Failover latency from a link event and from probe loss until main's
//!    default is on the backup uplink, p50/p99, next to the configured
//!    minimum (down_after × interval for probes).
//! 5. A flood of 1,000,000 spoofed packets from random sources: log lines
//!    written, offender tables and metric series before and after, and the
//!    CPU cost of allowed packets during the flood next to without it.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::TryStreamExt as _;
use mhr_tests::{
    Netns, SeedLab, TempDir,
    quiet_host::QuietHost,
    raw::{mac_of, send_frames, udp4_frame},
    require_root,
    seed_lab::{mhr_config, routing_section},
};
use rtnetlink::{
    IpVersion,
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        rule::RuleAttribute,
    },
};

const CHANGES: usize = 100;
const SCRAPES: usize = 20;
const PORT: u16 = 9847;

fn main() {
    require_root();
    let binary = PathBuf::from(
        std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary (cargo xtask bench sets it)"),
    );
    latency_and_rss(&binary);
    scrape_time(&binary);
    failover_latency(&binary);
    flag_flood(&binary);
}

const FLOOD: u32 = 1_000_000;
const ALLOWED: u32 = 100_000;

/// Thread CPU ns per allowed UDP send out of ens3 (from its own address).
fn allowed_cost(host: &QuietHost) -> f64 {
    let uplink = &host.uplinks[0];
    let (from, to) = (uplink.address, uplink.peer_address);
    host.host
        .run(move || {
            let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
            let start = mhr_tests::measure::thread_cpu();
            for _ in 0..ALLOWED {
                let _ = socket.send_to(&[0x5a; 22], (to, 9));
            }
            (mhr_tests::measure::thread_cpu() - start).as_nanos() as f64 / f64::from(ALLOWED)
        })
        .unwrap()
}

/// Metric series in an exposition (sample lines).
fn series(body: &str) -> usize {
    body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count()
}

fn flag_flood(binary: &PathBuf) {
    let host = QuietHost::start(&["ens3", "ens4"]).expect("host");
    let dir = TempDir::new("bench-flood").unwrap();
    let config = dir.path().join("mhr.toml");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("daemon.log");
    let _daemon = Daemon::start_logging(binary, &host.host, &config, Some(&log));
    let before = http_get(&host.host, "/metrics").unwrap().1;
    let quiet = allowed_cost(&host);

    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    let sender = mhr_tests::raw::RawSender::open(&host.host, "ens3").unwrap();
    let target = host.uplinks[0].peer_address;
    let flood_started = Instant::now();
    let flood = std::thread::spawn(move || {
        // xorshift: reproducible random sources, none of them an uplink's.
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..FLOOD {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let source = Ipv4Addr::from(0xc000_0000 | (state & 0x0fff_ffff));
            let _ = sender.send(&udp4_frame(own, peer, source, target, 18));
        }
    });
    let mut during = Vec::new();
    while !flood.is_finished() {
        during.push(allowed_cost(&host));
    }
    flood.join().unwrap();
    let flood_time = flood_started.elapsed();
    // One summary interval (10 s) later, the summaries are out too.
    std::thread::sleep(Duration::from_secs(11));
    let after = http_get(&host.host, "/metrics").unwrap().1;
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let flag_lines = lines.lines().filter(|l| l.contains("\"target\":\"mhr::flag\"")).count();
    let value = |body: &str, name: &str| {
        body.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let during = if during.is_empty() { quiet } else { during.iter().sum::<f64>() / during.len() as f64 };
    let elapsed = flood_time.as_secs_f64() + 11.0;
    println!(
        "\n== flag flood: {FLOOD} spoofed packets from random sources out of ens3 ({:.1} s)",
        flood_time.as_secs_f64()
    );
    println!(
        "   log: {flag_lines} flag lines in {elapsed:.0} s (cap 50 a second: at most {:.0}); {} lines not written, {} records folded",
        (elapsed.ceil() + 1.0) * 50.0,
        value(&after, "mhr_flag_log_lines_suppressed_total").unwrap_or(f64::NAN),
        value(&after, "mhr_flag_records_folded_total").unwrap_or(f64::NAN),
    );
    println!(
        "   kernel offender table {} of {} (LRU); metric series {} before, {} after",
        value(&after, "mhr_guard_offenders ").unwrap_or(f64::NAN),
        value(&after, "mhr_guard_offenders_capacity").unwrap_or(f64::NAN),
        series(&before),
        series(&after)
    );
    println!(
        "   allowed packet CPU: {quiet:.0} ns quiet, {during:.0} ns during the flood   ratio {:.3}; target ≤ 1.10",
        during / quiet
    );
}

const FAILOVERS: usize = 10;
const HEALTH_INTERVAL_MS: u64 = 200;
const DOWN_AFTER: u64 = 3;

fn main_default_on(netns: &Netns, device: &str) -> bool {
    let routes =
        netns.ip(["-4", "route", "show", "default", "table", "7199", "proto", "210"]).unwrap_or_default();
    routes.contains(&format!("dev {device} "))
}

/// Time from `break_it` until main's default is on ens4; then `repair` and
/// wait for it to come back to ens3.
fn time_failover(lab: &SeedLab, break_it: &dyn Fn(), repair: &dyn Fn()) -> Duration {
    let start = Instant::now();
    break_it();
    while !main_default_on(&lab.host, "ens4") {
        assert!(start.elapsed() < Duration::from_secs(10), "no failover");
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = start.elapsed();
    repair();
    let back = Instant::now();
    while !main_default_on(&lab.host, "ens3") {
        assert!(back.elapsed() < Duration::from_secs(10), "no fail-back");
        std::thread::sleep(Duration::from_millis(10));
    }
    took
}

fn failover_latency(binary: &PathBuf) {
    let lab = SeedLab::start().expect("lab");
    let dir = TempDir::new("bench-failover").unwrap();
    let config = dir.path().join("mhr.toml");
    let probe = "probe = [\"192.0.2.100\"]\n";
    std::fs::write(
        &config,
        format!(
            "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n{probe}[[uplink]]\ninterface = \"ens4\"\n{probe}[health]\ninterval = \"{HEALTH_INTERVAL_MS}ms\"\ntimeout = \"{HEALTH_INTERVAL_MS}ms\"\ndown_after = {DOWN_AFTER}\nup_after = 1\n{}",
            routing_section(dir.path())
        ),
    )
    .unwrap();
    let _daemon = Daemon::start(binary, &lab.host, &config);
    while !main_default_on(&lab.host, "ens3") {
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = &lab.host;
    let mut link: Vec<Duration> = (0..FAILOVERS)
        .map(|_| {
            time_failover(&lab, &|| drop(host.ip(["link", "set", "ens3", "down"])), &|| {
                let _ = host.ip(["link", "set", "ens3", "up"]);
                let _ = host.ip(["addr", "add", "2001:db8:3::10/64", "dev", "ens3", "nodad"]);
            })
        })
        .collect();
    let router = &lab.routers[0];
    let block = dir.path().join("block.nft");
    std::fs::write(&block, "table inet mhr_bench_block {\n chain forward {\n  type filter hook forward priority -20; policy drop;\n }\n}\n").unwrap();
    let mut probes: Vec<Duration> = (0..FAILOVERS)
        .map(|_| {
            time_failover(&lab, &|| drop(router.command("nft").arg("-f").arg(&block).status()), &|| {
                drop(router.command("nft").args(["delete", "table", "inet", "mhr_bench_block"]).status())
            })
        })
        .collect();
    link.sort();
    probes.sort();
    let minimum = Duration::from_millis(HEALTH_INTERVAL_MS * DOWN_AFTER);
    println!("\n== failover: main's default from ens3 to ens4, {FAILOVERS} times each");
    println!(
        "   link down     p50 {:>7.1} ms  p99 {:>7.1} ms   (debounce 20 ms; the kernel reports at once)",
        ms(percentile(&link, 0.5)),
        ms(percentile(&link, 0.99))
    );
    println!(
        "   probe loss    p50 {:>7.1} ms  p99 {:>7.1} ms   configured minimum down_after × interval {:.0} ms (p50 ratio {:.2})",
        ms(percentile(&probes, 0.5)),
        ms(percentile(&probes, 0.99)),
        ms(minimum),
        percentile(&probes, 0.5).as_secs_f64() / minimum.as_secs_f64()
    );
}

struct Daemon(Child);

impl Daemon {
    fn start(binary: &PathBuf, netns: &Netns, config: &std::path::Path) -> Self {
        Self::start_logging(binary, netns, config, None)
    }

    /// Like `start`, writing JSON log lines to `log`.
    fn start_logging(
        binary: &PathBuf,
        netns: &Netns,
        config: &std::path::Path,
        log: Option<&std::path::Path>,
    ) -> Self {
        let stderr = log.map_or_else(Stdio::null, |path| Stdio::from(std::fs::File::create(path).unwrap()));
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", netns.name()))
            .arg(binary)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("mhr run starts");
        let daemon = Self(child);
        let start = Instant::now();
        while http_get(netns, "/healthz").map(|(code, _)| code) != Some(200) {
            assert!(start.elapsed() < Duration::from_secs(20), "the daemon did not become healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(netns: &Netns, path: &str) -> Option<(u16, String)> {
    mhr_tests::probe::http_get(netns, PORT, path)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What marks a change as landed.
#[derive(Clone, Copy)]
enum Watch {
    /// The address itself shows in a dump (the baseline).
    Address,
    /// The daemon's `from` rule for the address exists (or is gone).
    Rule,
}

/// In the lab host: adds and removes addresses over netlink, timing each
/// until `watch` says it has landed.
fn measure(lab: &SeedLab, ens4: u32, watch: Watch) -> (Vec<Duration>, Vec<Duration>) {
    lab.host
        .run(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(connection);
                let probe = Probe { handle };
                let (mut adds, mut removes) = (Vec::new(), Vec::new());
                for i in 0..CHANGES {
                    let address = Ipv4Addr::new(10, 0, 4, 100 + i as u8);
                    let start = Instant::now();
                    // A /32: its own prefix, so it gets a rule of its own (an
                    // address inside ens4's /24 is covered by the prefix rule).
                    probe.handle.address().add(ens4, IpAddr::V4(address), 32).execute().await.unwrap();
                    while !probe.landed(watch, address).await {}
                    adds.push(start.elapsed());
                    let start = Instant::now();
                    let message = probe.address_message(address).await.expect("the address exists");
                    probe.handle.address().del(message).execute().await.unwrap();
                    while probe.landed(watch, address).await {}
                    removes.push(start.elapsed());
                }
                (adds, removes)
            })
        })
        .unwrap()
}

struct Probe {
    handle: rtnetlink::Handle,
}

impl Probe {
    async fn landed(&self, watch: Watch, address: Ipv4Addr) -> bool {
        match watch {
            Watch::Address => self.address_message(address).await.is_some(),
            Watch::Rule => self.has_rule(address).await,
        }
    }

    async fn has_rule(&self, address: Ipv4Addr) -> bool {
        let rules: Vec<_> =
            self.handle.rule().get(IpVersion::V4).execute().try_collect().await.unwrap_or_default();
        rules.iter().any(|rule| {
            rule.attributes
                .iter()
                .any(|attribute| matches!(attribute, RuleAttribute::Source(IpAddr::V4(a)) if *a == address))
        })
    }

    async fn address_message(&self, address: Ipv4Addr) -> Option<AddressMessage> {
        let messages: Vec<_> = self.handle.address().get().execute().try_collect().await.unwrap_or_default();
        messages.into_iter().find(|message| {
            message.attributes.iter().any(
                |attribute| matches!(attribute, AddressAttribute::Address(IpAddr::V4(a)) if *a == address),
            )
        })
    }
}

fn latency_and_rss(binary: &PathBuf) {
    let lab = SeedLab::start().expect("lab");
    let dir = TempDir::new("bench-daemon").unwrap();
    let config = dir.path().join("mhr.toml");
    std::fs::write(&config, mhr_config(dir.path())).unwrap();
    let ens4 = lab.host.run(|| mhr_userspace::guard::tc::interface_index("ens4").unwrap()).unwrap();

    // Baseline first, without a daemon: until the address shows in a dump.
    let (base_adds, base_removes) = measure(&lab, ens4, Watch::Address);
    let daemon = Daemon::start(binary, &lab.host, &config);
    let (adds, removes) = measure(&lab, ens4, Watch::Rule);
    let daemon_rss = rss_kib(daemon.0.id());
    let mut monitor = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.host.name()))
        .args(["ip", "monitor", "all"])
        .stdout(Stdio::null())
        .spawn()
        .expect("ip monitor");
    std::thread::sleep(Duration::from_millis(300));
    let monitor_rss = rss_kib(monitor.id());
    let _ = monitor.kill();
    let _ = monitor.wait();
    drop(daemon);

    println!("== daemon: event → converged, {CHANGES} address adds and removes on an uplink");
    for (what, mut values, mut baseline) in
        [("add → rule", adds, base_adds), ("remove → rule gone", removes, base_removes)]
    {
        values.sort();
        baseline.sort();
        let (p50, p99) = (percentile(&values, 0.5), percentile(&values, 0.99));
        let (b50, b99) = (percentile(&baseline, 0.5), percentile(&baseline, 0.99));
        println!(
            "   {what:<20} p50 {:>6.2} ms  p99 {:>6.2} ms   baseline (change visible in a dump) p50 {:>5.2} ms p99 {:>5.2} ms   p99 ratio {:.1}",
            ms(p50),
            ms(p99),
            ms(b50),
            ms(b99),
            p99.as_secs_f64() / b99.as_secs_f64()
        );
    }
    println!(
        "   RSS: mhr run {:.1} MiB, ip monitor {:.1} MiB (ratio {:.1}); target < 20 MiB",
        daemon_rss as f64 / 1024.0,
        monitor_rss as f64 / 1024.0,
        daemon_rss as f64 / monitor_rss.max(1) as f64
    );
}

fn scrape_time(binary: &PathBuf) {
    let host = QuietHost::start(&["ens3", "ens4"]).expect("host");
    let dir = TempDir::new("bench-scrape").unwrap();
    let config = dir.path().join("mhr.toml");
    let text = format!(
        "[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n[metrics]\ntop_offenders = 10\n\n{}",
        routing_section(dir.path())
    );
    std::fs::write(&config, text).unwrap();
    let _daemon = Daemon::start(binary, &host.host, &config);
    let time_scrapes = || {
        let mut times: Vec<Duration> = (0..SCRAPES)
            .map(|_| {
                let start = Instant::now();
                http_get(&host.host, "/metrics").expect("scrape");
                start.elapsed()
            })
            .collect();
        times.sort();
        percentile(&times, 0.5)
    };
    let empty = time_scrapes();
    let own = mac_of(&host.host, "ens3").unwrap();
    let peer = mac_of(&host.peer, "p0").unwrap();
    for i in 0..1024u32 {
        let source = Ipv4Addr::from(0xc612_0000 + i); // 198.18.0.0/15: no uplink owns it
        let frame = udp4_frame(own, peer, source, host.uplinks[0].peer_address, 18);
        send_frames(&host.host, "ens3", &frame, 1).unwrap();
    }
    let (_, body) = http_get(&host.host, "/metrics").unwrap();
    let occupancy = body.lines().find(|l| l.starts_with("mhr_guard_offenders ")).unwrap_or("?").to_owned();
    let full = time_scrapes();
    println!("\n== /metrics scrape time (median of {SCRAPES}), top_offenders = 10");
    println!("   empty offender table {:>6.2} ms", ms(empty));
    println!(
        "   full offender table  {:>6.2} ms   ratio {:.1}   ({occupancy}); target < 20 ms",
        ms(full),
        full.as_secs_f64() / empty.as_secs_f64()
    );
}
