//! How `mhr run` behaves: timing, the guard, exit policy, privileges.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Quiet time after a notification before reconciling.
    pub debounce: Duration,
    /// Reconcile at the latest this long after the first pending notification.
    pub max_delay: Duration,
    /// Periodic full resync: the safety net for anything missed.
    pub resync: Duration,
    /// Remove routing and guard on SIGTERM/SIGINT (default: leave them, so
    /// protection continues while the daemon restarts).
    pub cleanup_on_exit: bool,
    /// Attach and keep the source guard.
    pub guard: bool,
    /// Kernel receive buffer for notifications (bytes).
    pub netlink_buffer: usize,
    /// How often the guard's pins and links are checked against the kernel.
    pub guard_check: Duration,
    /// With `exit_when_guard_lost`: exit with an error when the guard
    /// could not be repaired for this long, so that the supervisor
    /// restarts mhr.
    pub guard_repair_deadline: Duration,
    /// Exit when the guard is lost (see `guard_repair_deadline`). Off by
    /// default: a restart meets the same cause, and routing must go on;
    /// the guard is retried with backoff instead (guard::retry).
    pub exit_when_guard_lost: bool,
    /// Flag lines a second that reach the log, in all (the rest are counted).
    pub flag_log_per_second: u32,
    /// At most one summary line per offender per interval.
    pub flag_summary_interval: Duration,
    /// Drop privileges once start-up is done (`crate::sandbox`); `mhr run`
    /// sets it unless `--no-sandbox`, the library default is off.
    pub sandbox: Option<crate::sandbox::Unlisted>,
    /// Receives every hook event the daemon fires (tests of its wiring);
    /// the hooks run as well.
    pub hook_events: Option<tokio::sync::mpsc::UnboundedSender<super::hooks::HookRun>>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            resync: Duration::from_secs(60),
            cleanup_on_exit: false,
            guard: true,
            netlink_buffer: 4 << 20,
            guard_check: Duration::from_secs(1),
            guard_repair_deadline: Duration::from_secs(30),
            exit_when_guard_lost: false,
            flag_log_per_second: 50,
            flag_summary_interval: Duration::from_secs(10),
            sandbox: None,
            hook_events: None,
        }
    }
}
