//! The kernel's answer to a request that was not done: the errno it
//! refused with, or why no answer came. Plain data, so that the planner can
//! name it in its problems and the kernel model can hand it out.

/// A request the kernel refused (with its errno), one that never got an
/// answer, or an answer mhr could not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Refused(i32),
    /// The netlink socket failed (with the socket's errno) or the
    /// connection closed before the kernel answered (`None`).
    #[error("no answer from the kernel: {}", no_answer(*.errno))]
    NoAnswer { errno: Option<i32> },
    /// The kernel answered with something mhr cannot decode.
    #[error("the kernel's answer could not be read: {0}")]
    Unreadable(&'static str),
}

fn no_answer(errno: Option<i32>) -> String {
    match errno {
        Some(errno) => format!("the netlink socket failed: {}", std::io::Error::from_raw_os_error(errno)),
        None => "the netlink connection closed".to_owned(),
    }
}

impl KernelError {
    /// The kernel's refusal, if it refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused(errno) => Some(*errno),
            Self::NoAnswer { .. } | Self::Unreadable(_) => None,
        }
    }

    /// The kernel did not answer, or not readably: the request may or may
    /// not have been done.
    pub fn is_transport(&self) -> bool {
        self.errno().is_none()
    }

    /// The object was not there (deleting what is gone is done).
    pub fn is_missing(&self) -> bool {
        matches!(self.errno(), Some(libc::ENOENT | libc::ESRCH))
    }
}
