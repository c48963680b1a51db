//! `mhr`: the command-line edge. Errors become one message and a non-zero exit.

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use mhr_userspace::cli::{self, Cli, LogFormat, Outcome};
use tracing_subscriber::EnvFilter;

/// What `mhr run` logs unless told otherwise: its own decisions, and
/// warnings from everything.
const DEFAULT_LOG_FILTER: &str = "warn,mhr_userspace::daemon=info";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.log_level {
        Some(level) => match EnvFilter::try_new(level) {
            Ok(filter) => filter,
            Err(err) => {
                eprintln!("mhr: --log-level {level}: {err}");
                return ExitCode::from(2);
            }
        },
        None => EnvFilter::try_from_env("MHR_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
    };
    // Colours only for a person at a terminal: never in files or journald.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let mut stdout = std::io::stdout();
    match cli::run(&cli, &mut stdout) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::ChecksFailed | Outcome::Incomplete) => ExitCode::from(1),
        Err(err) => {
            eprintln!("mhr: {err:#}");
            ExitCode::from(2)
        }
    }
}
