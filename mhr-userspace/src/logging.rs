//! Log setup for the `mhr` binary: a checked level, text or JSON on
//! stderr, and under journald (`JOURNAL_STREAM`) lines without a
//! timestamp of their own but with the syslog priority journald reads
//! (`<3>` … `<7>`), so `journalctl -p warning` filters.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// What `mhr run` logs unless told otherwise: its own decisions, and
/// warnings from everything.
pub const DEFAULT_FILTER: &str = "warn,mhr_userspace::daemon=info";

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The filter for `--log-level` (or `MHR_LOG`, or the default). A word
/// that is neither a level nor a filter with a target is refused, with
/// the nearest level: `inof` would otherwise be a target that matches
/// nothing and turn logging off.
pub fn filter(level: Option<&str>, environment: Option<&str>) -> Result<EnvFilter, FilterError> {
    let (given, option) = match (level, environment) {
        (Some(level), _) => (level, "--log-level"),
        (None, Some(environment)) => (environment, "MHR_LOG"),
        (None, None) => return Ok(EnvFilter::new(DEFAULT_FILTER)),
    };
    for directive in given.split(',').map(str::trim) {
        let bare = !directive.contains('=') && !directive.contains("::") && !directive.contains('[');
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            let nearest =
                LEVELS.iter().min_by_key(|l| strsim::levenshtein(l, directive)).copied().unwrap_or("info");
            let (given, directive) = (given.to_owned(), directive.to_owned());
            return Err(FilterError::NotALevel { option, given, directive, nearest });
        }
    }
    EnvFilter::try_new(given).map_err(|error| FilterError::Invalid { option, given: given.to_owned(), error })
}

/// A log filter that cannot be used, naming where it came from
/// (`--log-level` or `MHR_LOG`).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(
        "{option} {given}: `{directive}` is not a level (off, error, warn, info, debug, trace) nor a filter such as `warn,mhr_userspace::daemon=debug`; did you mean `{nearest}`?"
    )]
    NotALevel { option: &'static str, given: String, directive: String, nearest: &'static str },
    #[error("{option} {given}: {error}")]
    Invalid { option: &'static str, given: String, error: tracing_subscriber::filter::ParseError },
}

/// Text lines for journald: `<priority>LEVEL target: message fields`.
pub struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        write!(writer, "<{}>{} {}: ", priority(*metadata.level()), metadata.level(), metadata.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The syslog priority of a level (sd-daemon(3)).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_level_is_refused_with_the_nearest_one_and_filters_pass() {
        let err = filter(Some("inof"), None).unwrap_err().to_string();
        assert!(err.contains("`inof` is not a level") && err.ends_with("did you mean `info`?"), "{err}");
        let err = filter(None, Some("warn,degub")).unwrap_err().to_string();
        assert!(err.starts_with("MHR_LOG warn,degub:") && err.ends_with("`debug`?"), "{err}");
        for good in ["info", "WARN", "off", "warn,mhr_userspace::daemon=debug", "mhr_userspace=trace"] {
            assert!(filter(Some(good), None).is_ok(), "{good}");
        }
        assert_eq!(
            filter(None, None).map(|f| f.to_string()).ok(),
            Some("mhr_userspace::daemon=info,warn".to_owned())
        );
    }

    #[test]
    fn levels_map_to_the_priorities_journald_reads() {
        assert_eq!([Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].map(priority), [3, 4, 6, 7]);
    }
}
