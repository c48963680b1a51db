//! Attaching an egress classifier (the monitor's counter; the guard builds
//! on these too): TCX where the kernel has it (≥ 6.6), otherwise a filter
//! on the clsact qdisc.

use std::{fmt, io};

use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    tc::{self, NlOptions, TcAttachOptions, TcError},
};

/// Why an attachment failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("no interface named `{0}`")]
    UnknownInterface(String),
    #[error("attaching to `{interface}` via {mechanism} failed")]
    Attach {
        interface: String,
        mechanism: Mechanism,
        #[source]
        source: ProgramError,
    },
    #[error("adding the clsact qdisc to `{interface}` failed")]
    Clsact {
        interface: String,
        #[source]
        source: TcError,
    },
}

/// How to attach: a config value (`[guard] attach`), defined with the
/// config so that the config does not import the guard.
pub use crate::config::AttachMode;

/// The mechanism an attachment ended up using.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    Tcx,
    Clsact,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

pub fn attach_egress(
    program: &mut SchedClassifier,
    interface: &str,
    mode: AttachMode,
) -> Result<Mechanism, AttachError> {
    match mode {
        AttachMode::Tcx => attach_tcx(program, interface).map(|()| Mechanism::Tcx),
        AttachMode::Clsact => attach_clsact(program, interface).map(|()| Mechanism::Clsact),
        AttachMode::Auto => match attach_tcx(program, interface) {
            Ok(()) => Ok(Mechanism::Tcx),
            Err(AttachError::Attach { source, .. }) if tcx_unsupported(&source) => {
                tracing::info!(interface, error = %source, "TCX unavailable, falling back to clsact");
                attach_clsact(program, interface).map(|()| Mechanism::Clsact)
            }
            Err(err) => Err(err),
        },
    }
}

fn attach_tcx(program: &mut SchedClassifier, interface: &str) -> Result<(), AttachError> {
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    program.attach_with_options(interface, TcAttachType::Egress, options).map(drop).map_err(|source| {
        AttachError::Attach { interface: interface.to_owned(), mechanism: Mechanism::Tcx, source }
    })
}

fn attach_clsact(program: &mut SchedClassifier, interface: &str) -> Result<(), AttachError> {
    ensure_clsact(interface)
        .map_err(|source| AttachError::Clsact { interface: interface.to_owned(), source })?;
    let options = TcAttachOptions::Netlink(NlOptions::default());
    program.attach_with_options(interface, TcAttachType::Egress, options).map(drop).map_err(|source| {
        AttachError::Attach { interface: interface.to_owned(), mechanism: Mechanism::Clsact, source }
    })
}

/// Adds the clsact qdisc unless the interface already has it.
pub(crate) fn ensure_clsact(interface: &str) -> Result<(), TcError> {
    match tc::qdisc_add_clsact(interface) {
        Err(TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Kernels without TCX reject the link type with EINVAL (unknown attach
/// type) or EOPNOTSUPP.
pub(crate) fn tcx_unsupported(error: &ProgramError) -> bool {
    let ProgramError::SyscallError(syscall) = error else {
        return false;
    };
    matches!(syscall.io_error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
        || syscall.io_error.kind() == io::ErrorKind::Unsupported
}

/// Resolves an interface name in the calling thread's network namespace.
pub fn interface_index(interface: &str) -> Result<u32, AttachError> {
    let unknown = || AttachError::UnknownInterface(interface.to_owned());
    let name = std::ffi::CString::new(interface).map_err(|_| unknown())?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}
