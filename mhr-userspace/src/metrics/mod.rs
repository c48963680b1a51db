//! Prometheus metrics: the control plane's counters, kept in a registry,
//! and the data path's, read from the guard's pinned maps at scrape time
//! (ebpf_exporter's pull model: no background copy).
//!
//! - `routing`: the control plane's metrics ([`ControlMetrics`]), updated by
//!   the daemon (reconciles, health, failovers, guard repairs).
//! - `guard`: the data path's, read from the guard's maps on each scrape
//!   ([`GuardCollector`]).
//! - `probes`: per probe target, the round-trip histogram and the loss.
//! - `tcp`: per uplink, passive TCP round trips and retransmissions (part
//!   of the guard's scrape).
//! - `daemon`: the registry behind `/metrics` and its rendering.

mod daemon;
mod guard;
mod probes;
mod routing;
mod tcp;

pub use daemon::{registry, render};
pub use guard::{DATAPATH_METRICS, GuardCollector};
pub use probes::ProbeMetrics;
pub use routing::ControlMetrics;

pub(crate) type Labels = Vec<(String, String)>;

pub(crate) fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[cfg(test)]
mod tests;
