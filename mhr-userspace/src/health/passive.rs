//! Passive health (`[health] passive`): an uplink that keeps sending and
//! receives nothing for `rx_silence` has a silent upstream, whatever the
//! probe rounds have said so far. Fed the interfaces' packet counters (the
//! kernel counts every packet already; sampling them costs nothing per
//! packet). Pure: the daemon samples and feeds it.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;

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
}

impl RxWatch {
    fn new(counters: LinkCounters, now: Instant) -> Self {
        Self { last: counters, last_rx_at: now, sending: false, awaiting_rx: false }
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
        self.last = counters;
    }

    /// How long it has been sending with nothing received; zero while it
    /// sends nothing or receives.
    fn silence(&self, now: Instant) -> Duration {
        if self.sending { now.saturating_duration_since(self.last_rx_at) } else { Duration::ZERO }
    }
}

/// Every uplink's receive silence.
#[derive(Clone, Debug)]
pub struct PassiveWatch {
    rx_silence: Duration,
    watches: BTreeMap<String, RxWatch>,
}

impl PassiveWatch {
    pub fn new(rx_silence: Duration) -> Self {
        Self { rx_silence, watches: BTreeMap::new() }
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
        let mut watch = PassiveWatch::new(Duration::from_millis(500));
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
        let mut watch = PassiveWatch::new(Duration::from_millis(500));
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
        let mut watch = PassiveWatch::new(Duration::from_millis(500));
        watch.observe(&sample(100, 100), start);
        watch.observe(&sample(150, 100), start + Duration::from_millis(400));
        // Re-created: counters from zero.
        assert!(watch.observe(&sample(5, 0), start + Duration::from_millis(600)).is_empty());
        assert_eq!(watch.silence_seconds("ens3", start + Duration::from_millis(600)), 0.0);
        watch.observe(&BTreeMap::new(), start + Duration::from_millis(700));
        assert_eq!(watch.interfaces().count(), 0);
    }
}
