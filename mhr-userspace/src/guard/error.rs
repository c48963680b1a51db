//! The guard's errors, each naming the object it is about.

use std::path::PathBuf;

use aya::{maps::MapError, pin::PinError, programs::ProgramError};
use mhr_common::guard::{MAX_OWNERS, MAX_UPLINKS};

use super::pins::StalePin;

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
    #[error("{count} {family} addresses on the uplinks; the guard holds at most {MAX_OWNERS}")]
    TooManyAddresses { family: &'static str, count: usize },
    #[error(
        "pin_dir {path} is not on a bpffs ({found} is not); mount one there or point pin_dir under /sys/fs/bpf"
    )]
    NotBpffs { path: PathBuf, found: PathBuf },
    #[error("counting CPUs")]
    Cpus(#[source] std::io::Error),
    #[error("attaching the guard to `{interface}` failed: {step}")]
    Attach {
        interface: String,
        step: AttachStep,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("opening the pinned map {path}")]
    OpenPin {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("pinning {path} again failed (is {path} still on a bpffs?)")]
    Repin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    /// The link stays attached: this instance still holds it.
    #[error("pinning the link {path} again failed (is {path} still on a bpffs?); the guard stays attached")]
    RepinLink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing the guard's pins under {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the map definitions of the guard object")]
    Object(#[source] aya_obj::ParseError),
    #[error("{pin}, still used by {users}; `mhr down --purge-pins` or remove it")]
    StalePin { pin: StalePin, users: String },
    #[error("removing pins of another layout version: {path}")]
    OtherVersion {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no tracefs with TCP events (mount one at /sys/kernel/tracing)")]
    NoTracefs,
    #[error("reading the tracepoint format {path}")]
    TraceFormat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the tracepoint format {path} has no field `{field}`")]
    TraceField { path: PathBuf, field: &'static str },
}

/// The step of attaching an uplink's guard that failed.
#[derive(Debug)]
pub enum AttachStep {
    /// Opening the link pinned by an earlier instance.
    OpenPin(PathBuf),
    /// The pin holds something other than a TC link.
    NotTcLink(PathBuf),
    /// Putting the new program behind the pinned link.
    Replace,
    /// Taking the new link from the program.
    TakeLink,
    /// Pinning the new link.
    Pin(PathBuf),
    /// Attaching through TCX.
    Tcx,
    /// Attaching as a clsact filter.
    Clsact,
}

impl std::fmt::Display for AttachStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OpenPin(path) => write!(f, "opening {}", path.display()),
            Self::NotTcLink(path) => write!(f, "{} is not a TC link", path.display()),
            Self::Replace => f.write_str("replacing the program"),
            Self::TakeLink => f.write_str("taking the new link"),
            Self::Pin(path) => write!(f, "pinning {}", path.display()),
            Self::Tcx => f.write_str("TCX"),
            Self::Clsact => f.write_str("clsact"),
        }
    }
}
