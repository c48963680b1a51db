//! Pins are checked before they are trusted. aya reuses a map pinned
//! under the name it would create without looking at it, so a map another
//! mhr left there with another shape makes the verifier refuse the program
//! (a value size) or is adopted silently (a capacity). Before the object
//! loads, every pin it would reuse is compared with the object's own map
//! definition: type, key size, value size, max_entries.

use std::{
    collections::BTreeSet,
    fmt,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::{maps::MapInfo, programs::loaded_programs};
use aya_obj::{generated::bpf_map_type, maps::PinningType};

use super::{GuardError, sys};

/// The shape of one map, as the kernel reports it or the object defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// A pinned map that is not the one the guard object would create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePin {
    pub name: String,
    /// The directory it is pinned in.
    pub dir: PathBuf,
    /// What differs, e.g. "value size 96, expected 112".
    pub difference: String,
}

impl StalePin {
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

impl fmt::Display for StalePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pinned map {} under {} has {}: another mhr's",
            self.name,
            self.dir.display(),
            self.difference
        )
    }
}

fn type_name(map_type: u32) -> String {
    match bpf_map_type::try_from(map_type) {
        Ok(known) => format!("{known:?}").trim_start_matches("BPF_MAP_TYPE_").to_lowercase(),
        Err(_) => format!("type {map_type}"),
    }
}

impl MapShape {
    fn of(info: &MapInfo) -> Self {
        // MapType's discriminants are the kernel's numbers.
        let map_type = info.map_type().map_or(u32::MAX, |known| known as u32);
        Self {
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        }
    }

    /// The first way `self` (found) differs from `expected`, in words.
    pub fn difference(&self, expected: &Self) -> Option<String> {
        if self.map_type != expected.map_type {
            let (found, expected) = (type_name(self.map_type), type_name(expected.map_type));
            return Some(format!("map type {found}, expected {expected}"));
        }
        let fields = [
            ("key size", self.key_size, expected.key_size),
            ("value size", self.value_size, expected.value_size),
            ("capacity (max_entries)", self.max_entries, expected.max_entries),
        ];
        fields
            .iter()
            .find(|(_, found, expected)| found != expected)
            .map(|(field, found, expected)| format!("{field} {found}, expected {expected}"))
    }
}

/// The pinned maps the object defines, with the shape aya would create
/// them with (a ring buffer rounded to pages as aya rounds it).
pub fn expected_maps(object: &[u8]) -> Result<Vec<(String, MapShape)>, GuardError> {
    let parsed = aya_obj::Object::parse(object).map_err(GuardError::Object)?;
    let page = page_size();
    let mut maps: Vec<(String, MapShape)> = parsed
        .maps
        .iter()
        .filter(|(_, map)| map.pinning() == PinningType::ByName)
        .map(|(name, map)| {
            let mut shape = MapShape {
                map_type: map.map_type(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: map.max_entries(),
            };
            if shape.map_type == bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32 {
                shape.value_size = 0;
                shape.max_entries = shape.max_entries.div_ceil(page).next_power_of_two() * page;
            }
            (name.clone(), shape)
        })
        .collect();
    maps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(maps)
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096).max(1)
}

/// The pins in `maps_dir` the object would reuse and that differ from its
/// definition (or are not maps at all).
pub fn stale_pins(maps_dir: &Path, expected: &[(String, MapShape)]) -> Vec<(StalePin, Option<u32>)> {
    let mut stale = Vec::new();
    for (name, shape) in expected {
        let path = maps_dir.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let pin = |difference: String| StalePin { name: name.clone(), dir: maps_dir.to_owned(), difference };
        // MapInfo::from_pin unwraps a path with a NUL byte.
        if path.as_os_str().as_bytes().contains(&0) {
            continue;
        }
        match MapInfo::from_pin(&path) {
            Ok(info) => {
                if let Some(difference) = MapShape::of(&info).difference(shape) {
                    stale.push((pin(difference), Some(info.id())));
                }
            }
            Err(err) => stale.push((pin(format!("no map behind it ({err})")), None)),
        }
    }
    stale
}

/// Who else runs a program that uses map `map_id`: TCX links that are not
/// pinned in `links_dir` (those are mhr's own, replaced by the attach that
/// follows). Described for the error, empty when nothing else does.
pub fn other_users(map_id: u32, links_dir: &Path) -> Vec<String> {
    let programs: BTreeSet<u32> = loaded_programs()
        .flatten()
        .filter(|program| program.map_ids().ok().flatten().is_some_and(|ids| ids.contains(&map_id)))
        .map(|program| program.id())
        .collect();
    if programs.is_empty() {
        return Vec::new();
    }
    let ours: BTreeSet<u32> = std::fs::read_dir(links_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| match sys::inspect(&entry.path()) {
            Ok((sys::Pinned::Link(link), _)) => Some(link.id),
            _ => None,
        })
        .collect();
    aya::programs::loaded_links()
        .flatten()
        .filter(|link| programs.contains(&link.program_id()) && !ours.contains(&link.id()))
        .map(|link| {
            let place = sys::link_by_id(link.id())
                .ok()
                .and_then(|(info, _)| info.tcx_ifindex)
                .map_or(String::new(), |ifindex| format!(" on {}", sys::interface_name(ifindex)));
            format!("link {} (program {}){place}", link.id(), link.program_id())
        })
        .collect()
}

/// Checks the pins under `maps_dir` against the object. A stale pin that
/// nothing but mhr's own links (in `links_dir`) uses is removed, so that
/// the loader creates a new map, and returned; one still in use by
/// something else is an error naming it. The caller holds mhr's writer
/// lock: no other `apply` or `run` of this host uses the pins meanwhile.
pub fn replace_stale(maps_dir: &Path, links_dir: &Path, object: &[u8]) -> Result<Vec<StalePin>, GuardError> {
    // Nothing pinned yet (a first start): no object to parse, no delay.
    if std::fs::read_dir(maps_dir).map_or(true, |mut entries| entries.next().is_none()) {
        return Ok(Vec::new());
    }
    let expected = expected_maps(object)?;
    let mut replaced = Vec::new();
    for (pin, map_id) in stale_pins(maps_dir, &expected) {
        let users = map_id.map(|id| other_users(id, links_dir)).unwrap_or_default();
        if !users.is_empty() {
            return Err(GuardError::StalePin { pin, users: users.join(", ") });
        }
        let path = pin.path();
        std::fs::remove_file(&path).map_err(|source| GuardError::Remove { path, source })?;
        replaced.push(pin);
    }
    Ok(replaced)
}

/// What is wrong with the pins under `pin_dir`, read-only (for `status`):
/// stale maps in this version's tree and trees of other layout versions,
/// one line each, saying what puts it right.
pub fn diagnose(pin_dir: &Path) -> Vec<String> {
    let layout = super::PinLayout::new(pin_dir);
    let mut lines = Vec::new();
    for tree in super::versions::other_versions(pin_dir) {
        lines.push(format!(
            "pins of another layout version under {}: its guard may still run; `mhr apply` or `mhr down` removes it",
            tree.display()
        ));
    }
    if let Ok(expected) = expected_maps(super::GUARD_OBJECT) {
        for (pin, _) in stale_pins(&layout.maps(), &expected) {
            lines.push(format!("{pin}; `mhr apply` or `mhr run` replaces it"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use mhr_common::{
        MAX_IFINDEX,
        guard::{FLAGS_MAP, FLAGS_RING_BYTES, UPLINKS_MAP, UplinkGuard},
    };

    use super::*;

    const ARRAY: u32 = bpf_map_type::BPF_MAP_TYPE_ARRAY as u32;

    fn uplinks_shape() -> MapShape {
        MapShape {
            map_type: ARRAY,
            key_size: 4,
            value_size: size_of::<UplinkGuard>() as u32,
            max_entries: MAX_IFINDEX,
        }
    }

    #[test]
    fn the_object_defines_every_pinned_map_with_mhr_commons_shapes() {
        let maps = expected_maps(super::super::GUARD_OBJECT).unwrap();
        let shape = |name: &str| maps.iter().find(|(n, _)| n == name).map(|(_, shape)| *shape);
        assert_eq!(shape(UPLINKS_MAP), Some(uplinks_shape()));
        let ring = shape(FLAGS_MAP).unwrap();
        assert_eq!((ring.value_size, ring.max_entries), (0, FLAGS_RING_BYTES));
        let rtt = shape(mhr_common::guard::tcp::TCP_RTT_MAP).unwrap();
        let value = size_of::<mhr_common::guard::tcp::TcpRtt>() as u32;
        assert_eq!((rtt.value_size, rtt.max_entries), (value, mhr_common::guard::MAX_UPLINKS));
        let sent = shape(mhr_common::guard::tcp::TCP_SENT_MAP).unwrap();
        assert_eq!((sent.value_size, sent.max_entries), (8, mhr_common::guard::MAX_UPLINKS));
        assert_eq!(maps.len(), 17, "{maps:?}");
    }

    #[test]
    fn a_difference_names_the_first_field_that_differs_with_both_values() {
        let expected = uplinks_shape();
        assert_eq!(expected.difference(&expected), None);
        let value = MapShape { value_size: 96, max_entries: 1, ..expected };
        assert_eq!(value.difference(&expected).as_deref(), Some("value size 96, expected 112"));
        let capacity = MapShape { max_entries: 64, ..expected };
        assert_eq!(
            capacity.difference(&expected).as_deref(),
            Some("capacity (max_entries) 64, expected 4096")
        );
        let key = MapShape { key_size: 8, ..expected };
        assert_eq!(key.difference(&expected).as_deref(), Some("key size 8, expected 4"));
        let hash = MapShape { map_type: bpf_map_type::BPF_MAP_TYPE_HASH as u32, ..expected };
        assert_eq!(hash.difference(&expected).as_deref(), Some("map type hash, expected array"));
    }

    #[test]
    fn a_stale_pin_reads_as_one_line_naming_map_directory_and_values() {
        let pin = StalePin {
            name: UPLINKS_MAP.into(),
            dir: "/sys/fs/bpf/mhr/v1/maps".into(),
            difference: "value size 96, expected 112".into(),
        };
        assert_eq!(
            pin.to_string(),
            "pinned map MHR_UPLINKS under /sys/fs/bpf/mhr/v1/maps has value size 96, expected 112: another mhr's"
        );
        let error = GuardError::StalePin { pin, users: "link 7 (program 9) on eth0".into() };
        assert_eq!(
            error.to_string(),
            "pinned map MHR_UPLINKS under /sys/fs/bpf/mhr/v1/maps has value size 96, expected 112: another mhr's, still used by link 7 (program 9) on eth0; `mhr down --purge-pins` or remove it"
        );
    }
}
