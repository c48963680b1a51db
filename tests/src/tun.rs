//! A tun device held open by the test: an L3 uplink (packets start at the
//! IP header, as on WireGuard, PPP or a raw-IP modem) whose egress the test
//! reads back, so it sees exactly which packets got past TC egress.

use std::{
    fs::{File, OpenOptions},
    io::Read as _,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    time::{Duration, Instant},
};

use nix::libc;

use crate::{LabError, Netns, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

pub struct Tun {
    file: File,
}

impl Tun {
    /// Creates tun device `name` in `netns` (IFF_TUN, no packet info); it
    /// exists, with carrier, while this value lives.
    pub fn create(netns: &Netns, name: &str) -> Result<Self> {
        let name = name.to_owned();
        netns.run(move || Self::open(&name))?
    }

    fn open(name: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(LabError::io("opening /dev/net/tun"))?;
        let mut request = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI, _rest: [0; 22] };
        let bytes = name.as_bytes();
        request.name[..bytes.len().min(libc::IFNAMSIZ - 1)]
            .copy_from_slice(&bytes[..bytes.len().min(libc::IFNAMSIZ - 1)]);
        // SAFETY: TUNSETIFF reads an ifreq, which `request` is laid out as.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &raw mut request) };
        if result < 0 {
            return Err(LabError::io(format!("TUNSETIFF {name}"))(std::io::Error::last_os_error()));
        }
        Ok(Self { file })
    }

    /// Every packet that left the device within `wait` (IP packets, as
    /// the kernel sent them).
    pub fn drain(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut packets = Vec::new();
        let mut buffer = [0u8; 65536];
        while Instant::now() < deadline {
            match self.file.read(&mut buffer) {
                Ok(length) => packets.push(buffer[..length].to_vec()),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
        packets
    }
}
