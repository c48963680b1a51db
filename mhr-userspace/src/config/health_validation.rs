//! Semantic validation of `[health]` and the uplinks' probe settings.

use std::time::Duration;

use super::{
    Config, ConfigError,
    check::Loc,
    validation::{MAX_PROBES_PER_UPLINK, MAX_WEIGHT, is_unicast},
};

const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// A window holds enough TCP segments to judge a ratio only from about a second.
const MIN_RETRANSMIT_WINDOW: Duration = Duration::from_secs(1);
const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_STREAK: u32 = 100;

impl Config {
    pub(super) fn validate_health(&self, problems: &mut Vec<(Loc, ConfigError)>) {
        let every = self.health.interval;
        let interval_ok = (MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&every);
        for (index, uplink) in self.uplinks.iter().enumerate() {
            let interface = || uplink.interface.clone();
            if uplink.probe.len() > MAX_PROBES_PER_UPLINK {
                problems.push((
                    Loc::Uplink(index, "probe"),
                    ConfigError::TooManyProbes { interface: interface(), count: uplink.probe.len() },
                ));
            }
            for (item, target) in uplink.probe.iter().enumerate().filter(|(_, t)| !is_unicast(&t.address())) {
                problems.push((
                    Loc::UplinkItem(index, "probe", item),
                    ConfigError::BadProbe { interface: interface(), target: target.to_string() },
                ));
            }
            if let Some(quorum) = uplink.quorum.filter(|&q| q == 0 || q as usize > uplink.probe.len()) {
                problems.push((
                    Loc::Uplink(index, "quorum"),
                    ConfigError::BadQuorum { interface: interface(), quorum, targets: uplink.probe.len() },
                ));
            }
            // Against an interval that is itself refused, only the upper bound.
            let lowest = if interval_ok { every } else { Duration::ZERO };
            if let Some(value) = uplink.probe_interval.filter(|d| !(lowest..=MAX_HEALTH_INTERVAL).contains(d))
            {
                problems.push((
                    Loc::Uplink(index, "probe_interval"),
                    ConfigError::BadProbeInterval {
                        interface: interface(),
                        interval: humantime::format_duration(every).to_string(),
                        value: humantime::format_duration(value).to_string(),
                    },
                ));
            }
            if let Some(weight) = uplink.weight.filter(|w| !(1..=MAX_WEIGHT).contains(w)) {
                problems.push((
                    Loc::Uplink(index, "weight"),
                    ConfigError::BadWeight { interface: interface(), weight },
                ));
            }
        }
        let health = &self.health;
        let mut bad = |key, reason: String| {
            problems.push((Loc::Section("health", key), ConfigError::BadHealth { key, reason }));
        };
        if !(MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&health.interval) {
            bad(
                "interval",
                format!("must be from 100ms to 1h, not {}", humantime::format_duration(health.interval)),
            );
        }
        // Against an interval that is itself refused, only a zero timeout is news.
        if health.timeout.is_zero() || (interval_ok && health.timeout > health.interval) {
            bad(
                "timeout",
                format!(
                    "must be more than 0 and at most `interval` ({}), not {}",
                    humantime::format_duration(health.interval),
                    humantime::format_duration(health.timeout)
                ),
            );
        }
        if interval_ok && !(health.interval..=MAX_HEALTH_INTERVAL).contains(&health.window) {
            bad(
                "window",
                format!(
                    "must be from `interval` ({}) to 1h, not {}",
                    humantime::format_duration(health.interval),
                    humantime::format_duration(health.window)
                ),
            );
        }
        if !(MIN_HEALTH_INTERVAL..=MAX_HEALTH_INTERVAL).contains(&health.rx_silence) {
            let silence = humantime::format_duration(health.rx_silence);
            bad("rx_silence", format!("must be from 100ms to 1h, not {silence}"));
        }
        if !(MIN_RETRANSMIT_WINDOW..=MAX_HEALTH_INTERVAL).contains(&health.retransmit_window) {
            let window = humantime::format_duration(health.retransmit_window);
            bad("retransmit_window", format!("must be from 1s to 1h, not {window}"));
        }
        if health.retransmit_percent > 99 {
            // 100 could never be passed: it would be off without saying so.
            let percent = health.retransmit_percent;
            bad(
                "retransmit_percent",
                format!("must be a whole percentage from 0 (off) to 99, not {percent}"),
            );
        }
        if health.probe_when_idle && !health.passive {
            bad(
                "probe_when_idle",
                "needs `passive = true` (traffic must be judged while probes are not sent)".to_owned(),
            );
        }
        let format = |d: Duration| humantime::format_duration(d).to_string();
        match (health.latency_high, health.latency_low) {
            (Some(high), Some(low)) if low > high => bad(
                "latency_low",
                format!("must be at most latency_high ({}), not {}", format(high), format(low)),
            ),
            (Some(high), _) if high.is_zero() || high > MAX_HEALTH_INTERVAL => {
                bad("latency_high", format!("must be more than 0 and at most 1h, not {}", format(high)))
            }
            (Some(_), None) => {
                bad("latency_low", "must go with latency_high (the mark to recover under)".to_owned())
            }
            (None, Some(_)) => {
                bad("latency_high", "must go with latency_low (the mark to degrade over)".to_owned())
            }
            _ => {}
        }
        for (key, value) in [("loss_high", health.loss_high), ("loss_low", health.loss_low)] {
            if let Some(value) = value.filter(|v| *v > 100) {
                bad(key, format!("must be a whole percentage from 0 to 100, not {value}"));
            }
        }
        match (health.loss_high, health.loss_low) {
            (Some(high), Some(low)) if low > high && high <= 100 => {
                bad("loss_low", format!("must be at most loss_high ({high}), not {low}"))
            }
            (Some(_), None) => {
                bad("loss_low", "must go with loss_high (the mark to recover under)".to_owned())
            }
            (None, Some(_)) => {
                bad("loss_high", "must go with loss_low (the mark to degrade over)".to_owned())
            }
            _ => {}
        }
        if !(1..=MAX_PROBES_PER_UPLINK as u32).contains(&health.quorum) {
            bad(
                "quorum",
                format!("must be a whole number from 1 to {MAX_PROBES_PER_UPLINK}, not {}", health.quorum),
            );
        }
        for (key, value) in [("down_after", health.down_after), ("up_after", health.up_after)] {
            if !(1..=MAX_STREAK).contains(&value) {
                bad(key, format!("must be a whole number from 1 to {MAX_STREAK}, not {value}"));
            }
        }
    }
}
