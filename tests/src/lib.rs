//! Throwaway hosts in network namespaces: the seed lab and the pieces the
//! privileged tests build from. Used by the integration tests in `tests/`
//! and by `cargo xtask lab`.
//!
//! Fixtures shell out to `ip` and `nft`, and the DHCP lab runs dnsmasq and
//! dhcpcd (the product never does).

pub mod dhcp;
pub mod frames;
pub mod managers;
pub mod many_uplinks;
pub mod measure;
pub mod mount;
pub mod netns;
pub mod probe;
pub(crate) mod process;
pub mod quiet_host;
pub mod raw;
pub mod seed_lab;
pub mod servers;
pub mod temp_dir;
pub mod traffic;
pub mod tun;

use std::process::{Command, Output};

pub use netns::Netns;
pub use seed_lab::SeedLab;
pub use temp_dir::TempDir;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: std::process::ExitStatus, stderr: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected output from `{command}`: {output}")]
    Parse { command: String, output: String },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Renders a command the way a person would type it.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion; fails unless it exits 0.
pub(crate) fn checked(command: &mut Command) -> Result<Output> {
    checked_with_input(command, "")
}

/// Runs a command with `input` on its stdin; fails unless it exits 0.
pub(crate) fn checked_with_input(command: &mut Command, input: &str) -> Result<Output> {
    use std::{io::Write as _, process::Stdio};

    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown = describe(command);
    let mut child = command.spawn().map_err(LabError::io(format!("could not start `{shown}`")))?;
    if let Some(mut stdin) = child.stdin.take()
        && !input.is_empty()
    {
        stdin.write_all(input.as_bytes()).map_err(LabError::io(format!("feeding `{shown}`")))?;
    }
    let output = child.wait_with_output().map_err(LabError::io(format!("waiting for `{shown}`")))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: shown,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Privileged tests need root; they fail (never skip) without it, so a
/// run that could not check anything is never green.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { nix::libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this privileged test needs root (network namespaces, bpf): run it through `cargo xtask test` as root"
    );
}
