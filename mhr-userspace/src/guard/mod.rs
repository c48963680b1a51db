//! The source guard's control side: load the object with its maps pinned,
//! fill the maps from the uplinks' addresses and `allow` prefixes, attach
//! to every uplink (replacing an earlier program atomically), read what it
//! counted, and remove it.

mod attach;
pub mod flags;
pub mod maps;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapError, lpm_trie::Key},
    programs::{ProgramError, SchedClassifier},
};
use ipnet::IpNet;
use mhr_common::{
    MAX_IFINDEX,
    guard::{
        AllowV4, AllowV6, EMPTY_PROGRAM, GUARD_PROGRAM, INLINE_V4, INLINE_V6, MAX_UPLINKS, UplinkGuard,
        ipv6_words,
    },
};

pub use attach::{GuardAttachment, teardown};
pub use maps::{EventCounts, GuardMaps, OffenderReport, PinLayout, VerdictCounts};

use crate::datapath::AttachMode;
use maps::{encode_name, map_error};

/// The guard's eBPF object, built by `build.rs` from mhr-ebpf's `mhr-guard`.
static GUARD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mhr-guard"));

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("creating the pin directory {path} failed (is bpffs mounted at /sys/fs/bpf?)")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the guard's eBPF object failed (pins under {pin_dir})")]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the guard object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("the guard object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("guard map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("guard program `{name}`")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("more than {MAX_UPLINKS} guarded uplinks")]
    TooManyUplinks,
    #[error("counting CPUs")]
    Cpus(#[source] std::io::Error),
    #[error("attaching the guard to `{interface}` failed: {reason}")]
    Attach { interface: String, reason: String },
    #[error("removing the guard's pins under {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the guard needs to know about one uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardUplink {
    pub interface: String,
    pub ifindex: u32,
    /// The uplink's own addresses.
    pub addresses: Vec<IpAddr>,
    pub allow: Vec<IpNet>,
    pub enforce: bool,
    pub enforce_asymmetric: bool,
}

/// The loaded guard object with its maps.
pub struct Guard {
    ebpf: Ebpf,
    pub maps: GuardMaps,
    layout: PinLayout,
}

impl Guard {
    /// Loads the object, reusing the maps pinned under `pin_dir` (so
    /// counters survive) or pinning new ones there.
    pub fn load(pin_dir: &Path) -> Result<Self, GuardError> {
        let layout = PinLayout::new(pin_dir);
        for dir in [layout.maps(), layout.links()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| GuardError::PinDir { path: dir.clone(), source })?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(layout.maps())
            .load(GUARD_OBJECT)
            .map_err(|source| GuardError::Load { pin_dir: pin_dir.to_owned(), source: Box::new(source) })?;
        let maps = GuardMaps::from_ebpf(&mut ebpf)?;
        let mut guard = Self { ebpf, maps, layout };
        for name in [GUARD_PROGRAM, EMPTY_PROGRAM] {
            guard.program(name)?.load().map_err(|source| GuardError::Program { name, source })?;
        }
        Ok(guard)
    }

    /// The guard program (`GUARD_PROGRAM`) or the empty baseline.
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, GuardError> {
        self.ebpf
            .program_mut(name)
            .ok_or(GuardError::MissingProgram(name))?
            .try_into()
            .map_err(|source| GuardError::Program { name, source })
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    /// Makes the maps describe exactly `uplinks`: slots, addresses, owners,
    /// allow prefixes. Returns each uplink's slot.
    pub fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<BTreeMap<String, u32>, GuardError> {
        let slots = self.assign_slots(uplinks)?;
        let mut enabled: BTreeMap<u32, UplinkGuard> = BTreeMap::new();
        let mut owners_v4: BTreeMap<u32, u32> = BTreeMap::new();
        let mut owners_v6: BTreeMap<[u64; 2], u32> = BTreeMap::new();
        let mut allow_v4: BTreeSet<(u32, [u8; 8])> = BTreeSet::new();
        let mut allow_v6: BTreeSet<(u32, [u8; 20])> = BTreeSet::new();
        for uplink in uplinks {
            let slot = slots[&uplink.interface];
            let mut entry = UplinkGuard { enabled: 1, slot, ..UplinkGuard::DISABLED };
            entry.enforce = u8::from(uplink.enforce);
            entry.enforce_asymmetric = u8::from(uplink.enforce_asymmetric);
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
                match prefix {
                    IpNet::V4(_) => entry.allow_v4 = 1,
                    IpNet::V6(_) => entry.allow_v6 = 1,
                }
                let bits = 32 + u32::from(prefix.prefix_len());
                let slot_bytes = slot.to_be_bytes();
                match prefix.addr() {
                    IpAddr::V4(v4) => {
                        let mut data = [0u8; 8];
                        data[..4].copy_from_slice(&slot_bytes);
                        data[4..].copy_from_slice(&v4.octets());
                        allow_v4.insert((bits, data));
                    }
                    IpAddr::V6(v6) => {
                        let mut data = [0u8; 20];
                        data[..4].copy_from_slice(&slot_bytes);
                        data[4..].copy_from_slice(&v6.octets());
                        allow_v6.insert((bits, data));
                    }
                }
            }
            enabled.insert(uplink.ifindex, entry);
        }
        self.write_uplinks(&enabled)?;
        sync_hash(&mut self.maps.owners_v4, &owners_v4, "MHR_OWNERS_V4")?;
        sync_hash(&mut self.maps.owners_v6, &owners_v6, "MHR_OWNERS_V6")?;
        self.sync_allow(&allow_v4, &allow_v6)?;
        Ok(slots)
    }

    /// The same interface keeps its slot (and counters) across runs; new
    /// ones take a free slot, or the slot of an uplink no longer configured.
    fn assign_slots(&mut self, uplinks: &[GuardUplink]) -> Result<BTreeMap<String, u32>, GuardError> {
        let names = self.maps.slot_names()?;
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
                    self.maps.reset_slot(slot)?;
                    slot
                }
            };
            self.maps
                .slot_names
                .set(slot, encode_name(&uplink.interface), 0)
                .map_err(map_error("MHR_SLOT_NAMES"))?;
            slots.insert(uplink.interface.clone(), slot);
        }
        Ok(slots)
    }

    fn write_uplinks(&mut self, enabled: &BTreeMap<u32, UplinkGuard>) -> Result<(), GuardError> {
        // Disable interfaces that are no longer uplinks, then write the rest.
        let mut stale = Vec::new();
        for (index, entry) in self.maps.uplinks.iter().enumerate() {
            let entry = entry.map_err(map_error("MHR_UPLINKS"))?;
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if entry.enabled != 0 && !enabled.contains_key(&index) {
                stale.push(index);
            }
        }
        for index in stale {
            self.maps.uplinks.set(index, UplinkGuard::DISABLED, 0).map_err(map_error("MHR_UPLINKS"))?;
        }
        let high: BTreeMap<u32, UplinkGuard> =
            enabled.iter().filter(|(index, _)| **index >= MAX_IFINDEX).map(|(i, e)| (*i, *e)).collect();
        sync_hash(&mut self.maps.uplinks_high, &high, "MHR_UPLINKS_HIGH")?;
        for (index, entry) in enabled.iter().filter(|(index, _)| **index < MAX_IFINDEX) {
            self.maps.uplinks.set(*index, *entry, 0).map_err(map_error("MHR_UPLINKS"))?;
        }
        Ok(())
    }

    fn sync_allow(
        &mut self,
        v4: &BTreeSet<(u32, [u8; 8])>,
        v6: &BTreeSet<(u32, [u8; 20])>,
    ) -> Result<(), GuardError> {
        let existing_v4: Vec<Key<AllowV4>> =
            self.maps.allow_v4.keys().collect::<Result<_, _>>().map_err(map_error("MHR_ALLOW_V4"))?;
        for key in existing_v4 {
            let data = key.data();
            let mut raw = [0u8; 8];
            raw[..4].copy_from_slice(&data.slot);
            raw[4..].copy_from_slice(&data.address);
            if !v4.contains(&(key.prefix_len(), raw)) {
                self.maps.allow_v4.remove(&key).map_err(map_error("MHR_ALLOW_V4"))?;
            }
        }
        for (bits, raw) in v4 {
            let mut key = AllowV4 { slot: [0; 4], address: [0; 4] };
            key.slot.copy_from_slice(&raw[..4]);
            key.address.copy_from_slice(&raw[4..]);
            self.maps.allow_v4.insert(&Key::new(*bits, key), 1, 0).map_err(map_error("MHR_ALLOW_V4"))?;
        }
        let existing_v6: Vec<Key<AllowV6>> =
            self.maps.allow_v6.keys().collect::<Result<_, _>>().map_err(map_error("MHR_ALLOW_V6"))?;
        for key in existing_v6 {
            let data = key.data();
            let mut raw = [0u8; 20];
            raw[..4].copy_from_slice(&data.slot);
            raw[4..].copy_from_slice(&data.address);
            if !v6.contains(&(key.prefix_len(), raw)) {
                self.maps.allow_v6.remove(&key).map_err(map_error("MHR_ALLOW_V6"))?;
            }
        }
        for (bits, raw) in v6 {
            let mut key = AllowV6 { slot: [0; 4], address: [0; 16] };
            key.slot.copy_from_slice(&raw[..4]);
            key.address.copy_from_slice(&raw[4..]);
            self.maps.allow_v6.insert(&Key::new(*bits, key), 1, 0).map_err(map_error("MHR_ALLOW_V6"))?;
        }
        Ok(())
    }

    /// Attaches the guard to every uplink: replaces the program behind a
    /// pinned link atomically, or attaches and pins a new link; links of
    /// interfaces that are no longer uplinks are removed.
    pub fn attach(
        &mut self,
        uplinks: &[GuardUplink],
        mode: AttachMode,
    ) -> Result<Vec<GuardAttachment>, GuardError> {
        let links_dir = self.layout.links();
        let mut attachments = Vec::with_capacity(uplinks.len());
        for uplink in uplinks {
            let program = self.program(GUARD_PROGRAM)?;
            attachments.push(attach::attach_uplink(program, uplink, mode, &links_dir)?);
        }
        attach::remove_stale_links(&links_dir, uplinks)?;
        Ok(attachments)
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
