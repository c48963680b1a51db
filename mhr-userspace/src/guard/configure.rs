//! Filling the guard's maps from the uplinks: works on a loaded guard and
//! on the pinned maps alone, so addresses can change without reloading or
//! re-attaching the program.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use mhr_common::{
    MAX_IFINDEX,
    guard::{AllowV4, AllowV6, INLINE_V4, INLINE_V6, MAX_UPLINKS, UplinkGuard, ipv6_words},
};

use super::{
    GuardError, GuardMaps, GuardUplink,
    maps::{encode_name, map_error},
};

impl GuardMaps {
    /// Makes the maps describe exactly `uplinks`: slots, addresses, owners,
    /// allow prefixes. Returns each uplink's slot.
    pub fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<BTreeMap<String, u32>, GuardError> {
        let slots = self.assign_slots(uplinks)?;
        let mut enabled: BTreeMap<u32, UplinkGuard> = BTreeMap::new();
        let mut owners_v4: BTreeMap<u32, u32> = BTreeMap::new();
        let mut owners_v6: BTreeMap<[u64; 2], u32> = BTreeMap::new();
        let mut allow_v4: BTreeSet<(u32, AllowV4)> = BTreeSet::new();
        let mut allow_v6: BTreeSet<(u32, AllowV6)> = BTreeSet::new();
        for uplink in uplinks {
            let slot = slots[&uplink.interface];
            let mut entry = UplinkGuard { enabled: 1, slot, ..UplinkGuard::DISABLED };
            entry.enforce = u8::from(uplink.enforce);
            entry.enforce_asymmetric = u8::from(uplink.enforce_asymmetric);
            entry.l3 = u8::from(uplink.l3);
            for address in &uplink.addresses {
                match address {
                    IpAddr::V4(v4) => {
                        let word = u32::from_ne_bytes(v4.octets());
                        if usize::from(entry.v4_count) < INLINE_V4 {
                            entry.v4[usize::from(entry.v4_count)] = word;
                            entry.v4_count += 1;
                        }
                        owners_v4.insert(word, slot);
                    }
                    IpAddr::V6(v6) => {
                        let words = ipv6_words(v6.octets());
                        if usize::from(entry.v6_count) < INLINE_V6 {
                            entry.v6[usize::from(entry.v6_count)] = words;
                            entry.v6_count += 1;
                        }
                        owners_v6.insert(words, slot);
                    }
                }
            }
            for prefix in &uplink.allow {
                let prefix = prefix.trunc();
                // The slot leads the key, so a prefix only matches for its uplink.
                let bits = 32 + u32::from(prefix.prefix_len());
                let slot_bytes = slot.to_be_bytes();
                match prefix {
                    IpNet::V4(net) => {
                        entry.allow_v4 = 1;
                        allow_v4.insert((bits, AllowV4 { slot: slot_bytes, address: net.addr().octets() }));
                    }
                    IpNet::V6(net) => {
                        entry.allow_v6 = 1;
                        allow_v6.insert((bits, AllowV6 { slot: slot_bytes, address: net.addr().octets() }));
                    }
                }
            }
            enabled.insert(uplink.ifindex, entry);
        }
        self.write_uplinks(&enabled)?;
        sync_hash(&mut self.owners_v4, &owners_v4, "MHR_OWNERS_V4")?;
        sync_hash(&mut self.owners_v6, &owners_v6, "MHR_OWNERS_V6")?;
        sync_trie(&mut self.allow_v4, &allow_v4, "MHR_ALLOW_V4")?;
        sync_trie(&mut self.allow_v6, &allow_v6, "MHR_ALLOW_V6")?;
        Ok(slots)
    }

    /// The same interface keeps its slot (and counters) across runs; new
    /// ones take a free slot, or the slot of an uplink no longer configured.
    fn assign_slots(&mut self, uplinks: &[GuardUplink]) -> Result<BTreeMap<String, u32>, GuardError> {
        let names = self.slot_names()?;
        let wanted: BTreeSet<&str> = uplinks.iter().map(|u| u.interface.as_str()).collect();
        let mut slots: BTreeMap<String, u32> = names
            .iter()
            .filter(|(_, name)| wanted.contains(name.as_str()))
            .map(|(slot, name)| (name.clone(), *slot))
            .collect();
        let mut free: Vec<u32> = (0..MAX_UPLINKS).filter(|slot| !names.contains_key(slot)).collect();
        let mut reclaimable: Vec<u32> =
            names.iter().filter(|(_, name)| !wanted.contains(name.as_str())).map(|(slot, _)| *slot).collect();
        free.reverse();
        reclaimable.reverse();
        for uplink in uplinks {
            if slots.contains_key(&uplink.interface) {
                continue;
            }
            let slot = match free.pop() {
                Some(slot) => slot,
                None => {
                    let slot = reclaimable.pop().ok_or(GuardError::TooManyUplinks)?;
                    self.reset_slot(slot)?;
                    slot
                }
            };
            self.slot_names
                .set(slot, encode_name(&uplink.interface), 0)
                .map_err(map_error("MHR_SLOT_NAMES"))?;
            slots.insert(uplink.interface.clone(), slot);
        }
        Ok(slots)
    }

    fn write_uplinks(&mut self, enabled: &BTreeMap<u32, UplinkGuard>) -> Result<(), GuardError> {
        // Disable interfaces that are no longer uplinks, then write the rest.
        let mut stale = Vec::new();
        for (index, entry) in self.uplinks.iter().enumerate() {
            let entry = entry.map_err(map_error("MHR_UPLINKS"))?;
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if entry.enabled != 0 && !enabled.contains_key(&index) {
                stale.push(index);
            }
        }
        for index in stale {
            self.uplinks.set(index, UplinkGuard::DISABLED, 0).map_err(map_error("MHR_UPLINKS"))?;
        }
        let high: BTreeMap<u32, UplinkGuard> =
            enabled.iter().filter(|(index, _)| **index >= MAX_IFINDEX).map(|(i, e)| (*i, *e)).collect();
        sync_hash(&mut self.uplinks_high, &high, "MHR_UPLINKS_HIGH")?;
        for (index, entry) in enabled.iter().filter(|(index, _)| **index < MAX_IFINDEX) {
            self.uplinks.set(*index, *entry, 0).map_err(map_error("MHR_UPLINKS"))?;
        }
        Ok(())
    }
}

/// Makes a hash map hold exactly `wanted`.
fn sync_hash<K, V>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, V>,
    wanted: &BTreeMap<K, V>,
    name: &'static str,
) -> Result<(), GuardError>
where
    K: aya::Pod + Ord,
    V: aya::Pod,
{
    let existing: Vec<K> = map.keys().collect::<Result<_, _>>().map_err(map_error(name))?;
    for key in existing.iter().filter(|key| !wanted.contains_key(key)) {
        map.remove(key).map_err(map_error(name))?;
    }
    for (key, value) in wanted {
        map.insert(key, value, 0).map_err(map_error(name))?;
    }
    Ok(())
}

/// Makes an LPM trie hold exactly `wanted` (prefix length, key data).
fn sync_trie<K>(
    trie: &mut aya::maps::LpmTrie<aya::maps::MapData, K, u8>,
    wanted: &BTreeSet<(u32, K)>,
    name: &'static str,
) -> Result<(), GuardError>
where
    K: aya::Pod + Ord,
{
    let existing: Vec<Key<K>> = trie.keys().collect::<Result<_, _>>().map_err(map_error(name))?;
    for key in existing.iter().filter(|key| !wanted.contains(&(key.prefix_len(), key.data()))) {
        trie.remove(key).map_err(map_error(name))?;
    }
    for (bits, data) in wanted {
        trie.insert(&Key::new(*bits, *data), 1, 0).map_err(map_error(name))?;
    }
    Ok(())
}

/// Enforcement of one guarded interface: (enforce, enforce_asymmetric).
pub type Enforcement = (bool, bool);

impl GuardMaps {
    /// Per ifindex, how the guard enforces on each enabled interface.
    pub fn enforcement(&self) -> Result<BTreeMap<u32, Enforcement>, GuardError> {
        let mut modes = BTreeMap::new();
        for (index, entry) in self.uplinks.iter().enumerate() {
            let entry = entry.map_err(map_error("MHR_UPLINKS"))?;
            if entry.enabled != 0 {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                modes.insert(index, (entry.enforce != 0, entry.enforce_asymmetric != 0));
            }
        }
        for item in self.uplinks_high.iter() {
            let (index, entry) = item.map_err(map_error("MHR_UPLINKS_HIGH"))?;
            if entry.enabled != 0 {
                modes.insert(index, (entry.enforce != 0, entry.enforce_asymmetric != 0));
            }
        }
        Ok(modes)
    }

    /// Sets every enabled interface's enforcement to `modes`; interfaces
    /// `modes` does not name only count (monitor).
    pub fn set_enforcement(&mut self, modes: &BTreeMap<u32, Enforcement>) -> Result<(), GuardError> {
        let apply = |index: u32, mut entry: UplinkGuard| {
            let (enforce, asymmetric) = modes.get(&index).copied().unwrap_or((false, false));
            entry.enforce = u8::from(enforce);
            entry.enforce_asymmetric = u8::from(asymmetric);
            entry
        };
        let mut low = Vec::new();
        for (index, entry) in self.uplinks.iter().enumerate() {
            let entry = entry.map_err(map_error("MHR_UPLINKS"))?;
            if entry.enabled != 0 {
                low.push((u32::try_from(index).unwrap_or(u32::MAX), entry));
            }
        }
        for (index, entry) in low {
            self.uplinks.set(index, apply(index, entry), 0).map_err(map_error("MHR_UPLINKS"))?;
        }
        let high: Vec<(u32, UplinkGuard)> =
            self.uplinks_high.iter().collect::<Result<_, _>>().map_err(map_error("MHR_UPLINKS_HIGH"))?;
        for (index, entry) in high.into_iter().filter(|(_, e)| e.enabled != 0) {
            self.uplinks_high.insert(index, apply(index, entry), 0).map_err(map_error("MHR_UPLINKS_HIGH"))?;
        }
        Ok(())
    }
}
