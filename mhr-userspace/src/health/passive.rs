//! Passive health (`[health] passive`): an uplink that keeps sending and
//! receives nothing for `rx_silence` has a silent upstream, and one whose
//! TCP connections retransmit more than `retransmit_percent` of what they
//! send over `retransmit_window` has a lossy one, whatever the probe
//! rounds have said so far. Fed the interfaces' packet counters (the
//! kernel counts every packet already) and the guard's TCP counters.
//! Pure: the daemon samples and feeds it.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use tokio::time::Instant;

use super::Fault;

/// Samples of received packets kept per uplink (`probe_when_idle` looks
/// back over at most three).
const HISTORY_SAMPLES: usize = 4;

/// Fewer TCP segments than this in a window judge nothing (a handful of
/// retransmissions on an idle connection is no ratio).
pub const MIN_RETRANSMIT_SEGMENTS: u64 = 100;

/// Packets an interface sent and received (unicast: multicast and
/// broadcast that reach every host on a segment prove nothing upstream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub tx_packets: u64,
    pub rx_packets: u64,
}

/// One interface's traffic since it last received anything.
#[derive(Clone, Debug)]
struct RxWatch {
    last: LinkCounters,
    last_rx_at: Instant,
    /// It sent something since it last received anything.
    sending: bool,
    /// Failed for silence: it stays silent until it receives something
    /// (nothing else shows the upstream is back once traffic has moved
    /// away from it).
    awaiting_rx: bool,
    /// The last few samples' received counts, oldest first.
    history: VecDeque<u64>,
}

impl RxWatch {
    fn new(counters: LinkCounters, now: Instant) -> Self {
        let history = VecDeque::from([counters.rx_packets]);
        Self { last: counters, last_rx_at: now, sending: false, awaiting_rx: false, history }
    }

    fn observe(&mut self, counters: LinkCounters, now: Instant) {
        // Counters that went back (a re-created interface) start afresh.
        let reset = counters.rx_packets < self.last.rx_packets || counters.tx_packets < self.last.tx_packets;
        if reset || counters.rx_packets != self.last.rx_packets {
            self.last_rx_at = now;
            self.sending = false;
            self.awaiting_rx = false;
        } else if counters.tx_packets != self.last.tx_packets {
            self.sending = true;
        }
        if reset {
            self.history.clear();
        }
        if self.history.len() == HISTORY_SAMPLES {
            self.history.pop_front();
        }
        self.history.push_back(counters.rx_packets);
        self.last = counters;
    }

    /// Packets received over the last `samples` samples (fewer when fewer
    /// were taken).
    fn received_over(&self, samples: usize) -> u64 {
        let since = self.history.len().saturating_sub(1 + samples);
        self.history.get(since).map_or(0, |rx| self.last.rx_packets.saturating_sub(*rx))
    }

    /// How long it has been sending with nothing received; zero while it
    /// sends nothing or receives.
    fn silence(&self, now: Instant) -> Duration {
        if self.sending { now.saturating_duration_since(self.last_rx_at) } else { Duration::ZERO }
    }
}

/// Running totals of an uplink's TCP segments (the guard's counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTotals {
    pub sent: u64,
    pub retransmits: u64,
}

/// When retransmissions fail an uplink: over `ratio` of the segments
/// sent in a window of `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetransmitRule {
    pub ratio: f64,
    pub window: Duration,
}

/// One uplink's TCP segments since its window started.
#[derive(Clone, Debug)]
struct RetransmitWatch {
    start: TcpTotals,
    started_at: Instant,
    /// The ratio of the last window with enough segments to judge.
    ratio: Option<f64>,
    /// That ratio was over the rule's: it stays failed until a window
    /// judges otherwise, or carries too little TCP to judge.
    over: bool,
}

impl RetransmitWatch {
    fn new(totals: TcpTotals, now: Instant) -> Self {
        Self { start: totals, started_at: now, ratio: None, over: false }
    }

    /// True when this sample closes a window that turns it over.
    fn observe(&mut self, totals: TcpTotals, now: Instant, rule: RetransmitRule) -> bool {
        if totals.sent < self.start.sent || totals.retransmits < self.start.retransmits {
            // A slot cleared or re-used: start afresh.
            *self = Self::new(totals, now);
            return false;
        }
        if now.saturating_duration_since(self.started_at) < rule.window {
            return false;
        }
        let sent = totals.sent - self.start.sent;
        let retransmits = totals.retransmits - self.start.retransmits;
        let was_over = self.over;
        // Retransmissions leave through the guard too, so they are in
        // `sent`; a retransmission counted before its window's segments
        // still cannot take the ratio past 1.
        self.ratio = (sent >= MIN_RETRANSMIT_SEGMENTS).then(|| (retransmits as f64 / sent as f64).min(1.0));
        self.over = self.ratio.is_some_and(|ratio| ratio > rule.ratio);
        self.start = totals;
        self.started_at = now;
        self.over && !was_over
    }
}

/// Every uplink's receive silence and TCP retransmissions.
#[derive(Clone, Debug)]
pub struct PassiveWatch {
    rx_silence: Duration,
    watches: BTreeMap<String, RxWatch>,
    /// `None`: retransmissions judge nothing.
    retransmit: Option<RetransmitRule>,
    retransmit_watches: BTreeMap<String, RetransmitWatch>,
}

impl PassiveWatch {
    pub fn new(rx_silence: Duration, retransmit: Option<RetransmitRule>) -> Self {
        Self { rx_silence, watches: BTreeMap::new(), retransmit, retransmit_watches: BTreeMap::new() }
    }

    /// Takes one sample of every uplink's TCP totals (by interface name);
    /// uplinks missing from it are forgotten. Returns those that turned
    /// over the retransmission ratio with this sample.
    pub fn observe_tcp(&mut self, totals: &BTreeMap<String, TcpTotals>, now: Instant) -> Vec<String> {
        self.retransmit_watches.retain(|name, _| totals.contains_key(name));
        let Some(rule) = self.retransmit else { return Vec::new() };
        let mut over = Vec::new();
        for (name, totals) in totals {
            let Some(watch) = self.retransmit_watches.get_mut(name) else {
                self.retransmit_watches.insert(name.clone(), RetransmitWatch::new(*totals, now));
                continue;
            };
            if watch.observe(*totals, now, rule) {
                over.push(name.clone());
            }
        }
        over
    }

    /// The retransmission ratio of `interface`'s last judged window.
    pub fn retransmit_ratio(&self, interface: &str) -> Option<f64> {
        self.retransmit_watches.get(interface).and_then(|watch| watch.ratio)
    }

    /// What passive health holds against `interface` now: silence first
    /// (it explains the retransmissions too).
    pub fn fault(&self, interface: &str) -> Option<Fault> {
        if self.silent(interface) {
            Some(Fault::RxSilent)
        } else if self.retransmit_watches.get(interface).is_some_and(|watch| watch.over) {
            Some(Fault::Retransmitting)
        } else {
            None
        }
    }

    /// Whether `interface` carries traffic that vouches for it
    /// (`probe_when_idle`): it received at least `packets` over the last
    /// `samples` samples, and is not silent.
    pub fn busy(&self, interface: &str, samples: usize, packets: u64) -> bool {
        self.watches
            .get(interface)
            .is_some_and(|watch| !watch.awaiting_rx && watch.received_over(samples) >= packets)
    }

    /// Takes one sample of every uplink's counters (by interface name);
    /// uplinks missing from it are forgotten. Returns those that turned
    /// silent with this sample.
    pub fn observe(&mut self, counters: &BTreeMap<String, LinkCounters>, now: Instant) -> Vec<String> {
        self.watches.retain(|name, _| counters.contains_key(name));
        let mut silenced = Vec::new();
        for (name, counters) in counters {
            let Some(watch) = self.watches.get_mut(name) else {
                self.watches.insert(name.clone(), RxWatch::new(*counters, now));
                continue;
            };
            watch.observe(*counters, now);
            if !watch.awaiting_rx && watch.silence(now) >= self.rx_silence {
                watch.awaiting_rx = true;
                silenced.push(name.clone());
            }
        }
        silenced
    }

    /// Whether `interface` is silent: sending into nothing for
    /// `rx_silence`, or failed for it and nothing received since.
    pub fn silent(&self, interface: &str) -> bool {
        self.watches.get(interface).is_some_and(|watch| watch.awaiting_rx)
    }

    /// Seconds `interface` has been sending with nothing received.
    pub fn silence_seconds(&self, interface: &str, now: Instant) -> f64 {
        self.watches.get(interface).map_or(0.0, |watch| watch.silence(now).as_secs_f64())
    }

    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.watches.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tx: u64, rx: u64) -> BTreeMap<String, LinkCounters> {
        BTreeMap::from([("ens3".to_owned(), LinkCounters { tx_packets: tx, rx_packets: rx })])
    }

    #[test]
    fn sending_into_silence_for_rx_silence_is_reported_once_and_lasts_until_something_arrives() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut watch = PassiveWatch::new(Duration::from_millis(500), None);
        assert!(watch.observe(&sample(10, 10), at(0)).is_empty(), "the first sample only starts the watch");
        assert!(watch.observe(&sample(20, 20), at(100)).is_empty());
        // Sending on, nothing back.
        assert!(watch.observe(&sample(30, 20), at(200)).is_empty());
        assert!(watch.observe(&sample(40, 20), at(500)).is_empty(), "400 ms of silence");
        assert!((watch.silence_seconds("ens3", at(500)) - 0.4).abs() < 1e-9);
        assert_eq!(watch.observe(&sample(50, 20), at(600)), ["ens3"], "500 ms: silent");
        assert!(watch.silent("ens3"));
        assert!(watch.observe(&sample(60, 20), at(900)).is_empty(), "reported once");
        // Traffic moved away: nothing sent, nothing received; still silent.
        assert!(watch.observe(&sample(60, 20), at(5000)).is_empty());
        assert!(watch.silent("ens3"), "no evidence the upstream is back");
        assert!((watch.silence_seconds("ens3", at(5000)) - 4.9).abs() < 1e-9);
        // A reply arrives.
        watch.observe(&sample(61, 21), at(5100));
        assert!(!watch.silent("ens3"));
        assert_eq!(watch.silence_seconds("ens3", at(5100)), 0.0);
    }

    #[test]
    fn an_idle_or_receiving_uplink_is_never_silent() {
        let start = Instant::now();
        let mut watch = PassiveWatch::new(Duration::from_millis(500), None);
        watch.observe(&sample(10, 10), start);
        for step in 1..20u64 {
            let now = start + Duration::from_millis(step * 200);
            // Idle: no counter moves.
            assert!(watch.observe(&sample(10, 10), now).is_empty());
        }
        for step in 20..40u64 {
            let now = start + Duration::from_millis(step * 200);
            // Receiving only (a download whose ACKs go elsewhere does not count as sending).
            assert!(watch.observe(&sample(10, 10 + step), now).is_empty());
        }
        assert!(!watch.silent("ens3"));
    }

    #[test]
    fn counters_that_go_back_start_afresh_and_missing_uplinks_are_forgotten() {
        let start = Instant::now();
        let mut watch = PassiveWatch::new(Duration::from_millis(500), None);
        watch.observe(&sample(100, 100), start);
        watch.observe(&sample(150, 100), start + Duration::from_millis(400));
        // Re-created: counters from zero.
        assert!(watch.observe(&sample(5, 0), start + Duration::from_millis(600)).is_empty());
        assert_eq!(watch.silence_seconds("ens3", start + Duration::from_millis(600)), 0.0);
        watch.observe(&BTreeMap::new(), start + Duration::from_millis(700));
        assert_eq!(watch.interfaces().count(), 0);
    }

    fn tcp(sent: u64, retransmits: u64) -> BTreeMap<String, TcpTotals> {
        BTreeMap::from([("ens3".to_owned(), TcpTotals { sent, retransmits })])
    }

    fn retransmit_watch() -> PassiveWatch {
        let rule = RetransmitRule { ratio: 0.1, window: Duration::from_secs(2) };
        PassiveWatch::new(Duration::from_millis(500), Some(rule))
    }

    #[test]
    fn a_window_over_the_ratio_fails_once_and_lasts_until_a_window_judges_otherwise() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut watch = retransmit_watch();
        assert!(watch.observe_tcp(&tcp(1000, 0), at(0)).is_empty(), "the first sample starts the window");
        // 20 % within the window: judged only when it closes.
        assert!(watch.observe_tcp(&tcp(1500, 100), at(1999)).is_empty());
        assert_eq!(watch.fault("ens3"), None);
        assert_eq!(watch.observe_tcp(&tcp(2000, 200), at(2000)), ["ens3"], "200 of 1000: over 10 %");
        assert_eq!(watch.retransmit_ratio("ens3"), Some(0.2));
        assert_eq!(watch.fault("ens3"), Some(Fault::Retransmitting));
        assert!(watch.observe_tcp(&tcp(3000, 400), at(4000)).is_empty(), "still over: reported once");
        assert_eq!(watch.fault("ens3"), Some(Fault::Retransmitting));
        // Exactly the ratio is not over it.
        assert!(watch.observe_tcp(&tcp(4000, 500), at(6000)).is_empty());
        assert_eq!(watch.retransmit_ratio("ens3"), Some(0.1));
        assert_eq!(watch.fault("ens3"), None);
    }

    #[test]
    fn too_few_segments_judge_nothing_and_counters_that_go_back_start_afresh() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut watch = retransmit_watch();
        watch.observe_tcp(&tcp(0, 0), at(0));
        // 99 segments, all retransmitted: an idle connection's backoff, no ratio.
        assert!(watch.observe_tcp(&tcp(MIN_RETRANSMIT_SEGMENTS - 1, 99), at(2000)).is_empty());
        assert_eq!((watch.retransmit_ratio("ens3"), watch.fault("ens3")), (None, None));
        assert_eq!(watch.observe_tcp(&tcp(199, 199), at(4000)), ["ens3"], "100 segments: judged");
        // Over, then a window without TCP: nothing holds it failed any more.
        assert!(watch.observe_tcp(&tcp(199, 199), at(6000)).is_empty());
        assert_eq!(watch.fault("ens3"), None);
        // A cleared slot: counters from zero start a new window.
        assert!(watch.observe_tcp(&tcp(10, 10), at(6500)).is_empty());
        assert!(watch.observe_tcp(&tcp(500, 10), at(8000)).is_empty(), "the new window is not closed yet");
        assert!(watch.observe_tcp(&tcp(600, 10), at(8500)).is_empty());
        assert_eq!(watch.retransmit_ratio("ens3"), Some(0.0));
        // Without a rule, nothing is judged; a silent uplink is silent first.
        let mut off = PassiveWatch::new(Duration::from_millis(500), None);
        off.observe_tcp(&tcp(0, 0), at(0));
        assert!(off.observe_tcp(&tcp(1000, 1000), at(5000)).is_empty());
        assert_eq!(off.fault("ens3"), None);
    }

    #[test]
    fn busy_means_more_received_than_probes_explain_over_the_last_samples_and_not_silent() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut watch = PassiveWatch::new(Duration::from_millis(500), None);
        watch.observe(&sample(0, 0), at(0));
        watch.observe(&sample(5, 5), at(125));
        assert!(!watch.busy("ens3", 2, 16), "5 packets: a probe's replies");
        watch.observe(&sample(50, 50), at(250));
        assert!(watch.busy("ens3", 2, 16), "50 packets over two samples");
        assert!(watch.busy("ens3", 1, 16), "45 of them in the last");
        // The same total seen twice more: nothing new over two samples.
        watch.observe(&sample(50, 50), at(375));
        assert!(watch.busy("ens3", 2, 16), "still within two samples");
        watch.observe(&sample(50, 50), at(500));
        assert!(!watch.busy("ens3", 2, 16));
        // Sending into silence is never busy.
        for step in 5..12u64 {
            watch.observe(&sample(100 + step, 50), at(step * 125));
        }
        assert!(watch.silent("ens3"));
        assert!(!watch.busy("ens3", 2, 0));
        assert!(!watch.busy("ens9", 2, 0), "an unknown uplink is not busy");
    }
}
