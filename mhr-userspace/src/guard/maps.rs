//! Typed handles on the guard's pinned maps, from a freshly loaded object
//! or straight from bpffs (status, metrics, tests), and what they hold.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf,
    },
};
use mhr_common::guard::{
    ALLOW_V4_MAP, ALLOW_V6_MAP, AllowV4, AllowV6, Count, EVENT_COUNTERS_MAP, EVENTS, Event, FAMILIES,
    FLAG_BUDGET_MAP, FLAGS_MAP, FlagBudget, MAX_UPLINKS, OFFENDERS_MAP, OWNERS_V4_MAP, OWNERS_V6_MAP,
    Offender, OffenderKey, PacketFamily, SLOT_NAMES_MAP, STEER_MAP, SteerTarget, UPLINKS_HIGH_MAP,
    UPLINKS_MAP, UplinkGuard, VERDICT_COUNTERS_MAP, VERDICTS, Verdict, event_slot,
    tcp::{TCP_LAYOUT_MAP, TCP_RETRANSMITS_MAP, TCP_RTT_MAP, TCP_SENT_MAP},
    verdict_slot,
};
use serde::Serialize;

use super::GuardError;

/// Where one guard instance keeps its pins: `<pin_dir>/v<layout>/{maps,links}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(pin_dir: &Path) -> Self {
        Self { root: crate::paths::pin_layout(pin_dir) }
    }

    pub fn maps(&self) -> PathBuf {
        crate::paths::pinned_maps(&self.root)
    }

    pub fn links(&self) -> PathBuf {
        crate::paths::pinned_links(&self.root)
    }
}

pub struct GuardMaps {
    pub uplinks: Array<MapData, UplinkGuard>,
    pub uplinks_high: HashMap<MapData, u32, UplinkGuard>,
    pub slot_names: Array<MapData, [u8; 16]>,
    pub owners_v4: HashMap<MapData, u32, u32>,
    pub owners_v6: HashMap<MapData, [u64; 2], u32>,
    pub allow_v4: LpmTrie<MapData, AllowV4, u8>,
    pub allow_v6: LpmTrie<MapData, AllowV6, u8>,
    pub verdicts: PerCpuArray<MapData, Count>,
    pub events: PerCpuArray<MapData, u64>,
    pub flag_budget: PerCpuArray<MapData, FlagBudget>,
    pub offenders: PerCpuHashMap<MapData, OffenderKey, Offender>,
    /// Owner slot → where steer mode sends its packets.
    pub steer: Array<MapData, SteerTarget>,
    /// Passive TCP quality (`None` in pins made before it).
    pub tcp: Option<super::tcp::TcpMaps>,
}

impl std::fmt::Debug for GuardMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardMaps")
    }
}

fn typed<T: TryFrom<Map, Error = MapError>>(map: Map, name: &'static str) -> Result<T, GuardError> {
    T::try_from(map).map_err(|source| GuardError::Map { name, source })
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, GuardError> {
    let data = MapData::from_pin(dir.join(name)).map_err(|source| GuardError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| GuardError::Map { name, source })
}

impl GuardMaps {
    /// Takes the maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, GuardError> {
        Self::build(|name| ebpf.take_map(name).ok_or(GuardError::MissingMap(name)))
    }

    /// Opens the pinned maps of an installed guard; `None` when there is none.
    pub fn from_pins(pin_dir: &Path) -> Result<Option<Self>, GuardError> {
        let dir = PinLayout::new(pin_dir).maps();
        if !dir.join(UPLINKS_MAP).exists() {
            return Ok(None);
        }
        Self::build(|name| open_pinned(&dir, name)).map(Some)
    }

    fn build(mut get: impl FnMut(&'static str) -> Result<Map, GuardError>) -> Result<Self, GuardError> {
        Ok(Self {
            uplinks: typed(get(UPLINKS_MAP)?, UPLINKS_MAP)?,
            uplinks_high: typed(get(UPLINKS_HIGH_MAP)?, UPLINKS_HIGH_MAP)?,
            slot_names: typed(get(SLOT_NAMES_MAP)?, SLOT_NAMES_MAP)?,
            owners_v4: typed(get(OWNERS_V4_MAP)?, OWNERS_V4_MAP)?,
            owners_v6: typed(get(OWNERS_V6_MAP)?, OWNERS_V6_MAP)?,
            allow_v4: typed(get(ALLOW_V4_MAP)?, ALLOW_V4_MAP)?,
            allow_v6: typed(get(ALLOW_V6_MAP)?, ALLOW_V6_MAP)?,
            verdicts: typed(get(VERDICT_COUNTERS_MAP)?, VERDICT_COUNTERS_MAP)?,
            events: typed(get(EVENT_COUNTERS_MAP)?, EVENT_COUNTERS_MAP)?,
            flag_budget: typed(get(FLAG_BUDGET_MAP)?, FLAG_BUDGET_MAP)?,
            offenders: typed(get(OFFENDERS_MAP)?, OFFENDERS_MAP)?,
            steer: typed(get(STEER_MAP)?, STEER_MAP)?,
            tcp: match (get(TCP_LAYOUT_MAP), get(TCP_RTT_MAP), get(TCP_RETRANSMITS_MAP)) {
                (Ok(layout), Ok(rtt), Ok(retransmits)) => Some(super::tcp::TcpMaps {
                    layout: typed(layout, TCP_LAYOUT_MAP)?,
                    rtt: typed(rtt, TCP_RTT_MAP)?,
                    retransmits: typed(retransmits, TCP_RETRANSMITS_MAP)?,
                    // Absent in pins made before it: the rest still counts.
                    sent: get(TCP_SENT_MAP).ok().map(|sent| typed(sent, TCP_SENT_MAP)).transpose()?,
                }),
                _ => None,
            },
        })
    }

    /// Opens the pinned ring buffer of flag records.
    pub fn flags_from_pins(pin_dir: &Path) -> Result<RingBuf<MapData>, GuardError> {
        let map = open_pinned(&PinLayout::new(pin_dir).maps(), FLAGS_MAP)?;
        typed(map, FLAGS_MAP)
    }

    /// Slot → uplink name, for every named slot.
    pub fn slot_names(&self) -> Result<BTreeMap<u32, String>, GuardError> {
        let mut names = BTreeMap::new();
        for slot in 0..MAX_UPLINKS {
            let raw = self.slot_names.get(&slot, 0).map_err(map_error(SLOT_NAMES_MAP))?;
            if let Some(name) = decode_name(&raw) {
                names.insert(slot, name);
            }
        }
        Ok(names)
    }

    /// The slot that counts for `uplink`, if it has one.
    pub fn slot_of(&self, uplink: &str) -> Result<Option<u32>, GuardError> {
        Ok(self.slot_names()?.into_iter().find(|(_, name)| name == uplink).map(|(slot, _)| slot))
    }

    /// Counters of one slot by family and verdict, summed over CPUs.
    pub fn verdict_counts(&self, slot: u32) -> Result<VerdictCounts, GuardError> {
        let mut counts = VerdictCounts::default();
        for family in PacketFamily::ALL {
            for verdict in Verdict::ALL {
                let values = self
                    .verdicts
                    .get(&verdict_slot(slot, family, verdict), 0)
                    .map_err(map_error(VERDICT_COUNTERS_MAP))?;
                let sum = values.iter().fold(Count::default(), |sum, cpu| Count {
                    packets: sum.packets + cpu.packets,
                    bytes: sum.bytes + cpu.bytes,
                });
                counts.0[family as usize][verdict as usize] = sum;
            }
        }
        Ok(counts)
    }

    pub fn event_counts(&self, slot: u32) -> Result<EventCounts, GuardError> {
        let mut counts = [0u64; EVENTS];
        for event in Event::ALL {
            let values =
                self.events.get(&event_slot(slot, event), 0).map_err(map_error(EVENT_COUNTERS_MAP))?;
            counts[event as usize] = values.iter().sum();
        }
        let budgets = self.flag_budget.get(&slot, 0).map_err(map_error(FLAG_BUDGET_MAP))?;
        Ok(EventCounts {
            dropped: counts[Event::Dropped as usize],
            flags_emitted: budgets.iter().map(|b| b.emitted).sum(),
            flags_suppressed: budgets.iter().map(|b| b.suppressed).sum(),
            errors: counts[Event::Errors as usize],
        })
    }

    /// Offenders, CPUs merged, most packets first.
    pub fn offenders(&self, names: &BTreeMap<u32, String>) -> Result<Vec<OffenderReport>, GuardError> {
        let mut offenders = Vec::new();
        for entry in self.offenders.iter() {
            let (key, values) = entry.map_err(map_error(OFFENDERS_MAP))?;
            if let Some(report) = merge_offender(&key, &values, names) {
                offenders.push(report);
            }
        }
        offenders.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.source.cmp(&b.source)));
        Ok(offenders)
    }

    /// Clears all a slot carries before another uplink takes it: counters,
    /// events, the flag budget and the offenders seen there.
    pub fn clear_slot(&mut self, slot: u32) -> Result<(), GuardError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| GuardError::Cpus(source))?;
        let zero_counts = || PerCpuValues::try_from(vec![Count::default(); cpus]).map_err(GuardError::Cpus);
        for family in PacketFamily::ALL {
            for verdict in Verdict::ALL {
                self.verdicts
                    .set(verdict_slot(slot, family, verdict), zero_counts()?, 0)
                    .map_err(map_error(VERDICT_COUNTERS_MAP))?;
            }
        }
        let zero_events = || PerCpuValues::try_from(vec![0u64; cpus]).map_err(GuardError::Cpus);
        for event in Event::ALL {
            self.events
                .set(event_slot(slot, event), zero_events()?, 0)
                .map_err(map_error(EVENT_COUNTERS_MAP))?;
        }
        let budget = PerCpuValues::try_from(vec![FlagBudget::default(); cpus]).map_err(GuardError::Cpus)?;
        self.flag_budget.set(slot, budget, 0).map_err(map_error(FLAG_BUDGET_MAP))?;
        let keys: Vec<OffenderKey> =
            self.offenders.keys().collect::<Result<_, _>>().map_err(map_error(OFFENDERS_MAP))?;
        for key in keys.iter().filter(|key| key.slot == slot) {
            // Evicted meanwhile by the LRU: fine.
            let _ = self.offenders.remove(key);
        }
        self.clear_tcp_slot(slot, cpus)
    }
}

pub(super) fn map_error(name: &'static str) -> impl Fn(MapError) -> GuardError {
    move |source| GuardError::Map { name, source }
}

pub fn encode_name(name: &str) -> [u8; 16] {
    let mut raw = [0u8; 16];
    let bytes = name.as_bytes();
    let len = bytes.len().min(15);
    raw[..len].copy_from_slice(&bytes[..len]);
    raw
}

pub fn decode_name(raw: &[u8; 16]) -> Option<String> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(16);
    (len > 0).then(|| String::from_utf8_lossy(&raw[..len]).into_owned())
}

/// Packets and bytes by family and verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictCounts(pub [[Count; VERDICTS]; FAMILIES]);

impl VerdictCounts {
    pub fn get(&self, family: PacketFamily, verdict: Verdict) -> Count {
        self.0[family as usize][verdict as usize]
    }

    /// One verdict over all families.
    pub fn total(&self, verdict: Verdict) -> Count {
        PacketFamily::ALL.iter().fold(Count::default(), |sum, family| {
            let count = self.get(*family, verdict);
            Count { packets: sum.packets + count.packets, bytes: sum.bytes + count.bytes }
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub dropped: u64,
    pub flags_emitted: u64,
    pub flags_suppressed: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OffenderReport {
    pub uplink: String,
    pub source: IpAddr,
    pub verdict: &'static str,
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

pub fn source_address(family: u8, raw: &[u8; 16]) -> Option<IpAddr> {
    match PacketFamily::from_u8(family)? {
        PacketFamily::Ipv4 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        PacketFamily::Ipv6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        PacketFamily::Other => None,
    }
}

fn merge_offender(
    key: &OffenderKey,
    values: &PerCpuValues<Offender>,
    names: &BTreeMap<u32, String>,
) -> Option<OffenderReport> {
    let seen: Vec<&Offender> = values.iter().filter(|o| o.packets > 0).collect();
    let first = seen.first()?;
    Some(OffenderReport {
        uplink: names.get(&key.slot).cloned().unwrap_or_else(|| format!("slot{}", key.slot)),
        source: source_address(key.family, &key.source)?,
        verdict: Verdict::from_u8(first.verdict).map_or("unknown", Verdict::name),
        packets: seen.iter().map(|o| o.packets).sum(),
        bytes: seen.iter().map(|o| o.bytes).sum(),
        first_seen_ns: seen.iter().map(|o| o.first_seen_ns).min().unwrap_or(0),
        last_seen_ns: seen.iter().map(|o| o.last_seen_ns).max().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_slot_map_format() {
        assert_eq!(decode_name(&encode_name("ens4")), Some("ens4".to_owned()));
        assert_eq!(decode_name(&[0; 16]), None);
        assert_eq!(decode_name(&encode_name("averyveryverylongname")).map(|n| n.len()), Some(15));
    }

    #[test]
    fn offender_sources_decode_by_family() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[10, 0, 4, 10]);
        assert_eq!(source_address(PacketFamily::Ipv4 as u8, &raw), Some("10.0.4.10".parse().unwrap()));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(source_address(PacketFamily::Ipv6 as u8, &v6.octets()), Some(IpAddr::V6(v6)));
        assert_eq!(source_address(PacketFamily::Other as u8, &raw), None);
    }
}
