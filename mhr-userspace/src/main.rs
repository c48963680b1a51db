//! `mhr`: the command-line edge. Errors become one message and a non-zero exit.

use std::process::ExitCode;

use clap::Parser as _;
use mhr_userspace::cli::{self, Cli, LogFormat, Outcome};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("MHR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,mhr_userspace::daemon=info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
