//! Shared by the routing tests: run mhr's real CLI inside a namespace and
//! snapshot the kernel's rules and routes.
#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod bpf;
pub mod daemon;
pub mod frames;
pub mod guard;
pub mod managed;
pub mod pins;

use std::path::{Path, PathBuf};

use clap::Parser as _;
use mhr_tests::{Netns, TempDir};
use mhr_userspace::cli::{self, Cli, Outcome};

/// What one `mhr …` invocation printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub output: String,
    pub result: Result<Outcome, String>,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        matches!(self.result, Ok(Outcome::Success))
    }

    pub fn error(&self) -> String {
        self.result.clone().err().unwrap_or_default()
    }
}

/// `mhr --config CONFIG ARGS…` in-process, on a thread inside `netns`.
pub fn mhr(netns: &Netns, config: &Path, args: &[&str]) -> Run {
    let argv: Vec<String> = ["mhr", "--config", &config.display().to_string()]
        .into_iter()
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    netns
        .run(move || {
            let cli = Cli::try_parse_from(&argv).expect("valid command line");
            let mut output = Vec::new();
            let result = cli::run(&cli, &mut output).map_err(|err| format!("{err:#}"));
            Run { output: String::from_utf8_lossy(&output).into_owned(), result }
        })
        .expect("entering the namespace")
}

/// Every rule and route of both families, as `ip` prints them.
pub fn snapshot(netns: &Netns) -> String {
    let mut dump = String::new();
    for family in ["-4", "-6"] {
        dump += &netns.ip([family, "-d", "rule", "show"]).expect("ip rule");
        dump += &netns.ip([family, "-d", "route", "show", "table", "all"]).expect("ip route");
    }
    dump
}

pub fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("mhr.toml");
    std::fs::write(&path, text).expect("config written");
    path
}
