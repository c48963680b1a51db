//! Flows moved when one of four balanced uplinks fails (`cargo xtask
//! bench`, root; needs MHR_BIN, the release `mhr`). Figures, not
//! pass/fail.
//!
//! Under `policy = "balance"` mhr installs a resilient nexthop group and
//! hashes on the destination (`balance_hash = "destination"`). 4,000
//! destinations are looked up with the kernel's own `ip route get …
//! ipproto tcp sport S dport 443`; one uplink's link goes down, mhr applies
//! again (three members), and the flows are looked up again. The baseline
//! is the ideal: only the failed uplink's flows move (its share, about a
//! quarter). The ratio says how many more move; "needlessly" counts flows
//! that moved between uplinks that stayed healthy.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mhr_tests::{Netns, TempDir, many_uplinks::ManyUplinks, require_root};

const UPLINKS: usize = 4;
const FLOWS: u16 = 4000;

fn main() {
    require_root();
    let binary = PathBuf::from(
        std::env::var_os("MHR_BIN").expect("MHR_BIN: the mhr binary (cargo xtask bench sets it)"),
    );
    println!(
        "\n== balance: flows moved when one of {UPLINKS} balanced uplinks fails ({FLOWS} destinations, kernel lookups)"
    );
    for failed in 0..UPLINKS {
        let host = ManyUplinks::start(UPLINKS, 1, 0).expect("bench host");
        let dir = TempDir::new("bench-balance").unwrap();
        let config = dir.path().join("balance.toml");
        std::fs::write(&config, format!("policy = \"balance\"\n{}", host.mhr_config(dir.path()))).unwrap();
        mhr(&binary, &host.host, &config, &["apply", "--no-guard"]);
        let before = uplinks(&host.host, &dir);
        let failed_name = ManyUplinks::interface(failed);
        host.host.ip(["link", "set", &failed_name, "down"]).unwrap();
        mhr(&binary, &host.host, &config, &["apply", "--no-guard"]);
        let after = uplinks(&host.host, &dir);
        assert_eq!(before.len(), after.len());
        let on_failed = before.iter().filter(|u| **u == failed_name).count();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let needless = before.iter().zip(&after).filter(|(b, a)| **b != failed_name && b != a).count();
        let share = |n: usize| n as f64 / f64::from(FLOWS) * 100.0;
        println!(
            "   {failed_name} fails: {:>5.1} % of flows were on it (baseline), {:>5.1} % moved, {:>5.1} % needlessly   ratio {:.2}",
            share(on_failed),
            share(moved),
            share(needless),
            moved as f64 / on_failed.max(1) as f64
        );
        mhr(&binary, &host.host, &config, &["down"]);
    }
}

/// The uplink each flow leaves by, per `ip route get` (one `ip -batch`).
fn uplinks(host: &Netns, dir: &TempDir) -> Vec<String> {
    let commands: String = (0..FLOWS)
        .map(|flow| {
            format!("route get 198.{}.{}.1 ipproto tcp sport 20000 dport 443\n", 18 + flow / 250, flow % 250)
        })
        .collect();
    let batch = dir.path().join("lookups.batch");
    std::fs::write(&batch, commands).expect("writing the lookups");
    let output = host.command("ip").arg("-batch").arg(&batch).output().expect("ip -batch");
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let found: Vec<String> = words.windows(2).filter(|w| w[0] == "dev").map(|w| w[1].to_owned()).collect();
    assert_eq!(found.len(), usize::from(FLOWS), "one answer per lookup");
    found
}

fn mhr(binary: &Path, host: &Netns, config: &Path, args: &[&str]) {
    let mut command: Command = host.command(binary);
    let output = command.arg("--config").arg(config).args(args).output().unwrap();
    assert!(output.status.success(), "mhr {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}
