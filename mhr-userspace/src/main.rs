//! `mhr`: the command-line edge. Errors become one message and a non-zero exit.

use std::process::ExitCode;

use clap::Parser as _;
use mhr_userspace::cli::{self, Cli, Outcome};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("MHR_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match cli::run(&cli, &mut stdout) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::ChecksFailed) => ExitCode::from(1),
        Err(err) => {
            eprintln!("mhr: {err:#}");
            ExitCode::from(2)
        }
    }
}
