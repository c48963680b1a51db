//! `mhr`: the command-line edge. Errors become one message and a non-zero exit.

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use mhr_userspace::{
    cli::{self, Cli, LogFormat, Outcome},
    logging,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let environment = std::env::var("MHR_LOG").ok();
    let filter = match logging::filter(cli.log_level.as_deref(), environment.as_deref()) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("mhr: {err}");
            return ExitCode::from(2);
        }
    };
    // Colours only for a person at a terminal: never in files or journald.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    // journald sets JOURNAL_STREAM for a unit's stderr: it stamps the time
    // itself and reads the priority from a `<N>` prefix.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match (cli.log_format, journald) {
        (LogFormat::Json, _) => logs.json().init(),
        (LogFormat::Text, true) => logs.with_ansi(false).event_format(logging::Journald).init(),
        (LogFormat::Text, false) => logs.init(),
    }
    let mut stdout = std::io::stdout();
    match cli::run(&cli, &mut stdout) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::ChecksFailed | Outcome::Incomplete) => ExitCode::from(1),
        Err(err) => {
            match cli.log_format {
                // One JSON line like every other, for whoever parses them.
                LogFormat::Json => tracing::error!(error = %format!("{err:#}"), "mhr failed"),
                LogFormat::Text => eprintln!("mhr: {err:#}"),
            }
            ExitCode::from(2)
        }
    }
}
