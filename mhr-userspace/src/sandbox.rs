//! Least privilege for `mhr run`, entered once start-up is done (the guard
//! loaded, netlink sockets open, the metrics listener bound):
//!
//! - capabilities: every set (effective, permitted, inheritable, ambient,
//!   and the bounding set where CAP_SETPCAP allows) is cut to [`KEPT`]:
//!   CAP_NET_ADMIN (routes, rules, tc/TCX attach), CAP_BPF (every bpf(2)
//!   call: map updates, pins, links; Debian's `unprivileged_bpf_disabled`
//!   refuses even map lookups without it) and CAP_NET_RAW (raw ICMP
//!   probes where `ping_group_range` does not allow unprivileged ones).
//!   CAP_PERFMON and CAP_SYS_ADMIN are only needed to load the guard
//!   program, which start-up does; attaching the loaded program to a new
//!   or re-created uplink needs neither (tests/tests/sandbox.rs shows it).
//!   The state and pin files the daemon writes are its own (uid 0 in
//!   root-owned directories), so CAP_DAC_OVERRIDE is not needed either.
//! - `PR_SET_NO_NEW_PRIVS`, so nothing the process runs can regain any.
//! - a seccomp filter of the syscalls the daemon makes (tokio, netlink,
//!   bpf, TLS, state files), on every thread (TSYNC). An unlisted syscall
//!   fails with EPERM instead of killing the daemon: the list is measured,
//!   not proved complete, and a routing daemon killed by an unforeseen
//!   syscall in a rare error path would leave the host unguarded, while
//!   EPERM surfaces as that operation's error in the log. `--sandbox-audit`
//!   lets unlisted syscalls through and has the kernel log each one
//!   (SECCOMP_RET_LOG, see `dmesg` or the audit log) to find what is missing.

use std::collections::BTreeMap;

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The capabilities `mhr run` keeps after start-up.
pub const KEPT: [Capability; 3] = [Capability::CAP_NET_ADMIN, Capability::CAP_BPF, Capability::CAP_NET_RAW];

/// What happens to a syscall that is not on the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlisted {
    /// Fails with EPERM (the default).
    Deny,
    /// Runs, and the kernel logs it (for finding what the list misses).
    Log,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("reading the {set:?} capability set")]
    Read { set: CapSet, source: caps::errors::CapsError },
    #[error("dropping {cap} from the capability bounding set")]
    Bounding { cap: Capability, source: caps::errors::CapsError },
    #[error("setting the {set:?} capability set to [{kept}]")]
    Set { set: CapSet, kept: String, source: caps::errors::CapsError },
    #[error("thread {tid} still holds [{extra}] after the capability drop")]
    ThreadKeeps { tid: i32, extra: String },
    #[error("listing the daemon's threads in /proc/self/task")]
    Threads(#[source] std::io::Error),
    #[error("seccomp does not support this architecture ({arch})")]
    Arch { arch: &'static str, source: seccompiler::BackendError },
    #[error("building the seccomp filter")]
    Filter(#[source] seccompiler::BackendError),
    #[error("installing the seccomp filter on every thread")]
    Install(#[source] seccompiler::Error),
}

/// What [`enter`] left the process with.
#[derive(Debug)]
pub struct Sandboxed {
    pub capabilities: CapsHashSet,
    /// Whether the bounding set could be cut (needs CAP_SETPCAP).
    pub bounding_cut: bool,
    pub syscalls: usize,
}

/// Drops every capability but [`KEPT`], sets no-new-privs and installs the
/// seccomp filter on every thread of the process. Irreversible.
pub fn enter(unlisted: Unlisted) -> Result<Sandboxed, SandboxError> {
    let capabilities = drop_capabilities()?;
    let bounding_cut = !caps::read(None, CapSet::Bounding)
        .map_err(|source| SandboxError::Read { set: CapSet::Bounding, source })?
        .iter()
        .any(|cap| !KEPT.contains(cap));
    let program = filter(unlisted)?;
    // Sets PR_SET_NO_NEW_PRIVS first, then SECCOMP_FILTER_FLAG_TSYNC.
    seccompiler::apply_filter_all_threads(&program).map_err(SandboxError::Install)?;
    Ok(Sandboxed { capabilities, bounding_cut, syscalls: allowed_syscalls().len() })
}

/// [`enter`], logging what it kept.
pub fn enter_logged(unlisted: Unlisted) -> Result<(), SandboxError> {
    let sandboxed = enter(unlisted)?;
    // Logged with the daemon's lines (shown by the default log filter).
    tracing::info!(
        target: "mhr_userspace::daemon",
        capabilities = %names(&sandboxed.capabilities),
        bounding_set_cut = sandboxed.bounding_cut,
        syscalls = sandboxed.syscalls,
        unlisted_syscalls = match unlisted {
            Unlisted::Deny => "fail with EPERM",
            Unlisted::Log => "run and are logged by the kernel",
        },
        "privileges dropped: kept capabilities, no new privileges, seccomp filter"
    );
    if !sandboxed.bounding_cut {
        // With no-new-privs set, nothing regains a capability from the
        // bounding set; it is cut where it can be for a clean record.
        tracing::info!(
            target: "mhr_userspace::daemon",
            "the capability bounding set stays as given (no CAP_SETPCAP to cut it, as under systemd or in a container)"
        );
    }
    Ok(())
}

fn names(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(ToString::to_string).collect();
    names.sort();
    names.join(", ")
}

/// Cuts the calling thread's capability sets to [`KEPT`] (those of them it
/// has), then checks that no other thread of the process holds more:
/// capabilities are per thread, and `mhr run` drops them while it is the
/// only one.
fn drop_capabilities() -> Result<CapsHashSet, SandboxError> {
    let read = |set| caps::read(None, set).map_err(|source| SandboxError::Read { set, source });
    let permitted = read(CapSet::Permitted)?;
    let kept: CapsHashSet = KEPT.iter().copied().filter(|cap| permitted.contains(cap)).collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the rest. Without it (a container that did not grant it)
    // the bounding set stays as the container runtime left it.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in read(CapSet::Bounding)?.into_iter().filter(|cap| !KEPT.contains(cap)) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|source| SandboxError::Bounding { cap, source })?;
        }
    }
    let set = |set, value: &CapsHashSet| {
        caps::set(None, set, value).map_err(|source| SandboxError::Set { set, kept: names(value), source })
    };
    set(CapSet::Ambient, &CapsHashSet::new())?;
    set(CapSet::Inheritable, &CapsHashSet::new())?;
    set(CapSet::Effective, &kept)?;
    set(CapSet::Permitted, &kept)?;
    for entry in std::fs::read_dir("/proc/self/task").map_err(SandboxError::Threads)? {
        let entry = entry.map_err(SandboxError::Threads)?;
        let Some(tid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let permitted = caps::read(Some(tid), CapSet::Permitted)
            .map_err(|source| SandboxError::Read { set: CapSet::Permitted, source })?;
        let extra: CapsHashSet = permitted.difference(&kept).copied().collect();
        if !extra.is_empty() {
            return Err(SandboxError::ThreadKeeps { tid, extra: names(&extra) });
        }
    }
    Ok(kept)
}

/// The seccomp filter for this architecture: the listed syscalls run,
/// others fail with EPERM (or are logged).
pub fn filter(unlisted: Unlisted) -> Result<BpfProgram, SandboxError> {
    let arch = std::env::consts::ARCH;
    let target: TargetArch = arch.try_into().map_err(|source| SandboxError::Arch { arch, source })?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowed_syscalls().into_iter().map(|number| (number, Vec::new())).collect();
    let mismatch = match unlisted {
        Unlisted::Deny => SeccompAction::Errno(libc::EPERM as u32),
        Unlisted::Log => SeccompAction::Log,
    };
    let filter =
        SeccompFilter::new(rules, mismatch, SeccompAction::Allow, target).map_err(SandboxError::Filter)?;
    filter.try_into().map_err(SandboxError::Filter)
}

/// The syscalls of the running daemon: the runtime (tokio, epoll, timers,
/// futexes, threads for blocking work), sockets (netlink, TCP, ICMP),
/// bpf(2), files under the state and pin directories, and what the Rust
/// standard library and glibc call on the way (signals, memory, time,
/// randomness for TLS).
pub fn allowed_syscalls() -> Vec<i64> {
    let mut list = vec![
        // Memory and process.
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_membarrier,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_getresuid,
        libc::SYS_getresgid,
        libc::SYS_capget,
        libc::SYS_prctl,
        libc::SYS_prlimit64,
        libc::SYS_uname,
        libc::SYS_sysinfo,
        libc::SYS_getrandom,
        libc::SYS_restart_syscall,
        // Threads (tokio's blocking pool) and their synchronisation.
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_tgkill,
        // Signals (SIGTERM, SIGINT, SIGHUP through tokio's self-pipe).
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        // Time.
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        // Event loop.
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_eventfd2,
        libc::SYS_ppoll,
        libc::SYS_pipe2,
        // Descriptors and files (state, pins, /proc, /sys).
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_openat,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_statfs,
        libc::SYS_fstatfs,
        libc::SYS_lseek,
        libc::SYS_ioctl,
        libc::SYS_fcntl,
        libc::SYS_flock,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_ftruncate,
        libc::SYS_getdents64,
        libc::SYS_readlinkat,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_mkdirat,
        libc::SYS_unlinkat,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_linkat,
        libc::SYS_copy_file_range,
        libc::SYS_sendfile,
        libc::SYS_fadvise64,
        libc::SYS_fallocate,
        libc::SYS_utimensat,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_umask,
        libc::SYS_getcwd,
        // Sockets: netlink, the metrics listener, ICMP probes.
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_shutdown,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmmsg,
        // The guard: maps, pins, links, queries.
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        // [[hook]] programs: starting one (in a process group of its own),
        // waiting for it, killing it at its timeout. The filter is inherited
        // across execve, so these are also what a hook's shell needs to run
        // commands of its own (see docs/configuration.md#hooks).
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_kill,
        libc::SYS_setpgid,
        libc::SYS_getpgid,
        libc::SYS_getppid,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_chdir,
        libc::SYS_fchdir,
        // A hook's shell waits for its jobs here (dash spins on EPERM).
        libc::SYS_rt_sigsuspend,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_arch_prctl,
        libc::SYS_set_tid_address,
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_readlink,
        libc::SYS_mkdir,
        libc::SYS_rmdir,
        libc::SYS_unlink,
        libc::SYS_rename,
        libc::SYS_chmod,
        libc::SYS_dup2,
        libc::SYS_pipe,
        libc::SYS_poll,
        libc::SYS_epoll_wait,
        libc::SYS_getdents,
        // A hook's shell.
        libc::SYS_vfork,
        libc::SYS_fork,
        libc::SYS_getpgrp,
        libc::SYS_alarm,
    ]);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_for_this_architecture_with_every_listed_syscall_once() {
        let list = allowed_syscalls();
        let unique: std::collections::BTreeSet<_> = list.iter().collect();
        assert_eq!(unique.len(), list.len(), "a syscall is listed twice");
        let program = filter(Unlisted::Deny).unwrap();
        assert!(program.len() > list.len(), "one jump per listed syscall at least");
    }

    /// On a thread of its own (seccomp filters are per thread without
    /// TSYNC): a listed syscall works, an unlisted one fails with EPERM and
    /// the thread lives on.
    #[test]
    fn an_unlisted_syscall_fails_with_eperm_instead_of_killing() {
        let outcome = std::thread::spawn(|| {
            seccompiler::apply_filter(&filter(Unlisted::Deny).unwrap()).unwrap();
            // personality(0xffffffff) only reads the persona.
            // SAFETY: a raw syscall with a query argument; no memory is passed.
            let unlisted = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            // SAFETY: getpid has no preconditions.
            let listed = unsafe { libc::syscall(libc::SYS_getpid) };
            (unlisted, errno, listed)
        })
        .join()
        .expect("the filtered thread survives");
        assert_eq!((outcome.0, outcome.1), (-1, Some(libc::EPERM)));
        assert_eq!(outcome.2, i64::from(std::process::id() as i32));
    }

    #[test]
    fn audit_mode_lets_unlisted_syscalls_run() {
        let unlisted = std::thread::spawn(|| {
            seccompiler::apply_filter(&filter(Unlisted::Log).unwrap()).unwrap();
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) }
        })
        .join()
        .unwrap();
        assert_ne!(unlisted, -1);
    }
}

#[cfg(test)]
#[path = "sandbox_hook_tests.rs"]
mod hook_tests;
