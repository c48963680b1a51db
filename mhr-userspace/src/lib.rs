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
    Chain(err).to_string()
}

/// Displays an error with its sources (`{}` of a thiserror type shows only
/// its own words; `{:#}` is anyhow's and does nothing here): for logs,
/// `error = %Chain(&err)`.
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::southbound::{KernelError, ObserveError};

    #[test]
    fn a_chain_names_each_cause_once() {
        let err = ObserveError { what: "routes", source: KernelError::Refused(libc::EPERM) };
        let cause = std::io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(crate::error_chain(&err), format!("reading routes from the kernel failed: {cause}"));
        let wrapped = crate::engine::EngineError::from(err);
        assert_eq!(
            crate::Chain(&wrapped).to_string(),
            format!("reading routes from the kernel failed: {cause}"),
            "a transparent wrapper adds nothing"
        );
    }
}
