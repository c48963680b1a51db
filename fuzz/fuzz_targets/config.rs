//! The config loader over arbitrary text: an error or a config, never a
//! panic; a config it accepts answers every question the planner asks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mhr_userspace::{config::Config, model::Family};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text, Path::new("fuzz.toml")) else { return };
    assert!(!config.routing.tables().is_empty());
    assert!(!config.routing.priorities().is_empty());
    for uplink in &config.uplinks {
        let _ = config.guard_mode(uplink);
        let _ = uplink.weight();
        for family in [Family::V4, Family::V6] {
            let _ = uplink.probes(family).count();
        }
    }
});
