//! `mhr`: the command-line edge. Errors become one message and a non-zero exit.

mod monitor;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Policy routing enforcer for multihomed Linux hosts.
#[derive(Debug, Parser)]
#[command(name = "mhr", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach the egress classifier to interfaces and print their packet and
    /// byte counters until interrupted (Ctrl-C / SIGTERM) or --duration ends.
    /// Detaches on exit.
    Monitor(monitor::MonitorArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MHR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Monitor(args) => monitor::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mhr: {err:#}");
            ExitCode::FAILURE
        }
    }
}
