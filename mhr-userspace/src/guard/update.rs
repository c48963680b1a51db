//! The order in which the guard's maps change, so that the program,
//! reading them while they change, never misclassifies a packet:
//!
//! 1. interfaces that are no longer uplinks stop being guarded (fail open);
//! 2. a slot taken over from a removed uplink loses that uplink's owners
//!    and allow prefixes, and its counters, flag budget and offenders are
//!    cleared before another uplink counts there;
//! 3. owners and allow prefixes are added (and moved) before the uplink
//!    entries that rely on them: an entry's inline addresses are always in
//!    the owner map too, so a torn or stale inline read still finds them;
//! 4. the uplink entries are written;
//! 5. owners and prefixes nobody has any more go last.
//!
//! [`plan`] is pure (unit- and property-tested); `GuardMaps::configure`
//! runs its operations on the kernel's maps.

use std::collections::{BTreeMap, BTreeSet};

use mhr_common::guard::{AllowV4, AllowV6, UplinkGuard};

/// What the maps hold that decides verdicts (counters aside).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    /// Enabled entries by ifindex.
    pub uplinks: BTreeMap<u32, UplinkGuard>,
    pub owners_v4: BTreeMap<u32, u32>,
    pub owners_v6: BTreeMap<[u64; 2], u32>,
    /// (LPM prefix length, key).
    pub allow_v4: BTreeSet<(u32, AllowV4)>,
    pub allow_v6: BTreeSet<(u32, AllowV6)>,
}

/// One change to the guard's maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    DisableUplink(u32),
    /// Zero a slot's counters, flag budget and offenders.
    ClearSlot(u32),
    SetOwnerV4(u32, u32),
    SetOwnerV6([u64; 2], u32),
    AddAllowV4(u32, AllowV4),
    AddAllowV6(u32, AllowV6),
    SetUplink(u32, UplinkGuard),
    RemoveOwnerV4(u32),
    RemoveOwnerV6([u64; 2]),
    RemoveAllowV4(u32, AllowV4),
    RemoveAllowV6(u32, AllowV6),
}

/// The operations that take the maps from `current` to `wanted`, in an
/// order safe for concurrent readers. `reclaimed`: slots that a removed
/// uplink had and a new one takes.
pub fn plan(current: &MapState, wanted: &MapState, reclaimed: &BTreeSet<u32>) -> Vec<MapOp> {
    let mut ops = Vec::new();
    let mut now = current.clone();
    for (&ifindex, entry) in &current.uplinks {
        if !wanted.uplinks.contains_key(&ifindex) || reclaimed.contains(&entry.slot) {
            ops.push(MapOp::DisableUplink(ifindex));
        }
    }
    for &slot in reclaimed {
        ops.push(MapOp::ClearSlot(slot));
        let slot_bytes = slot.to_be_bytes();
        for (address, _) in current.owners_v4.iter().filter(|(_, owner)| **owner == slot) {
            ops.push(MapOp::RemoveOwnerV4(*address));
            now.owners_v4.remove(address);
        }
        for (address, _) in current.owners_v6.iter().filter(|(_, owner)| **owner == slot) {
            ops.push(MapOp::RemoveOwnerV6(*address));
            now.owners_v6.remove(address);
        }
        for key in current.allow_v4.iter().filter(|(_, key)| key.slot == slot_bytes) {
            ops.push(MapOp::RemoveAllowV4(key.0, key.1));
            now.allow_v4.remove(key);
        }
        for key in current.allow_v6.iter().filter(|(_, key)| key.slot == slot_bytes) {
            ops.push(MapOp::RemoveAllowV6(key.0, key.1));
            now.allow_v6.remove(key);
        }
    }
    for (address, slot) in &wanted.owners_v4 {
        if now.owners_v4.get(address) != Some(slot) {
            ops.push(MapOp::SetOwnerV4(*address, *slot));
        }
    }
    for (address, slot) in &wanted.owners_v6 {
        if now.owners_v6.get(address) != Some(slot) {
            ops.push(MapOp::SetOwnerV6(*address, *slot));
        }
    }
    ops.extend(wanted.allow_v4.difference(&now.allow_v4).map(|(bits, key)| MapOp::AddAllowV4(*bits, *key)));
    ops.extend(wanted.allow_v6.difference(&now.allow_v6).map(|(bits, key)| MapOp::AddAllowV6(*bits, *key)));
    for (ifindex, entry) in &wanted.uplinks {
        if current.uplinks.get(ifindex) != Some(entry) || ops.contains(&MapOp::DisableUplink(*ifindex)) {
            ops.push(MapOp::SetUplink(*ifindex, *entry));
        }
    }
    for address in now.owners_v4.keys().filter(|a| !wanted.owners_v4.contains_key(a)) {
        ops.push(MapOp::RemoveOwnerV4(*address));
    }
    for address in now.owners_v6.keys().filter(|a| !wanted.owners_v6.contains_key(*a)) {
        ops.push(MapOp::RemoveOwnerV6(*address));
    }
    ops.extend(
        now.allow_v4.difference(&wanted.allow_v4).map(|(bits, key)| MapOp::RemoveAllowV4(*bits, *key)),
    );
    ops.extend(
        now.allow_v6.difference(&wanted.allow_v6).map(|(bits, key)| MapOp::RemoveAllowV6(*bits, *key)),
    );
    ops
}

/// `op` applied to a model of the maps (the tests' kernel).
pub fn apply(state: &mut MapState, op: &MapOp) {
    match op {
        MapOp::DisableUplink(ifindex) => drop(state.uplinks.remove(ifindex)),
        MapOp::ClearSlot(_) => {}
        MapOp::SetOwnerV4(address, slot) => drop(state.owners_v4.insert(*address, *slot)),
        MapOp::SetOwnerV6(address, slot) => drop(state.owners_v6.insert(*address, *slot)),
        MapOp::AddAllowV4(bits, key) => drop(state.allow_v4.insert((*bits, *key))),
        MapOp::AddAllowV6(bits, key) => drop(state.allow_v6.insert((*bits, *key))),
        MapOp::SetUplink(ifindex, entry) => drop(state.uplinks.insert(*ifindex, *entry)),
        MapOp::RemoveOwnerV4(address) => drop(state.owners_v4.remove(address)),
        MapOp::RemoveOwnerV6(address) => drop(state.owners_v6.remove(address)),
        MapOp::RemoveAllowV4(bits, key) => drop(state.allow_v4.remove(&(*bits, *key))),
        MapOp::RemoveAllowV6(bits, key) => drop(state.allow_v6.remove(&(*bits, *key))),
    }
}

#[cfg(test)]
mod tests {
    use mhr_common::guard::{INLINE_V4, Verdict};
    use proptest::prelude::*;

    use super::*;

    /// The program's IPv4 verdict on `ifindex` for `source`, as the kernel
    /// computes it; `torn`: as if the inline addresses were read mid-write.
    fn verdict(state: &MapState, ifindex: u32, source: u32, torn: bool) -> Option<Verdict> {
        let entry = state.uplinks.get(&ifindex)?;
        let inline = &entry.v4[..usize::from(entry.v4_count).min(INLINE_V4)];
        if !torn && inline.contains(&source) {
            return Some(Verdict::Ok);
        }
        Some(match state.owners_v4.get(&source) {
            Some(owner) if *owner == entry.slot => Verdict::Ok,
            Some(_) => Verdict::Asymmetric,
            None => Verdict::Spoofed,
        })
    }

    /// Uplink `i` (ifindex 10 + i) with IPv4 words `addresses`, the same
    /// numbers as IPv6 addresses, and an allow prefix of each family.
    fn state(uplinks: &[(u32, Vec<u32>)]) -> MapState {
        let mut state = MapState::default();
        for (i, (slot, addresses)) in uplinks.iter().enumerate() {
            let mut entry = UplinkGuard { enabled: 1, slot: *slot, ..UplinkGuard::DISABLED };
            for address in addresses {
                if usize::from(entry.v4_count) < INLINE_V4 {
                    entry.v4[usize::from(entry.v4_count)] = *address;
                    entry.v4_count += 1;
                }
                state.owners_v4.insert(*address, *slot);
                state.owners_v6.insert(v6(*address), *slot);
            }
            let slot_bytes = slot.to_be_bytes();
            state.allow_v4.insert((40, AllowV4 { slot: slot_bytes, address: [198, 18, i as u8, 0] }));
            state.allow_v6.insert((
                64,
                AllowV6 {
                    slot: slot_bytes,
                    address: [0x20, 1, 0xd, 0xb8, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                },
            ));
            state.uplinks.insert(10 + i as u32, entry);
        }
        state
    }

    fn v6(address: u32) -> [u64; 2] {
        [0x2001_0db8, u64::from(address)]
    }

    #[test]
    fn a_reclaimed_slot_loses_exactly_its_old_uplinks_owners_and_prefixes_and_nobody_elses() {
        // Slot 0's uplink (ifindex 10) goes; a new one (ifindex 12) takes
        // slot 0; slot 1's uplink (ifindex 11) stays as it is.
        let before = state(&[(0, vec![1, 2]), (1, vec![3])]);
        let mut after = state(&[(0, vec![]), (1, vec![3])]);
        let new = after.uplinks.remove(&10).unwrap();
        after.uplinks.insert(12, new);
        let ops = plan(&before, &after, &BTreeSet::from([0]));
        let entry = ops.iter().position(|op| matches!(op, MapOp::SetUplink(12, _))).unwrap();
        for gone in [
            MapOp::RemoveOwnerV4(1),
            MapOp::RemoveOwnerV4(2),
            MapOp::RemoveOwnerV6(v6(1)),
            MapOp::RemoveOwnerV6(v6(2)),
        ] {
            let at = ops.iter().position(|op| *op == gone).unwrap_or_else(|| panic!("{gone:?} in {ops:?}"));
            assert!(at < entry, "{gone:?} before slot 0 counts for its new uplink: {ops:?}");
        }
        let slot0 = 0u32.to_be_bytes();
        let removed_prefixes = ops[..entry]
            .iter()
            .filter(|op| match op {
                MapOp::RemoveAllowV4(_, key) => key.slot == slot0,
                MapOp::RemoveAllowV6(_, key) => key.slot == slot0,
                _ => false,
            })
            .count();
        assert_eq!(removed_prefixes, 2, "the old uplink's prefixes go before: {ops:?}");
        let touches_slot1 = |op: &MapOp| match op {
            MapOp::RemoveOwnerV4(a) => *a == 3,
            MapOp::RemoveOwnerV6(a) => *a == v6(3),
            MapOp::RemoveAllowV4(_, key) => key.slot == 1u32.to_be_bytes(),
            MapOp::RemoveAllowV6(_, key) => key.slot == 1u32.to_be_bytes(),
            _ => false,
        };
        assert!(!ops.iter().any(touches_slot1), "slot 1's uplink keeps everything: {ops:?}");
        let mut model = before.clone();
        ops.iter().for_each(|op| apply(&mut model, op));
        assert_eq!(model, after);
    }

    /// Every intermediate state, the first and the last included.
    fn states(current: &MapState, ops: &[MapOp]) -> Vec<MapState> {
        let mut all = vec![current.clone()];
        let mut state = current.clone();
        for op in ops {
            apply(&mut state, op);
            all.push(state.clone());
        }
        all
    }

    #[test]
    fn a_new_address_is_an_owner_before_its_uplink_entry_names_it() {
        let before = state(&[(0, vec![1]), (1, vec![2])]);
        let after = state(&[(0, vec![1, 3]), (1, vec![2])]);
        let ops = plan(&before, &after, &BTreeSet::new());
        let owner = ops.iter().position(|op| *op == MapOp::SetOwnerV4(3, 0)).unwrap();
        let entry = ops.iter().position(|op| matches!(op, MapOp::SetUplink(10, _))).unwrap();
        assert!(owner < entry, "{ops:?}");
        assert_eq!(ops.len(), 3, "only what changed (its IPv4 and IPv6 owners, its entry): {ops:?}");
    }

    #[test]
    fn a_reclaimed_slot_is_cleared_after_its_old_uplink_stops_and_before_the_new_one_counts() {
        let before = state(&[(0, vec![1, 2])]);
        // Uplink at ifindex 10 removed; a new one (ifindex 11) takes slot 0.
        let mut after = MapState::default();
        let entry = UplinkGuard {
            enabled: 1,
            slot: 0,
            v4_count: 1,
            v4: [5, 0, 0, 0, 0, 0, 0, 0],
            ..UplinkGuard::DISABLED
        };
        after.uplinks.insert(11, entry);
        after.owners_v4.insert(5, 0);
        let ops = plan(&before, &after, &BTreeSet::from([0]));
        let position = |wanted: &MapOp| ops.iter().position(|op| op == wanted).unwrap();
        assert!(position(&MapOp::DisableUplink(10)) < position(&MapOp::ClearSlot(0)));
        assert!(position(&MapOp::ClearSlot(0)) < position(&MapOp::SetUplink(11, entry)));
        assert!(position(&MapOp::RemoveOwnerV4(1)) < position(&MapOp::SetUplink(11, entry)), "{ops:?}");
        let mut model = before.clone();
        ops.iter().for_each(|op| apply(&mut model, op));
        assert_eq!(model, after);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Addresses drawn from a small pool so that they move between
        /// uplinks, appear and disappear; more than fit inline.
        #[test]
        fn no_packet_is_misclassified_while_the_maps_change(
            before in proptest::collection::vec(proptest::collection::btree_set(1u32..16, 0..10), 1..4),
            after in proptest::collection::vec(proptest::collection::btree_set(1u32..16, 0..10), 1..4),
        ) {
            // An address belongs to one uplink at a time.
            let exclusive = |uplinks: Vec<BTreeSet<u32>>| -> Vec<(u32, Vec<u32>)> {
                let mut seen = BTreeSet::new();
                uplinks.into_iter().enumerate().map(|(i, set)| {
                    (i as u32, set.into_iter().filter(|a| seen.insert(*a)).collect())
                }).collect()
            };
            let (before, after) = (exclusive(before), exclusive(after));
            let (current, wanted) = (state(&before), state(&after));
            let ops = plan(&current, &wanted, &BTreeSet::new());
            let owner = |uplinks: &[(u32, Vec<u32>)], address: u32| {
                uplinks.iter().position(|(_, addresses)| addresses.contains(&address))
            };
            for step in states(&current, &ops) {
                // An inline address its uplink keeps or gains is owned by
                // it in the owner map as long as the entry names it.
                for (ifindex, entry) in &step.uplinks {
                    for address in &entry.v4[..usize::from(entry.v4_count)] {
                        if owner(&after, *address) == Some((*ifindex - 10) as usize) {
                            prop_assert_eq!(step.owners_v4.get(address), Some(&entry.slot), "{}", address);
                        }
                    }
                }
                for address in 1u32..16 {
                    for torn in [false, true] {
                        // Kept by the same uplink: Ok throughout.
                        if let (Some(i), Some(j)) = (owner(&before, address), owner(&after, address))
                            && i == j
                        {
                            prop_assert_eq!(verdict(&step, 10 + i as u32, address, torn), Some(Verdict::Ok));
                        }
                        // Nobody's before or after: never Ok anywhere.
                        if owner(&before, address).is_none() && owner(&after, address).is_none() {
                            for ifindex in step.uplinks.keys() {
                                prop_assert_ne!(verdict(&step, *ifindex, address, torn), Some(Verdict::Ok));
                            }
                        }
                    }
                }
            }
            let mut model = current.clone();
            ops.iter().for_each(|op| apply(&mut model, op));
            prop_assert_eq!(model, wanted);
        }
    }
}
