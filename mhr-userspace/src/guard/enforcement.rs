//! The guard mode of one uplink, as one type from the config to the
//! kernel's map entry: the config's mode and `enforce_asymmetric` become an
//! [`Enforcement`] once ([`Config::enforcement`]), which travels through
//! [`super::GuardUplink`], the confirmation record and rollback, and turns
//! into the entry's two `u8` fields only where the map is written (and back
//! where it is read): [`Enforcement::write`], [`Enforcement::of`].

use mhr_common::guard::UplinkGuard;
use serde::{Deserialize, Serialize};

use crate::config::{Config, GuardMode, UplinkConfig};

/// What the guard does with an uplink's offenders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// As `[enforce, enforce_asymmetric]`: the form confirmation records
// (`pending-confirm.json`) had before this type, so that either reads both;
// steer mode adds a third element.
#[serde(from = "Record", into = "Record")]
pub enum Enforcement {
    /// Count and flag; every packet passes.
    #[default]
    Monitor,
    /// Drop spoofed packets.
    DropSpoofed,
    /// Drop spoofed and asymmetric packets.
    DropSpoofedAndAsymmetric,
    /// Drop spoofed packets, steer asymmetric ones to their owner; those
    /// that cannot be steered pass, or are dropped when `drop_unsteerable`.
    Steer { drop_unsteerable: bool },
}

/// The serialised form: a pair before steer mode, a triple with it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Record {
    Pair(bool, bool),
    Triple(bool, bool, bool),
}

impl From<Record> for Enforcement {
    fn from(record: Record) -> Self {
        match record {
            Record::Pair(enforce, asymmetric) | Record::Triple(enforce, asymmetric, false) => {
                Self::from((enforce, asymmetric))
            }
            Record::Triple(_, asymmetric, true) => Self::Steer { drop_unsteerable: asymmetric },
        }
    }
}

impl From<Enforcement> for Record {
    fn from(enforcement: Enforcement) -> Self {
        match enforcement {
            Enforcement::Steer { drop_unsteerable } => Self::Triple(true, drop_unsteerable, true),
            other => {
                let (enforce, asymmetric) = other.into();
                Self::Pair(enforce, asymmetric)
            }
        }
    }
}

impl Enforcement {
    /// Whether the guard drops anything.
    pub fn enforces(self) -> bool {
        self != Self::Monitor
    }

    /// How `apply` and people name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Monitor => "monitor",
            Self::DropSpoofed => "enforce (drop spoofed)",
            Self::DropSpoofedAndAsymmetric => "enforce (drop spoofed and asymmetric)",
            Self::Steer { drop_unsteerable: false } => "steer (drop spoofed, steer asymmetric)",
            Self::Steer { drop_unsteerable: true } => {
                "steer (drop spoofed, steer asymmetric, drop what cannot be steered)"
            }
        }
    }

    /// Sets the map entry's fields (the eBPF program reads `enforce`, and
    /// `enforce_asymmetric` only when `enforce` is set; `steer` steers
    /// asymmetric packets whatever the others say).
    pub fn write(self, entry: &mut UplinkGuard) {
        let (enforce, asymmetric, steer) = match self {
            Self::Steer { drop_unsteerable } => (true, drop_unsteerable, true),
            other => {
                let (enforce, asymmetric) = other.into();
                (enforce, asymmetric, false)
            }
        };
        entry.enforce = u8::from(enforce);
        entry.enforce_asymmetric = u8::from(asymmetric);
        entry.steer = u8::from(steer);
    }

    /// What a map entry enforces (the kernel's reading of its fields).
    pub fn of(entry: &UplinkGuard) -> Self {
        if entry.steer != 0 {
            // Steer mode always drops spoofed packets (it writes enforce).
            return Self::Steer { drop_unsteerable: entry.enforce != 0 && entry.enforce_asymmetric != 0 };
        }
        Self::from((entry.enforce != 0, entry.enforce_asymmetric != 0))
    }
}

impl From<(bool, bool)> for Enforcement {
    /// From (enforce, enforce_asymmetric); asymmetric alone is monitor, as
    /// the kernel reads it.
    fn from((enforce, asymmetric): (bool, bool)) -> Self {
        match (enforce, asymmetric) {
            (false, _) => Self::Monitor,
            (true, false) => Self::DropSpoofed,
            (true, true) => Self::DropSpoofedAndAsymmetric,
        }
    }
}

/// (enforce, enforce_asymmetric); steer mode as the enforce mode it falls
/// back to.
impl From<Enforcement> for (bool, bool) {
    fn from(enforcement: Enforcement) -> Self {
        match enforcement {
            Enforcement::Monitor => (false, false),
            Enforcement::DropSpoofed => (true, false),
            Enforcement::DropSpoofedAndAsymmetric => (true, true),
            Enforcement::Steer { drop_unsteerable } => (true, drop_unsteerable),
        }
    }
}

impl Config {
    /// The guard's enforcement on `uplink`: its `mode` and
    /// `enforce_asymmetric`, each the global one unless the uplink sets it.
    pub fn enforcement(&self, uplink: &UplinkConfig) -> Enforcement {
        match self.guard_mode(uplink) {
            (GuardMode::Steer, asymmetric) => Enforcement::Steer { drop_unsteerable: asymmetric },
            (mode, asymmetric) => Enforcement::from((mode == GuardMode::Enforce, asymmetric)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Enforcement; 5] = [
        Enforcement::Monitor,
        Enforcement::DropSpoofed,
        Enforcement::DropSpoofedAndAsymmetric,
        Enforcement::Steer { drop_unsteerable: false },
        Enforcement::Steer { drop_unsteerable: true },
    ];

    #[test]
    fn the_map_entry_gives_back_what_was_written() {
        for enforcement in ALL {
            let mut entry = UplinkGuard { enabled: 1, ..UplinkGuard::DISABLED };
            enforcement.write(&mut entry);
            assert_eq!(Enforcement::of(&entry), enforcement);
        }
        let mut entry = UplinkGuard::DISABLED;
        Enforcement::DropSpoofedAndAsymmetric.write(&mut entry);
        assert_eq!((entry.enforce, entry.enforce_asymmetric), (1, 1), "the bytes the eBPF program reads");
        Enforcement::DropSpoofed.write(&mut entry);
        assert_eq!((entry.enforce, entry.enforce_asymmetric), (1, 0));
        Enforcement::Monitor.write(&mut entry);
        assert_eq!((entry.enforce, entry.enforce_asymmetric), (0, 0));
        // Asymmetric without enforce drops nothing in the kernel: monitor.
        entry.enforce_asymmetric = 1;
        assert_eq!(Enforcement::of(&entry), Enforcement::Monitor);
        Enforcement::Steer { drop_unsteerable: false }.write(&mut entry);
        assert_eq!((entry.enforce, entry.enforce_asymmetric, entry.steer), (1, 0, 1), "steer drops spoofed");
        Enforcement::DropSpoofed.write(&mut entry);
        assert_eq!(entry.steer, 0, "leaving steer mode clears the flag");
    }

    #[test]
    fn confirmation_records_keep_their_form() {
        let json = serde_json::to_string(&ALL).unwrap();
        assert_eq!(json, "[[false,false],[true,false],[true,true],[true,false,true],[true,true,true]]");
        let read: Vec<Enforcement> = serde_json::from_str(&json).unwrap();
        assert_eq!(read, ALL);
        let read: Vec<Enforcement> = serde_json::from_str("[[false,true],[true,false],[true,true]]").unwrap();
        assert_eq!(
            read,
            [Enforcement::Monitor, Enforcement::DropSpoofed, Enforcement::DropSpoofedAndAsymmetric]
        );
    }

    #[test]
    fn the_config_decides_per_uplink_with_global_defaults() {
        let text = r#"
mode = "enforce"
enforce_asymmetric = true
[[uplink]]
interface = "a0"
primary = true
[[uplink]]
interface = "b0"
enforce_asymmetric = false
[[uplink]]
interface = "c0"
mode = "monitor"
[[uplink]]
interface = "d0"
mode = "steer"
"#;
        let config = Config::parse(text, std::path::Path::new("mhr.toml")).unwrap();
        let modes: Vec<Enforcement> = config.uplinks.iter().map(|u| config.enforcement(u)).collect();
        assert_eq!(
            modes,
            [
                Enforcement::DropSpoofedAndAsymmetric,
                Enforcement::DropSpoofed,
                Enforcement::Monitor,
                Enforcement::Steer { drop_unsteerable: true }
            ]
        );
    }
}
