//! Passive TCP quality: the guard object's tracepoint programs on
//! `tcp:tcp_probe` and `tcp:tcp_retransmit_skb`, and what they counted
//! per uplink. The tracepoints' field offsets come from their `format`
//! files (they move between kernels) and go to the programs in a map.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::TracePoint,
};
use mhr_common::guard::tcp::{
    RTT_BUCKETS, TCP_LAYOUT_MAP, TCP_PROBE_PROGRAM, TCP_RETRANSMIT_PROGRAM, TCP_RETRANSMITS_MAP, TCP_RTT_MAP,
    TCP_SENT_MAP, TcpRtt, TcpTraceLayout,
};

use super::{Guard, GuardError, GuardMaps, maps::map_error};

/// Where tracefs is mounted: the modern place, then under debugfs.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// One uplink's TCP figures, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Round-trip samples per bucket (not cumulative).
    pub rtt_buckets: [u64; RTT_BUCKETS],
    pub rtt_sum_us: u64,
    pub retransmits: u64,
    /// TCP segments sent from the uplink's own addresses (counted while
    /// the tracepoints are attached).
    pub segments_sent: u64,
}

impl TcpCounts {
    pub fn rtt_samples(&self) -> u64 {
        self.rtt_buckets.iter().sum()
    }
}

/// The TCP maps of a guard (absent in pins made before they existed).
pub struct TcpMaps {
    pub layout: Array<MapData, TcpTraceLayout>,
    pub rtt: PerCpuArray<MapData, TcpRtt>,
    pub retransmits: PerCpuArray<MapData, u64>,
    /// `None` in pins made before it.
    pub sent: Option<PerCpuArray<MapData, u64>>,
}

impl GuardMaps {
    /// One slot's TCP figures; `None` when these pins have no TCP maps.
    pub fn tcp_counts(&self, slot: u32) -> Result<Option<TcpCounts>, GuardError> {
        let Some(tcp) = &self.tcp else { return Ok(None) };
        // Offsets are written when the tracepoints are first attached.
        if tcp.layout.get(&0, 0).map_err(map_error(TCP_LAYOUT_MAP))?.probe_saddr == 0 {
            return Ok(None);
        }
        let mut counts = TcpCounts::default();
        for cpu in tcp.rtt.get(&slot, 0).map_err(map_error(TCP_RTT_MAP))?.iter() {
            for (sum, add) in counts.rtt_buckets.iter_mut().zip(cpu.buckets) {
                *sum += add;
            }
            counts.rtt_sum_us += cpu.sum_us;
        }
        counts.retransmits =
            tcp.retransmits.get(&slot, 0).map_err(map_error(TCP_RETRANSMITS_MAP))?.iter().sum();
        if let Some(sent) = &tcp.sent {
            counts.segments_sent = sent.get(&slot, 0).map_err(map_error(TCP_SENT_MAP))?.iter().sum();
        }
        Ok(Some(counts))
    }

    /// Zeroes a slot's TCP figures before another uplink takes it.
    pub(super) fn clear_tcp_slot(&mut self, slot: u32, cpus: usize) -> Result<(), GuardError> {
        let Some(tcp) = &mut self.tcp else { return Ok(()) };
        let rtt =
            aya::maps::PerCpuValues::try_from(vec![TcpRtt::default(); cpus]).map_err(GuardError::Cpus)?;
        tcp.rtt.set(slot, rtt, 0).map_err(map_error(TCP_RTT_MAP))?;
        let zero = || aya::maps::PerCpuValues::try_from(vec![0u64; cpus]).map_err(GuardError::Cpus);
        tcp.retransmits.set(slot, zero()?, 0).map_err(map_error(TCP_RETRANSMITS_MAP))?;
        match &mut tcp.sent {
            Some(sent) => sent.set(slot, zero()?, 0).map_err(map_error(TCP_SENT_MAP)),
            None => Ok(()),
        }
    }
}

impl Guard {
    /// Attaches the TCP tracepoints (once per instance). Needs what loading
    /// the guard needs (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and a
    /// mounted tracefs; the links go with this instance.
    pub fn watch_tcp(&mut self) -> Result<(), GuardError> {
        if !self.tcp_links.is_empty() {
            return Ok(());
        }
        let layout = trace_layout()?;
        let tcp = self.maps.tcp.as_mut().ok_or(GuardError::MissingMap(TCP_LAYOUT_MAP))?;
        tcp.layout.set(0, layout, 0).map_err(map_error(TCP_LAYOUT_MAP))?;
        for (name, event) in
            [(TCP_PROBE_PROGRAM, "tcp_probe"), (TCP_RETRANSMIT_PROGRAM, "tcp_retransmit_skb")]
        {
            let program = self.tracepoint(name)?;
            if program.fd().is_err() {
                program.load().map_err(|source| GuardError::Program { name, source })?;
            }
            let link = program.attach("tcp", event).map_err(|source| GuardError::Program { name, source });
            match link {
                Ok(link) => self.tcp_links.push((name, link)),
                Err(err) => {
                    self.unwatch_tcp();
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Detaches the TCP tracepoints, and stops the guard counting sent
    /// segments (also what an earlier instance left on).
    pub fn unwatch_tcp(&mut self) {
        for (name, link) in std::mem::take(&mut self.tcp_links) {
            if let Ok(program) = self.tracepoint(name) {
                let _ = program.detach(link);
            }
        }
        if let Some(tcp) = self.maps.tcp.as_mut()
            && let Ok(mut layout) = tcp.layout.get(&0, 0)
            && layout.count_sent != 0
        {
            layout.count_sent = 0;
            if let Err(err) = tcp.layout.set(0, layout, 0) {
                tracing::warn!(error = %crate::Chain(&err), "the guard still counts sent TCP segments");
            }
        }
    }

    pub fn watches_tcp(&self) -> bool {
        !self.tcp_links.is_empty()
    }

    fn tracepoint(&mut self, name: &'static str) -> Result<&mut TracePoint, GuardError> {
        self.ebpf
            .program_mut(name)
            .ok_or(GuardError::MissingProgram(name))?
            .try_into()
            .map_err(|source| GuardError::Program { name, source })
    }
}

/// The fields the programs read, from this kernel's format files.
fn trace_layout() -> Result<TcpTraceLayout, GuardError> {
    let root = TRACEFS
        .iter()
        .map(Path::new)
        .find(|root| root.join("events/tcp").is_dir())
        .ok_or(GuardError::NoTracefs)?;
    let format = |event: &str| -> Result<(PathBuf, String), GuardError> {
        let path = root.join("events/tcp").join(event).join("format");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| GuardError::TraceFormat { path: path.clone(), source })?;
        Ok((path, text))
    };
    let (probe_path, probe) = format("tcp_probe")?;
    let (retransmit_path, retransmit) = format("tcp_retransmit_skb")?;
    let field = |path: &Path, text: &str, name: &'static str| {
        field_offset(text, name).ok_or_else(|| GuardError::TraceField { path: path.to_owned(), field: name })
    };
    Ok(TcpTraceLayout {
        probe_family: field(&probe_path, &probe, "family")?,
        probe_saddr: field(&probe_path, &probe, "saddr")?,
        probe_srtt: field(&probe_path, &probe, "srtt")?,
        retransmit_family: field(&retransmit_path, &retransmit, "family")?,
        retransmit_saddr: field(&retransmit_path, &retransmit, "saddr")?,
        retransmit_saddr_v6: field(&retransmit_path, &retransmit, "saddr_v6")?,
        count_sent: 1,
        _pad: 0,
    })
}

/// The offset of `name` in a tracepoint's format text, from a line like
/// `field:__u8 saddr[28]; offset:8; size:28; signed:0;`.
fn field_offset(format: &str, name: &str) -> Option<u16> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let last = declaration.split_whitespace().last()?;
        let field = last.split('[').next()?.trim_start_matches('*');
        if field != name {
            return None;
        }
        let offset = parts.find_map(|part| part.strip_prefix("offset:"))?;
        offset.trim().parse().ok().filter(|offset| *offset != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_PROBE: &str = "name: tcp_probe
ID: 2273
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:36;\tsize:28;\tsigned:0;
\tfield:__u16 family;\toffset:68;\tsize:2;\tsigned:0;
\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;
\tfield:const void * skaddr;\toffset:128;\tsize:8;\tsigned:0;
";

    #[test]
    fn field_offsets_come_from_the_format_text() {
        assert_eq!(field_offset(TCP_PROBE, "saddr"), Some(8));
        assert_eq!(field_offset(TCP_PROBE, "family"), Some(68));
        assert_eq!(field_offset(TCP_PROBE, "srtt"), Some(100));
        assert_eq!(field_offset(TCP_PROBE, "skaddr"), Some(128));
        assert_eq!(field_offset(TCP_PROBE, "saddr_v6"), None);
        assert_eq!(
            field_offset(TCP_PROBE, "common_type"),
            None,
            "offset 0 is never a field the programs read"
        );
    }
}
