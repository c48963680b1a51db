//! The plain per-interface egress counter behind `mhr monitor` (not the
//! guard's monitor mode): load its eBPF object, attach the egress
//! classifier to interfaces, read what it counted.

use aya::{
    Ebpf, EbpfError,
    maps::{MapData, MapError, PerCpuArray},
    programs::{ProgramError, SchedClassifier},
};
use mhr_common::{EGRESS_PROGRAM, INTERFACE_COUNTERS_MAP, InterfaceCounters, counter_slot};

use super::tc::{self, AttachError, AttachMode, Mechanism, interface_index};

/// The eBPF object built by `build.rs` from the mhr-ebpf crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mhr-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("loading the eBPF object failed (is this root with CAP_BPF?)")]
    Load(#[source] EbpfError),
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("program `{name}` is not a TC classifier")]
    ProgramType {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("loading program `{name}` into the kernel failed")]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map `{name}` has an unexpected type or layout")]
    MapType {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("reading counters of `{interface}` failed")]
    ReadCounters {
        interface: String,
        #[source]
        source: MapError,
    },
}

/// One interface the classifier is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    pub ifindex: u32,
    pub mechanism: Mechanism,
}

/// Counters of one attached interface, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceReport {
    pub attachment: Attachment,
    pub counters: InterfaceCounters,
}

/// The loaded eBPF object with its program and maps resolved once.
///
/// Dropping it detaches every attachment it made.
pub struct EgressCounter {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, InterfaceCounters>,
    attachments: Vec<Attachment>,
}

impl EgressCounter {
    /// Loads the object and its egress program into the kernel (not attached).
    pub fn load() -> Result<Self, CounterError> {
        Self::load_object(EBPF_OBJECT)
    }

    fn load_object(object: &[u8]) -> Result<Self, CounterError> {
        let mut ebpf = Ebpf::load(object).map_err(CounterError::Load)?;
        let map =
            ebpf.take_map(INTERFACE_COUNTERS_MAP).ok_or(CounterError::MissingMap(INTERFACE_COUNTERS_MAP))?;
        let counters = PerCpuArray::try_from(map)
            .map_err(|source| CounterError::MapType { name: INTERFACE_COUNTERS_MAP, source })?;
        let mut monitor = Self { ebpf, counters, attachments: Vec::new() };
        monitor
            .egress_program()?
            .load()
            .map_err(|source| CounterError::ProgramLoad { name: EGRESS_PROGRAM, source })?;
        Ok(monitor)
    }

    /// The egress classifier, for attaching or for `BPF_PROG_TEST_RUN`.
    pub fn egress_program(&mut self) -> Result<&mut SchedClassifier, CounterError> {
        self.ebpf
            .program_mut(EGRESS_PROGRAM)
            .ok_or(CounterError::MissingProgram(EGRESS_PROGRAM))?
            .try_into()
            .map_err(|source| CounterError::ProgramType { name: EGRESS_PROGRAM, source })
    }

    /// Attaches the egress classifier to `interface`; see [`AttachMode`].
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<&Attachment, CounterError> {
        let ifindex = interface_index(interface)?;
        let program = self.egress_program()?;
        let mechanism = tc::attach_egress(program, interface, mode)?;
        self.attachments.push(Attachment { interface: interface.to_owned(), ifindex, mechanism });
        Ok(self.attachments.last().expect("pushed above"))
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Counters of every attached interface, summed over CPUs.
    pub fn reports(&self) -> Result<Vec<InterfaceReport>, CounterError> {
        self.attachments
            .iter()
            .map(|attachment| {
                let counters = self.counters_for_ifindex(attachment.ifindex).map_err(|source| {
                    CounterError::ReadCounters { interface: attachment.interface.clone(), source }
                })?;
                Ok(InterfaceReport { attachment: attachment.clone(), counters })
            })
            .collect()
    }

    /// Counters of the slot `ifindex` is counted in, summed over CPUs.
    pub fn counters_for_ifindex(&self, ifindex: u32) -> Result<InterfaceCounters, MapError> {
        let per_cpu = self.counters.get(&counter_slot(ifindex), 0)?;
        Ok(per_cpu.iter().fold(InterfaceCounters::default(), |sum, cpu| sum.merge(*cpu)))
    }
}
