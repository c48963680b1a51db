//! Never a fight: when another writer (a network manager set to delete
//! foreign rules, a script) removes one of mhr's objects again and again,
//! mhr puts it back at a bounded rate instead of at once each time, says
//! once what keeps removing what, and counts it. A single removal (a
//! networkd restart) is put back at once, as any drift.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use tokio::time::Instant;

/// Corrections of one object within [`WINDOW`] before it counts as contested.
pub const THRESHOLD: usize = 3;
/// How far back corrections are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first wait between corrections of a contested object; it doubles
/// with every further correction within the window, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a correction may be made now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `newly_contested` is true on the correction that makes the
    /// object contested (the moment to say so, once).
    Correct { newly_contested: bool, recent: usize },
    /// Not before `until`.
    Defer { until: Instant },
}

#[derive(Debug, Default)]
struct History {
    corrections: VecDeque<Instant>,
    next_allowed: Option<Instant>,
    contested: bool,
}

#[derive(Debug, Default)]
pub struct Fights {
    objects: BTreeMap<String, History>,
}

impl Fights {
    /// Asks to correct `object` (a description of a route or rule) at `now`;
    /// a correction that may happen is recorded.
    pub fn ask(&mut self, object: &str, now: Instant) -> Decision {
        let history = self.objects.entry(object.to_owned()).or_default();
        while history.corrections.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            history.corrections.pop_front();
        }
        if let Some(until) = history.next_allowed.filter(|until| now < *until) {
            return Decision::Defer { until };
        }
        history.corrections.push_back(now);
        let recent = history.corrections.len();
        let newly_contested = recent >= THRESHOLD && !history.contested;
        history.contested = recent >= THRESHOLD;
        history.next_allowed = history.contested.then(|| {
            let doublings = u32::try_from(recent - THRESHOLD).unwrap_or(u32::MAX).min(16);
            now + FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
        });
        Decision::Correct { newly_contested, recent }
    }

    /// Forgets objects nobody removed within the window.
    pub fn forget_quiet(&mut self, now: Instant) {
        self.objects.retain(|_, history| {
            history.corrections.back().is_some_and(|t| now.duration_since(*t) <= WINDOW)
                || history.next_allowed.is_some_and(|until| now < until)
        });
    }

    /// Objects removed [`THRESHOLD`] times or more within the window.
    pub fn contested(&self) -> usize {
        self.objects.values().filter(|h| h.contested).count()
    }
}

/// The process behind a netlink port id, as `name (pid N)`, read from
/// `/proc/net/netlink` (the socket's inode) and the processes' descriptors;
/// `port N` when it cannot be found (the process is gone, another PID
/// namespace).
pub fn sender_name(port: u32) -> String {
    find_sender(port).unwrap_or_else(|| format!("netlink port {port}"))
}

fn find_sender(port: u32) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/netlink").ok()?;
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"0") && fields.get(2)?.parse::<u32>().ok()? == port)
            .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
            .flatten()
    })?;
    let socket = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else { continue };
        let owns = descriptors.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str())
        });
        if owns {
            let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            return Some(format!("{} (pid {pid})", name.trim()));
        }
    }
    // The sandboxed daemon (crate::sandbox) cannot read the descriptors of
    // processes holding capabilities it dropped (that needs
    // CAP_SYS_PTRACE). A socket bound without a port (iproute2, most tools)
    // gets its process id as port, so a live process of that id is most
    // likely the sender: named as such.
    let name = std::fs::read_to_string(format!("/proc/{port}/comm")).ok()?;
    Some(format!("{} (pid {port}, going by its netlink port)", name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_removal_is_put_back_at_once_and_repeated_ones_at_a_bounded_rate() {
        let mut fights = Fights::default();
        let start = Instant::now();
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        assert_eq!(fights.ask("rule", at(0.0)), Decision::Correct { newly_contested: false, recent: 1 });
        assert_eq!(fights.ask("rule", at(0.1)), Decision::Correct { newly_contested: false, recent: 2 });
        assert_eq!(fights.ask("rule", at(0.2)), Decision::Correct { newly_contested: true, recent: 3 });
        assert_eq!(fights.contested(), 1);
        assert_eq!(fights.ask("rule", at(0.5)), Decision::Defer { until: at(1.2) }, "1 s after the third");
        assert_eq!(fights.ask("rule", at(1.2)), Decision::Correct { newly_contested: false, recent: 4 });
        assert_eq!(fights.ask("rule", at(2.0)), Decision::Defer { until: at(3.2) }, "then 2 s");
        assert_eq!(fights.ask("other", at(2.0)), Decision::Correct { newly_contested: false, recent: 1 });
        // Corrections over a minute are bounded by the doubling wait.
        let mut corrections = 4;
        let mut now = 2.0;
        while now < 62.0 {
            if matches!(fights.ask("rule", at(now)), Decision::Correct { .. }) {
                corrections += 1;
            }
            now += 0.05;
        }
        assert!(corrections <= 9, "{corrections} corrections in a minute of constant removal");
        // Quiet for a window: forgotten, and the next removal is put back at once.
        fights.forget_quiet(at(200.0));
        assert_eq!(fights.contested(), 0);
        assert_eq!(fights.ask("rule", at(200.0)), Decision::Correct { newly_contested: false, recent: 1 });
    }

    #[test]
    fn a_port_nobody_holds_is_named_by_its_number() {
        assert_eq!(sender_name(u32::MAX - 7), format!("netlink port {}", u32::MAX - 7));
    }
}
