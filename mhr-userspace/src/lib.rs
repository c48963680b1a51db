//! mhr: policy routing enforcer for multihomed Linux hosts.
//!
//! The binary (`mhr`) is a thin shell over [`cli`] so the integration tests
//! can drive the same code in network namespaces.

pub mod apply;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod confirm;
pub mod connections;
pub mod daemon;
pub mod drain;
pub mod engine;
pub mod guard;
pub mod health;
pub mod init;
pub mod leases;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod neighbours;
pub mod netlink;
pub mod paths;
pub mod plan;
pub mod process_metrics;
pub mod raw_netlink;
pub mod sandbox;
pub mod southbound;
pub mod state;
pub mod status;
pub mod trust;

/// An error and its sources, one sentence: `writing X: No space left on device`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}
