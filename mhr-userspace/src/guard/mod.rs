//! The source guard's control side: load the object with its maps pinned,
//! fill the maps from the uplinks' addresses and `allow` prefixes, attach
//! to every uplink (replacing an earlier program atomically), read what it
//! counted, and remove it.

mod attach;
mod bpffs;
pub mod clsact;
mod configure;
pub mod counter;
mod deploy;
mod enforcement;
mod error;
pub mod flags;
pub mod maps;
pub mod pins;
pub mod plane;
pub mod retry;
mod steer;
mod sys;
pub mod tc;
pub mod tcp;
mod tcx_query;
pub mod update;
pub mod versions;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TcAttachType},
};
use ipnet::IpNet;
use mhr_common::guard::{EMPTY_PROGRAM, FLAGS_MAP, GUARD_PROGRAM, MAX_OWNERS, MAX_UPLINKS};

pub use attach::{GuardAttachment, link_pin, pin_prefix, teardown};
pub use deploy::Deployment;
pub use enforcement::Enforcement;
pub use error::{AttachStep, GuardError};
pub use maps::{EventCounts, GuardMaps, OffenderReport, PinLayout, VerdictCounts};
pub use steer::{SteerRoute, SteerVia};

use tc::{AttachMode, Mechanism};

/// The guard's eBPF object, built by `build.rs` from mhr-ebpf's `mhr-guard`.
static GUARD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mhr-guard"));

/// The license the guard object declares in its `license` section (the
/// loader would assume GPL without one).
pub fn object_license() -> Option<String> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(GUARD_OBJECT).ok()?;
    let data = file.section_by_name("license")?.data().ok()?;
    let text = data.split(|byte| *byte == 0).next()?;
    String::from_utf8(text.to_vec()).ok()
}

/// What the guard needs to know about one uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardUplink {
    pub interface: String,
    pub ifindex: u32,
    /// The uplink's own addresses.
    pub addresses: Vec<IpAddr>,
    pub allow: Vec<IpNet>,
    pub enforcement: Enforcement,
    /// Packets start at the IP header (tun, WireGuard, PPP, …).
    pub l3: bool,
    /// Where steer mode sends packets whose source this uplink owns.
    pub steer_to: SteerRoute,
}

/// The loaded guard object with its maps.
pub struct Guard {
    ebpf: Ebpf,
    pub maps: GuardMaps,
    layout: PinLayout,
    /// Links this instance attached or replaced, by pin name
    /// (name@ifindex), with the mechanism used.
    attached: BTreeMap<String, Held>,
    /// A second handle on every pinned map, to pin it again when its pin
    /// is removed (a deleted directory, a remounted bpffs): the same maps,
    /// so counters continue.
    map_pins: Vec<(String, MapData)>,
    /// What loading found wrong with the pins and put right, one line each.
    pin_notes: Vec<String>,
    /// The TCP tracepoints' links, while attached (passive health).
    tcp_links: Vec<(&'static str, aya::programs::trace_point::TracePointLinkId)>,
}

struct Held {
    mechanism: Mechanism,
    interface: String,
    ifindex: u32,
    /// TCX: a descriptor on the pinned link, held so that the link
    /// outlives its pin and can be pinned again from it (by a borrowed fd:
    /// a failed pin must not drop the only handle, which would detach it).
    link: Option<OwnedFd>,
}

impl Guard {
    /// Loads the object, reusing the maps pinned under `pin_dir` (so
    /// counters survive) or pinning new ones there. Pins are checked first
    /// ([`pins::replace_stale`], [`versions::remove_other_versions`]): the
    /// caller holds mhr's writer lock (`apply`, `run`).
    pub fn load(pin_dir: &Path) -> Result<Self, GuardError> {
        bpffs::ensure_bpffs(pin_dir)?;
        let layout = PinLayout::new(pin_dir);
        for dir in [layout.maps(), layout.links()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| GuardError::PinDir { path: dir.clone(), source })?;
        }
        let pin_notes = bpffs::check_pins(pin_dir, &layout, GUARD_OBJECT)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(layout.maps())
            .load(GUARD_OBJECT)
            .map_err(|source| GuardError::Load { pin_dir: pin_dir.to_owned(), source: Box::new(source) })?;
        let map_pins = bpffs::open_pinned_maps(&layout.maps())?;
        let maps = GuardMaps::from_ebpf(&mut ebpf)?;
        let mut guard = Self {
            ebpf,
            maps,
            layout,
            attached: Default::default(),
            map_pins,
            pin_notes,
            tcp_links: Vec::new(),
        };
        guard
            .program(GUARD_PROGRAM)?
            .load()
            .map_err(|source| GuardError::Program { name: GUARD_PROGRAM, source })?;
        Ok(guard)
    }

    /// What loading found wrong with the pins and put right: trees of
    /// other layout versions detached and removed, stale maps replaced.
    pub fn pin_notes(&self) -> &[String] {
        &self.pin_notes
    }

    /// Loads the empty classifier (`EMPTY_PROGRAM`), the benchmarks' baseline.
    pub fn load_empty(&mut self) -> Result<(), GuardError> {
        let name = EMPTY_PROGRAM;
        self.program(name)?.load().map_err(|source| GuardError::Program { name, source })
    }

    /// The guard program (`GUARD_PROGRAM`) or, once loaded, the empty baseline.
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, GuardError> {
        self.ebpf
            .program_mut(name)
            .ok_or(GuardError::MissingProgram(name))?
            .try_into()
            .map_err(|source| GuardError::Program { name, source })
    }

    /// Makes the maps describe exactly `uplinks` (see [`GuardMaps::configure`]).
    pub fn configure(&mut self, uplinks: &[GuardUplink]) -> Result<BTreeMap<String, u32>, GuardError> {
        self.maps.configure(uplinks)
    }

    /// Attaches the guard to every uplink: replaces the program behind a
    /// pinned link atomically, or attaches and pins a new link; links of
    /// interfaces that are no longer uplinks are removed.
    pub fn attach(
        &mut self,
        uplinks: &[GuardUplink],
        mode: AttachMode,
    ) -> Result<Vec<GuardAttachment>, GuardError> {
        self.attach_where(uplinks, mode, |_, _| true)
    }

    /// Like [`Guard::attach`], but leaves alone the links this instance
    /// already holds and the kernel still runs: for the daemon's
    /// reconcile, where only new or re-created interfaces (or a link or
    /// filter someone removed) need attaching.
    pub fn attach_missing(
        &mut self,
        uplinks: &[GuardUplink],
        mode: AttachMode,
    ) -> Result<Vec<GuardAttachment>, GuardError> {
        let links_dir = self.layout.links();
        let program_id = self.program(GUARD_PROGRAM)?.info().ok().map(|info| info.id());
        // A TCX link someone unpinned is gone; a clsact filter is asked
        // for (it has no pin).
        self.attach_where(uplinks, mode, |attached, pin| match attached.get(pin) {
            None => true,
            Some(held) if held.mechanism == Mechanism::Tcx => !links_dir.join(pin).exists(),
            Some(held) => program_id.is_none_or(|id| !clsact::runs(held.ifindex, id).unwrap_or(false)),
        })
    }

    /// Pin names (`interface@ifindex`) of the links this instance holds.
    pub fn held_pins(&self) -> BTreeSet<String> {
        self.attached.keys().cloned().collect()
    }

    /// Re-creates the pin directories and pins again the maps and links
    /// whose pins are gone (from the handles this instance holds: the same
    /// maps and links, never detached). Returns what was pinned again, as
    /// `map NAME` and `link PIN`.
    pub fn repair_pins(&mut self) -> Result<Vec<String>, GuardError> {
        for dir in [self.layout.maps(), self.layout.links()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| GuardError::PinDir { path: dir.clone(), source })?;
        }
        let maps_dir = self.layout.maps();
        let mut repinned = Vec::new();
        for (name, map) in &self.map_pins {
            let path = maps_dir.join(name);
            if !path.exists() {
                map.pin(&path).map_err(|source| GuardError::Repin { path: path.clone(), source })?;
                repinned.push(format!("map {name}"));
            }
        }
        let links_dir = self.layout.links();
        for (pin, held) in &mut self.attached {
            let path = links_dir.join(pin);
            if path.exists() {
                continue;
            }
            if let Some(link) = &held.link {
                sys::obj_pin(link.as_fd(), &path)
                    .map_err(|source| GuardError::RepinLink { path: path.clone(), source })?;
                repinned.push(format!("link {pin}"));
            }
        }
        Ok(repinned)
    }

    /// Whether every pin this instance relies on is in place.
    pub fn pins_intact(&self) -> bool {
        let (maps_dir, links_dir) = (self.layout.maps(), self.layout.links());
        self.map_pins.iter().all(|(name, _)| maps_dir.join(name).exists())
            && self
                .attached
                .iter()
                .all(|(pin, held)| held.mechanism != Mechanism::Tcx || links_dir.join(pin).exists())
    }

    /// Whether the kernel runs this instance's program on `interface`'s
    /// egress (a TCX link or the clsact guard filter).
    pub fn attached_in_kernel(&mut self, interface: &str) -> bool {
        self.kernel_runs_guard(interface).unwrap_or(false)
    }

    /// [`Guard::attached_in_kernel`], or `None` when the kernel could not
    /// be asked (the interface is gone).
    fn kernel_runs_guard(&mut self, interface: &str) -> Option<bool> {
        let (mechanism, ifindex) = self
            .attached
            .values()
            .find(|held| held.interface == interface)
            .map(|held| (held.mechanism, held.ifindex))?;
        let id = self.program(GUARD_PROGRAM).ok()?.info().ok()?.id();
        if mechanism == Mechanism::Clsact {
            return clsact::runs(ifindex, id).ok();
        }
        // By id only: opening programs by id needs CAP_SYS_ADMIN, which the
        // sandboxed daemon does not keep.
        let ids = tcx_query::egress_program_ids(tc::interface_index(interface).ok()?).ok()?;
        Some(ids.contains(&id))
    }

    /// Whether the kernel runs any mhr guard program on `interface`'s
    /// egress (TCX or clsact), this instance's or an earlier one's
    /// (`None`: cannot ask).
    pub fn kernel_runs_any_guard(interface: &str) -> Option<bool> {
        let ifindex = tc::interface_index(interface).ok()?;
        if !clsact::guard_filters(ifindex).ok()?.is_empty() {
            return Some(true);
        }
        if tcx_query::egress_program_ids(ifindex).ok()?.is_empty() {
            return Some(false);
        }
        // Names need the programs opened by id (CAP_SYS_ADMIN): sandboxed,
        // a TCX program of unknown name is "cannot ask".
        let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Egress).ok()?;
        Some(programs.iter().any(|program| program.name_as_str() == Some(GUARD_PROGRAM)))
    }

    /// Forgets (and unpins) the TCX links and clsact filters the kernel no
    /// longer runs this program behind, e.g. detached by hand, so that
    /// [`Guard::attach_missing`] attaches them again. Returns their pins.
    pub fn forget_detached(&mut self) -> Vec<String> {
        let held: Vec<(String, String)> =
            self.attached.iter().map(|(pin, held)| (pin.clone(), held.interface.clone())).collect();
        let links_dir = self.layout.links();
        let mut forgotten = Vec::new();
        for (pin, interface) in held {
            // An interface that is gone is for the stale-link clean-up.
            if self.kernel_runs_guard(&interface) == Some(false) {
                let _ = std::fs::remove_file(links_dir.join(&pin));
                self.attached.remove(&pin);
                forgotten.push(pin);
            }
        }
        forgotten
    }

    /// Whether this instance holds the guard on `interface`.
    pub fn holds(&self, interface: &str) -> bool {
        let prefix = attach::pin_prefix(interface);
        self.attached.keys().any(|pin| pin.starts_with(&prefix))
    }

    fn attach_where(
        &mut self,
        uplinks: &[GuardUplink],
        mode: AttachMode,
        needed: impl Fn(&BTreeMap<String, Held>, &str) -> bool,
    ) -> Result<Vec<GuardAttachment>, GuardError> {
        let links_dir = self.layout.links();
        let mut attachments = Vec::with_capacity(uplinks.len());
        for uplink in uplinks {
            let pin = attach::pin_name(uplink);
            if !needed(&self.attached, &pin) {
                continue;
            }
            let program = self.program(GUARD_PROGRAM)?;
            let (attachment, link) = attach::attach_uplink(program, uplink, mode, &links_dir)?;
            let held = Held {
                mechanism: attachment.mechanism,
                interface: uplink.interface.clone(),
                ifindex: uplink.ifindex,
                link,
            };
            self.attached.insert(pin, held);
            attachments.push(attachment);
        }
        attach::remove_stale_links(&links_dir, uplinks)?;
        let wanted: BTreeSet<String> = uplinks.iter().map(attach::pin_name).collect();
        self.attached.retain(|pin, _| wanted.contains(pin));
        Ok(attachments)
    }

    /// The ring buffer of flag records, for the one reader that drains it.
    pub fn take_flags(&mut self) -> Result<RingBuf<MapData>, GuardError> {
        let map = self.ebpf.take_map(FLAGS_MAP).ok_or(GuardError::MissingMap(FLAGS_MAP))?;
        RingBuf::try_from(map).map_err(|source| GuardError::Map { name: FLAGS_MAP, source })
    }
}

/// Refuses, before any change, uplinks whose addresses or count the
/// guard's maps cannot hold.
pub fn check_capacity(uplinks: &[GuardUplink]) -> Result<(), GuardError> {
    if uplinks.len() > MAX_UPLINKS as usize {
        return Err(GuardError::TooManyUplinks);
    }
    let addresses = |v4: bool| -> BTreeSet<IpAddr> {
        uplinks.iter().flat_map(|u| &u.addresses).filter(|a| a.is_ipv4() == v4).copied().collect()
    };
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let count = addresses(v4).len();
        if count > MAX_OWNERS as usize {
            return Err(GuardError::TooManyAddresses { family, count });
        }
    }
    Ok(())
}
