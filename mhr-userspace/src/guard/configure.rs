//! Filling the guard's maps from the uplinks: works on a loaded guard and
//! on the pinned maps alone, so addresses can change without reloading or
//! re-attaching the program.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::maps::{MapError, lpm_trie::Key};
use ipnet::IpNet;
use mhr_common::{
    MAX_IFINDEX,
    guard::{
        AllowV4, AllowV6, INLINE_V4, INLINE_V6, MAX_UPLINKS, STEER_MAP, SteerTarget, UplinkGuard, ipv6_words,
    },
};

use super::{
    Enforcement, GuardError, GuardMaps, GuardUplink,
    maps::{encode_name, map_error},
    update::{self, MapOp, MapState},
};

impl GuardMaps {
    /// Makes the maps describe exactly `uplinks`: slots, addresses, owners,
    /// allow prefixes, changed in an order that never misclassifies a
    /// packet ([`super::update`]). Returns each uplink's slot.
    pub fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<BTreeMap<String, u32>, GuardError> {
        let (slots, reclaimed) = self.assign_slots(uplinks)?;
        let wanted = wanted_state(uplinks, &slots);
        let current = self.current_state()?;
        for op in update::plan(&current, &wanted, &reclaimed) {
            self.run(&op)?;
        }
        self.set_steer_targets(uplinks, &slots)?;
        Ok(slots)
    }

    /// Where steer mode sends each slot's packets; slots no uplink holds
    /// send none. Written after the owners: a packet that meets a stale or
    /// empty entry is counted `steer_failed` and passes, never misrouted
    /// to a removed uplink's index for long.
    fn set_steer_targets(
        &mut self,
        uplinks: &[GuardUplink],
        slots: &BTreeMap<String, u32>,
    ) -> Result<(), GuardError> {
        let mut entries = vec![SteerTarget::NONE; MAX_UPLINKS as usize];
        for uplink in uplinks {
            if let Some(entry) = slots.get(&uplink.interface).and_then(|slot| entries.get_mut(*slot as usize))
            {
                *entry = uplink.steer_to.entry(uplink.ifindex, uplink.l3);
            }
        }
        for (slot, entry) in (0..MAX_UPLINKS).zip(entries) {
            let current = self.steer.get(&slot, 0).map_err(map_error(STEER_MAP))?;
            if current != entry {
                self.steer.set(slot, entry, 0).map_err(map_error(STEER_MAP))?;
            }
        }
        Ok(())
    }

    /// What the maps hold now (enabled entries, owners, allow prefixes).
    fn current_state(&self) -> Result<MapState, GuardError> {
        let mut state = MapState::default();
        for (index, entry) in self.uplinks.iter().enumerate() {
            let entry = entry.map_err(map_error("MHR_UPLINKS"))?;
            if entry.enabled != 0 {
                state.uplinks.insert(u32::try_from(index).unwrap_or(u32::MAX), entry);
            }
        }
        for item in self.uplinks_high.iter() {
            let (index, entry) = item.map_err(map_error("MHR_UPLINKS_HIGH"))?;
            state.uplinks.insert(index, entry);
        }
        state.owners_v4 =
            self.owners_v4.iter().collect::<Result<_, _>>().map_err(map_error("MHR_OWNERS_V4"))?;
        state.owners_v6 =
            self.owners_v6.iter().collect::<Result<_, _>>().map_err(map_error("MHR_OWNERS_V6"))?;
        let keys_v4: Vec<Key<AllowV4>> =
            self.allow_v4.keys().collect::<Result<_, _>>().map_err(map_error("MHR_ALLOW_V4"))?;
        state.allow_v4 = keys_v4.iter().map(|key| (key.prefix_len(), key.data())).collect();
        let keys_v6: Vec<Key<AllowV6>> =
            self.allow_v6.keys().collect::<Result<_, _>>().map_err(map_error("MHR_ALLOW_V6"))?;
        state.allow_v6 = keys_v6.iter().map(|key| (key.prefix_len(), key.data())).collect();
        Ok(state)
    }

    fn run(&mut self, op: &MapOp) -> Result<(), GuardError> {
        let uplinks = map_error("MHR_UPLINKS");
        let high = map_error("MHR_UPLINKS_HIGH");
        match op {
            MapOp::DisableUplink(index) if *index < MAX_IFINDEX => {
                self.uplinks.set(*index, UplinkGuard::DISABLED, 0).map_err(uplinks)
            }
            MapOp::DisableUplink(index) => ignore_missing(self.uplinks_high.remove(index)).map_err(high),
            MapOp::ClearSlot(slot) => self.clear_slot(*slot),
            MapOp::SetOwnerV4(address, slot) => {
                self.owners_v4.insert(address, slot, 0).map_err(map_error("MHR_OWNERS_V4"))
            }
            MapOp::SetOwnerV6(address, slot) => {
                self.owners_v6.insert(address, slot, 0).map_err(map_error("MHR_OWNERS_V6"))
            }
            MapOp::AddAllowV4(bits, key) => {
                self.allow_v4.insert(&Key::new(*bits, *key), 1, 0).map_err(map_error("MHR_ALLOW_V4"))
            }
            MapOp::AddAllowV6(bits, key) => {
                self.allow_v6.insert(&Key::new(*bits, *key), 1, 0).map_err(map_error("MHR_ALLOW_V6"))
            }
            MapOp::SetUplink(index, entry) if *index < MAX_IFINDEX => {
                self.uplinks.set(*index, *entry, 0).map_err(uplinks)
            }
            MapOp::SetUplink(index, entry) => self.uplinks_high.insert(index, entry, 0).map_err(high),
            MapOp::RemoveOwnerV4(address) => {
                ignore_missing(self.owners_v4.remove(address)).map_err(map_error("MHR_OWNERS_V4"))
            }
            MapOp::RemoveOwnerV6(address) => {
                ignore_missing(self.owners_v6.remove(address)).map_err(map_error("MHR_OWNERS_V6"))
            }
            MapOp::RemoveAllowV4(bits, key) => ignore_missing(self.allow_v4.remove(&Key::new(*bits, *key)))
                .map_err(map_error("MHR_ALLOW_V4")),
            MapOp::RemoveAllowV6(bits, key) => ignore_missing(self.allow_v6.remove(&Key::new(*bits, *key)))
                .map_err(map_error("MHR_ALLOW_V6")),
        }
    }

    /// The same interface keeps its slot (and counters) across runs; new
    /// ones take a free slot, or the slot of an uplink no longer configured
    /// (returned as reclaimed: it is cleared before its new uplink counts).
    fn assign_slots(
        &mut self,
        uplinks: &[GuardUplink],
    ) -> Result<(BTreeMap<String, u32>, BTreeSet<u32>), GuardError> {
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
        let mut reclaimed = BTreeSet::new();
        for uplink in uplinks {
            if slots.contains_key(&uplink.interface) {
                continue;
            }
            let slot = match free.pop() {
                Some(slot) => slot,
                None => {
                    let slot = reclaimable.pop().ok_or(GuardError::TooManyUplinks)?;
                    reclaimed.insert(slot);
                    slot
                }
            };
            self.slot_names
                .set(slot, encode_name(&uplink.interface), 0)
                .map_err(map_error("MHR_SLOT_NAMES"))?;
            slots.insert(uplink.interface.clone(), slot);
        }
        Ok((slots, reclaimed))
    }
}

/// The entries, owners and allow prefixes that describe `uplinks`.
fn wanted_state(uplinks: &[GuardUplink], slots: &BTreeMap<String, u32>) -> MapState {
    let mut state = MapState::default();
    for uplink in uplinks {
        let slot = slots[&uplink.interface];
        let mut entry = UplinkGuard { enabled: 1, slot, ..UplinkGuard::DISABLED };
        uplink.enforcement.write(&mut entry);
        entry.l3 = u8::from(uplink.l3);
        for address in &uplink.addresses {
            match address {
                IpAddr::V4(v4) => {
                    let word = u32::from_ne_bytes(v4.octets());
                    if usize::from(entry.v4_count) < INLINE_V4 {
                        entry.v4[usize::from(entry.v4_count)] = word;
                        entry.v4_count += 1;
                    }
                    state.owners_v4.insert(word, slot);
                }
                IpAddr::V6(v6) => {
                    let words = ipv6_words(v6.octets());
                    if usize::from(entry.v6_count) < INLINE_V6 {
                        entry.v6[usize::from(entry.v6_count)] = words;
                        entry.v6_count += 1;
                    }
                    state.owners_v6.insert(words, slot);
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
                    state.allow_v4.insert((bits, AllowV4 { slot: slot_bytes, address: net.addr().octets() }));
                }
                IpNet::V6(net) => {
                    entry.allow_v6 = 1;
                    state.allow_v6.insert((bits, AllowV6 { slot: slot_bytes, address: net.addr().octets() }));
                }
            }
        }
        state.uplinks.insert(uplink.ifindex, entry);
    }
    state
}

/// A removal of something already gone is no error.
fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(ref error)) if error.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other,
    }
}

impl GuardMaps {
    /// Per ifindex, how the guard enforces on each enabled interface.
    pub fn enforcement(&self) -> Result<BTreeMap<u32, Enforcement>, GuardError> {
        let mut modes = BTreeMap::new();
        for (index, entry) in self.uplinks.iter().enumerate() {
            let entry = entry.map_err(map_error("MHR_UPLINKS"))?;
            if entry.enabled != 0 {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                modes.insert(index, Enforcement::of(&entry));
            }
        }
        for item in self.uplinks_high.iter() {
            let (index, entry) = item.map_err(map_error("MHR_UPLINKS_HIGH"))?;
            if entry.enabled != 0 {
                modes.insert(index, Enforcement::of(&entry));
            }
        }
        Ok(modes)
    }

    /// Sets every enabled interface's enforcement to `modes`; interfaces
    /// `modes` does not name only count (monitor).
    pub fn set_enforcement(&mut self, modes: &BTreeMap<u32, Enforcement>) -> Result<(), GuardError> {
        let apply = |index: u32, mut entry: UplinkGuard| {
            modes.get(&index).copied().unwrap_or_default().write(&mut entry);
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
