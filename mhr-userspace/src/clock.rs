//! Wall-clock time as mhr records it: unix seconds (health, records),
//! milliseconds (confirmation deadlines), and RFC 3339 for people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds with a fraction (Prometheus timestamps).
pub fn unix_seconds_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

pub fn system_time(unix_seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339: u64 = 253_402_300_799;

/// `2026-12-02T16:41:48Z`; past the year 9999 (a hand-edited record), the
/// unix seconds as `@N` rather than a panic.
pub fn rfc3339(unix_seconds: u64) -> String {
    if unix_seconds > LAST_RFC3339 {
        return format!("@{unix_seconds}");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_seconds)).to_string()
}
