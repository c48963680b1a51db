//! Empty library so mhr-userspace can name this crate as a build-dependency
//! (cargo then reruns its build.rs when the eBPF sources change).
#![no_std]
