//! mhr: policy routing enforcer for multihomed Linux hosts.
//!
//! The binary (`mhr`) is a thin CLI over these modules so the integration
//! tests can drive the same code in network namespaces.

pub mod datapath;
