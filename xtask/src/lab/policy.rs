//! The lab's traffic-policy demo: a steering rule sends HTTPS through the
//! backup (checked with the kernel's own lookups), and a drain takes the
//! primary out of use while its table and `from` rules stay.

use std::path::Path;

use anyhow::Context as _;
use mhr_tests::{SeedLab, seed_lab::CLIENT};

use super::Mhr;

/// Applies `config` plus one `[[rule]]`, shows where TCP 443 and 80 go,
/// drains and undrains the primary, and applies `config` again.
pub(super) fn traffic_policy_demo(lab: &SeedLab, mhr: &Mhr, dir: &Path) -> anyhow::Result<()> {
    let base = std::fs::read_to_string(&mhr.config).context("reading the lab's config")?;
    let rule = "\n[[rule]]                 # HTTPS by ens4 (else ens3)\nproto = \"tcp\"\ndport = 443\nuplink = [\"ens4\", \"ens3\"]\n";
    let config = dir.join("policy.toml");
    std::fs::write(&config, base + rule).context("writing the policy config")?;
    let policy = Mhr { binary: mhr.binary.clone(), config };
    println!("   {}", rule.trim().replace('\n', "\n   "));
    policy.show(lab, &["apply"])?;
    for port in ["443", "80"] {
        let route =
            lab.host.ip(["-4", "route", "get", &CLIENT.to_string(), "ipproto", "tcp", "dport", port])?;
        let line = route.lines().next().unwrap_or_default();
        println!("$ ip route get {CLIENT} ipproto tcp dport {port}\n   {line}");
    }
    println!("$ mhr check   # (excerpt: the steering rule, by the kernel's own lookup)");
    let output = policy.command(lab, &["check"]).output().context("running mhr check")?;
    for line in String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.contains("rule #")) {
        println!("   {line}");
    }
    println!("\n== maintenance on ens3: mhr drain (its table and from rules stay)");
    policy.show(lab, &["drain", "ens3", "--for", "10m"])?;
    policy.show(lab, &["apply"])?;
    policy.show(lab, &["status", "--brief"])?;
    policy.show(lab, &["undrain", "ens3"])?;
    mhr.show(lab, &["apply"])?;
    Ok(())
}
