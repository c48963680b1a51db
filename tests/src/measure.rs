//! Measuring in benchmarks.

use std::time::Duration;

use nix::libc;

/// CPU time (user + system) of the calling thread so far.
pub fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct; RUSAGE_THREAD is Linux's.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| {
        Duration::from_micros(
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0),
        )
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}
