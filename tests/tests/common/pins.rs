//! What the pin tests share: a two-uplink quiet host's config, and the
//! lines of an output naming something.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::PathBuf;

use mhr_common::guard::{UPLINKS_MAP, UplinkGuard};
use mhr_tests::{TempDir, seed_lab::routing_section};

use super::write_config;

pub const UPLINK_VALUE: u32 = size_of::<UplinkGuard>() as u32;

pub fn uplinks_pin(dir: &TempDir) -> PathBuf {
    dir.pin_dir().join(format!("v{}/maps", mhr_common::guard::MAP_LAYOUT_VERSION)).join(UPLINKS_MAP)
}

pub fn config(dir: &TempDir, mode: &str) -> PathBuf {
    let text = format!(
        "mode = \"{mode}\"\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\ngateway = \"10.99.0.1\"\n\n[[uplink]]\ninterface = \"ens4\"\ngateway = \"10.99.1.1\"\n\n{}",
        routing_section(dir.path())
    );
    write_config(dir, &text)
}

pub fn lines_naming<'a>(output: &'a str, what: &str) -> Vec<&'a str> {
    output.lines().filter(|line| line.contains(what)).collect()
}
