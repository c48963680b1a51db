//! Attaching the guard so it outlives the process: TCX links pinned in
//! bpffs (`links/<interface>@<ifindex>`) and replaced atomically on the
//! next run, so no packet goes unguarded or uncounted. Without TCX (or
//! when configured), a clsact filter, which persists by itself and is
//! replaced in place too ([`super::clsact`]).

use std::{os::fd::OwnedFd, path::Path};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
};

use super::tc::{AttachMode, Mechanism, tcx_unsupported};
use super::{AttachStep, GuardError, GuardUplink, clsact};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardAttachment {
    pub interface: String,
    pub ifindex: u32,
    pub mechanism: Mechanism,
    /// An earlier guard program was replaced in place.
    pub replaced: bool,
}

pub(super) fn pin_name(uplink: &GuardUplink) -> String {
    link_pin(&uplink.interface, uplink.ifindex)
}

/// The name of the pin holding `interface`'s link (`interface@ifindex`): a
/// re-created interface, with another ifindex, gets a pin of its own.
pub fn link_pin(interface: &str, ifindex: u32) -> String {
    format!("{}{ifindex}", pin_prefix(interface))
}

/// The start of an interface's link pin name. bpffs refuses names with
/// dots (VLAN interfaces have them).
pub fn pin_prefix(interface: &str) -> String {
    format!("{}@", interface.replace('.', "_"))
}

/// The error of `uplink`'s failed `step`.
fn failed<E: std::error::Error + Send + Sync + 'static>(
    uplink: &GuardUplink,
    step: AttachStep,
) -> impl FnOnce(E) -> GuardError + '_ {
    move |source| GuardError::Attach { interface: uplink.interface.clone(), step, source: Box::new(source) }
}

/// Attaches (or replaces the program behind) `uplink`'s link. For TCX also
/// returns a descriptor on the pinned link: while it is held the link stays
/// attached even if its pin is removed, and it can be pinned again.
pub(super) fn attach_uplink(
    program: &mut SchedClassifier,
    uplink: &GuardUplink,
    mode: AttachMode,
    links_dir: &Path,
) -> Result<(GuardAttachment, Option<OwnedFd>), GuardError> {
    let attachment = |mechanism, replaced| GuardAttachment {
        interface: uplink.interface.clone(),
        ifindex: uplink.ifindex,
        mechanism,
        replaced,
    };
    let pin = links_dir.join(pin_name(uplink));
    if mode != AttachMode::Clsact && pin.exists() {
        let pinned = PinnedLink::from_pin(&pin).map_err(failed(uplink, AttachStep::OpenPin(pin.clone())))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(failed(uplink, AttachStep::NotTcLink(pin.clone())))?;
        let id = program.attach_to_link(link).map_err(failed(uplink, AttachStep::Replace))?;
        // The program would keep this link's fd; hold it through the pin instead.
        drop(program.take_link(id));
        let held = super::sys::obj_get(&pin).map_err(failed(uplink, AttachStep::OpenPin(pin.clone())))?;
        return Ok((attachment(Mechanism::Tcx, true), Some(held)));
    }
    if mode != AttachMode::Clsact {
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        match program.attach_with_options(&uplink.interface, TcAttachType::Egress, options) {
            Ok(id) => {
                let link = program.take_link(id).map_err(failed(uplink, AttachStep::TakeLink))?;
                let fd_link = FdLink::try_from(link).map_err(failed(uplink, AttachStep::TakeLink))?;
                let pinned = fd_link.pin(&pin).map_err(failed(uplink, AttachStep::Pin(pin.clone())))?;
                // Held as a descriptor of its own (see `Held::link`); the
                // pin keeps the link while this is opened.
                let held =
                    super::sys::obj_get(&pin).map_err(failed(uplink, AttachStep::OpenPin(pin.clone())))?;
                drop(pinned);
                return Ok((attachment(Mechanism::Tcx, false), Some(held)));
            }
            Err(err) if mode == AttachMode::Auto && tcx_unsupported(&err) => {
                tracing::info!(interface = %uplink.interface, error = %crate::Chain(&err), "TCX unavailable, falling back to clsact");
            }
            Err(err) => return Err(failed(uplink, AttachStep::Tcx)(err)),
        }
    }
    let replaced = clsact::attach(program, &uplink.interface, uplink.ifindex)
        .map_err(failed(uplink, AttachStep::Clsact))?;
    Ok((attachment(Mechanism::Clsact, replaced), None))
}

/// Unpins (and so detaches) the links of interfaces that are not uplinks
/// any more, or that came back with another ifindex.
pub(super) fn remove_stale_links(links_dir: &Path, uplinks: &[GuardUplink]) -> Result<(), GuardError> {
    let wanted: Vec<String> = uplinks.iter().map(pin_name).collect();
    let entries = std::fs::read_dir(links_dir)
        .map_err(|source| GuardError::Remove { path: links_dir.to_owned(), source })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            remove_pin(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_pin(path: &Path) -> Result<(), GuardError> {
    std::fs::remove_file(path).map_err(|source| GuardError::Remove { path: path.to_owned(), source })
}

/// Detaches the guard from every interface and removes its pins (maps
/// included: counters are gone afterwards). `interfaces` also lose any
/// clsact guard filter. Returns what was detached.
pub fn teardown(pin_dir: &Path, interfaces: &[String]) -> Result<Vec<String>, GuardError> {
    let layout = super::PinLayout::new(pin_dir);
    let mut detached = Vec::new();
    if let Ok(entries) = std::fs::read_dir(layout.links()) {
        for entry in entries.flatten() {
            remove_pin(&entry.path())?;
            detached.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    for interface in interfaces {
        let Ok(ifindex) = super::tc::interface_index(interface) else { continue };
        if clsact::detach_all(interface, ifindex) {
            detached.push(format!("{interface} (clsact)"));
        }
    }
    for dir in [layout.links(), layout.maps()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                remove_pin(&entry.path())?;
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir(&layout.root);
    let _ = std::fs::remove_dir(pin_dir);
    Ok(detached)
}
