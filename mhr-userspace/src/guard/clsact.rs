//! The guard as a clsact egress filter, for kernels without TCX (< 6.6)
//! or when `[guard] attach = "clsact"`. The filter has a fixed priority
//! and handle, so a new program replaces the old one in place (one netlink
//! change, no unguarded gap), and whether the kernel runs a given program
//! there is a filter dump away, so nothing is re-attached on trust.

use std::io;

use aya::programs::{
    SchedClassifier, TcAttachType,
    links::Link as _,
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
};
use mhr_common::guard::GUARD_PROGRAM;
use rtnetlink::{
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcFilterBpfOption, TcHandle as NlHandle, TcMessage, TcOption},
    },
    sys::protocols::NETLINK_ROUTE,
};

use super::tc::ensure_clsact;

/// The guard filter's priority on clsact egress: after filters other tools
/// add with explicit low priorities, before the kernel's automatic 49152.
pub const PRIORITY: u16 = 0xbf00;
/// The guard filter's handle at [`PRIORITY`].
pub const HANDLE: u32 = 1;
/// clsact's egress parent, `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`.
const CLSACT_EGRESS: u32 = 0xffff_fff3;

/// A BPF filter on an interface's clsact egress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    pub program_id: Option<u32>,
    pub program_name: Option<String>,
}

impl Filter {
    fn is_guard(&self) -> bool {
        self.program_name.as_deref() == Some(GUARD_PROGRAM)
    }
}

/// Why the guard could not be attached as a clsact filter.
#[derive(Debug, thiserror::Error)]
pub enum ClsactError {
    #[error("adding the clsact qdisc")]
    Qdisc(#[source] aya::programs::tc::TcError),
    #[error("listing clsact filters")]
    List(#[source] io::Error),
    #[error("attaching the clsact filter")]
    Filter(#[source] aya::programs::ProgramError),
    #[error("reading the existing clsact filter")]
    Existing(#[source] io::Error),
    #[error("replacing the clsact program")]
    Replace(#[source] aya::programs::ProgramError),
}

/// Attaches `program` as the guard filter on `interface`'s clsact egress,
/// replacing the program of an existing guard filter in place. Guard
/// filters left elsewhere (an earlier version's automatic priority) are
/// removed after. Returns whether a guard filter was there before.
pub fn attach(program: &mut SchedClassifier, interface: &str, ifindex: u32) -> Result<bool, ClsactError> {
    ensure_clsact(interface).map_err(ClsactError::Qdisc)?;
    let before = guard_filters(ifindex).map_err(ClsactError::List)?;
    let ours = |f: &Filter| f.priority == PRIORITY && f.handle == HANDLE;
    let handle = TcHandle::new((HANDLE >> 16) as u16, HANDLE as u16);
    let id = if before.iter().any(ours) {
        let link = SchedClassifierLink::attached(interface, TcAttachType::Egress, PRIORITY, handle, None)
            .map_err(ClsactError::Existing)?;
        program.attach_to_link(link).map_err(ClsactError::Replace)?
    } else {
        let options = NlOptions { priority: PRIORITY, handle, ..NlOptions::default() };
        program
            .attach_with_options(interface, TcAttachType::Egress, TcAttachOptions::Netlink(options))
            .map_err(ClsactError::Filter)?
    };
    // The filter stays when this process exits (its own persistence).
    let link = program.take_link(id).map_err(ClsactError::Filter)?;
    std::mem::forget(link);
    for stray in before.iter().filter(|f| !ours(f)) {
        detach(interface, stray);
    }
    Ok(!before.is_empty())
}

/// Removes every guard filter from `interface`'s clsact egress; true if
/// there was one.
pub fn detach_all(interface: &str, ifindex: u32) -> bool {
    let filters = guard_filters(ifindex).unwrap_or_default();
    for filter in &filters {
        detach(interface, filter);
    }
    !filters.is_empty()
}

/// Removes the BPF filters on `interface`'s clsact egress that run one of
/// `programs` (whatever their name or priority); returns those programs.
pub(super) fn detach_programs(
    interface: &str,
    ifindex: u32,
    programs: &std::collections::BTreeSet<u32>,
) -> Vec<u32> {
    let filters = egress_filters(ifindex).unwrap_or_default();
    let running: Vec<&Filter> =
        filters.iter().filter(|f| f.program_id.is_some_and(|id| programs.contains(&id))).collect();
    for filter in &running {
        detach(interface, filter);
    }
    running.iter().filter_map(|f| f.program_id).collect()
}

fn detach(interface: &str, filter: &Filter) {
    let handle = TcHandle::new((filter.handle >> 16) as u16, filter.handle as u16);
    let link = SchedClassifierLink::attached(interface, TcAttachType::Egress, filter.priority, handle, None);
    let failed = |err: &dyn std::error::Error| {
        tracing::warn!(interface, priority = filter.priority, error = %crate::Chain(err), "removing a guard clsact filter failed");
    };
    match link {
        Ok(link) => {
            if let Err(err) = link.detach() {
                failed(&err);
            }
        }
        Err(err) => failed(&err),
    }
}

/// Whether the kernel runs program `program_id` as a guard filter on
/// `ifindex`'s clsact egress.
pub fn runs(ifindex: u32, program_id: u32) -> io::Result<bool> {
    Ok(guard_filters(ifindex)?.iter().any(|f| f.program_id == Some(program_id)))
}

/// The guard filters (by program name) on `ifindex`'s clsact egress.
pub fn guard_filters(ifindex: u32) -> io::Result<Vec<Filter>> {
    Ok(egress_filters(ifindex)?.into_iter().filter(Filter::is_guard).collect())
}

/// `tc filter show dev IF egress`, BPF filters only.
fn egress_filters(ifindex: u32) -> io::Result<Vec<Filter>> {
    let mut request = TcMessage::with_index(i32::try_from(ifindex).map_err(io::Error::other)?);
    request.header.parent = NlHandle::from(CLSACT_EGRESS);
    crate::raw_netlink::dump(NETLINK_ROUTE, RouteNetlinkMessage::GetTrafficFilter(request), |message| {
        match message {
            RouteNetlinkMessage::NewTrafficFilter(filter) => bpf_filter(&filter),
            _ => None,
        }
    })
}

/// A BPF filter instance (not its priority's head entry, handle 0).
fn bpf_filter(message: &TcMessage) -> Option<Filter> {
    let handle = u32::from(message.header.handle);
    if handle == 0 {
        return None;
    }
    let options = message.attributes.iter().find_map(|attribute| match attribute {
        TcAttribute::Options(options) => Some(options),
        _ => None,
    })?;
    let mut filter =
        Filter { priority: (message.header.info >> 16) as u16, handle, program_id: None, program_name: None };
    for option in options {
        match option {
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.program_id = Some(*id),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => filter.program_name = Some(name.clone()),
            _ => {}
        }
    }
    (filter.program_id.is_some() || filter.program_name.is_some()).then_some(filter)
}
