//! A guard that cannot load or attach does not stop routing: `mhr run`
//! goes on without it and tries again with backoff (1 s, doubling, at
//! most a minute), and says why: the reason's label for a metric, the
//! error for `status` and `/healthz`. Exiting instead would only make the
//! supervisor restart routing with the same cause in place.

use std::time::{Duration, Instant};

use super::GuardError;

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why the guard failed, as a metric label (a few fixed values).
pub const REASONS: [&str; 7] = ["bpffs", "stale_pin", "load", "map", "attach", "pin", "capacity"];

impl GuardError {
    /// This error's reason label, one of [`REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PinDir { .. } | Self::NotBpffs { .. } => "bpffs",
            Self::StalePin { .. } | Self::OtherVersion { .. } => "stale_pin",
            Self::Load { .. }
            | Self::Object(_)
            | Self::MissingProgram(_)
            | Self::Program { .. }
            | Self::Cpus(_) => "load",
            Self::MissingMap(_) | Self::Map { .. } | Self::OpenPin { .. } => "map",
            Self::Attach { .. } | Self::NoTracefs | Self::TraceFormat { .. } | Self::TraceField { .. } => {
                "attach"
            }
            Self::Repin { .. } | Self::RepinLink { .. } | Self::Remove { .. } => "pin",
            Self::TooManyUplinks | Self::TooManyAddresses { .. } => "capacity",
        }
    }
}

/// The guard's failures in a row and when to try again.
#[derive(Clone, Debug, Default)]
pub struct GuardRetry {
    failures: u32,
    next: Option<Instant>,
    reason: Option<&'static str>,
    error: Option<String>,
}

impl GuardRetry {
    /// Records a failure at `now`; returns the wait before the next try.
    pub fn failed(&mut self, now: Instant, error: &GuardError) -> Duration {
        let wait = FIRST_RETRY.saturating_mul(1 << self.failures.min(16)).min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.next = Some(now + wait);
        self.reason = Some(error.reason());
        self.error = Some(crate::error_chain(error));
        wait
    }

    /// The guard works (again): the next failure waits [`FIRST_RETRY`].
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Whether to try now: always while nothing failed.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last failure's reason label, while failing.
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// The last failure, in words, while failing.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach_error() -> GuardError {
        GuardError::Attach {
            interface: "ens3".into(),
            step: crate::guard::AttachStep::Tcx,
            source: Box::new(std::io::Error::from_raw_os_error(libc::EBUSY)),
        }
    }

    #[test]
    fn waits_double_from_a_second_up_to_a_minute_and_reset_on_success() {
        let mut retry = GuardRetry::default();
        let now = Instant::now();
        assert!(retry.due(now), "nothing failed yet");
        let waits: Vec<u64> = (0..9).map(|_| retry.failed(now, &attach_error()).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry.failures(), 9);
        assert!(!retry.due(now + Duration::from_secs(59)));
        assert!(retry.due(now + Duration::from_secs(60)));
        retry.succeeded();
        assert!(retry.due(now));
        assert_eq!((retry.failures(), retry.reason(), retry.error()), (0, None, None));
        assert_eq!(retry.failed(now, &attach_error()), FIRST_RETRY);
    }

    #[test]
    fn a_failure_keeps_its_reason_label_and_its_words() {
        let mut retry = GuardRetry::default();
        retry.failed(Instant::now(), &attach_error());
        assert_eq!(retry.reason(), Some("attach"));
        // The words and the kernel's answer behind them.
        let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
        let expected = format!("attaching the guard to `ens3` failed: TCX: {busy}");
        assert_eq!(retry.error(), Some(expected.as_str()));
        let bpffs = GuardError::NotBpffs { path: "/tmp/x".into(), found: "/tmp".into() };
        assert_eq!(bpffs.reason(), "bpffs");
        assert!(REASONS.contains(&bpffs.reason()) && REASONS.contains(&GuardError::TooManyUplinks.reason()));
    }

    #[test]
    fn a_failure_long_after_many_does_not_overflow() {
        let mut retry = GuardRetry::default();
        let now = Instant::now();
        for _ in 0..100 {
            retry.failed(now, &attach_error());
        }
        assert_eq!(retry.failed(now, &attach_error()), MAX_RETRY);
    }
}
