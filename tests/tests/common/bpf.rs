//! Hand-made bpf objects for the pin tests: maps of any shape pinned
//! where mhr looks, and a tiny classifier that uses one, attached as
//! another tool would.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use mhr_userspace::guard::tc::interface_index;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// Creates an array map of the given shape with bpf(2) and pins it at
/// `path`; returns its fd.
pub fn pin_array(path: &Path, value_size: u32, max_entries: u32) -> OwnedFd {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut attr = [0u32; 12];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, value_size, max_entries]);
    // SAFETY: a zeroed bpf_attr for BPF_MAP_CREATE, 48 bytes.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), 48) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    pin(&fd, path);
    fd
}

/// Pins the object behind `fd` at `path`.
pub fn pin(fd: &OwnedFd, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut attr = [name.as_ptr() as u64, fd.as_raw_fd() as u64];
    // SAFETY: a bpf_attr for BPF_OBJ_PIN: the path and the fd.
    let pinned = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), 16) };
    assert_eq!(pinned, 0, "BPF_OBJ_PIN {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Loads a tiny classifier that refers to `map` (so the kernel counts it
/// as the map's user) and attaches it to `interface`'s TCX egress with an
/// unpinned link, as another tool would. Returns the link's fd.
pub fn attach_user_of(map: &OwnedFd, interface: &str) -> OwnedFd {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_TCX_EGRESS: u32 = 47;
    let insn = |code: u8, regs: u8, imm: i32| {
        u64::from(code) | (u64::from(regs) << 8) | (u64::from(imm as u32) << 32)
    };
    // r1 = map (BPF_PSEUDO_MAP_FD), r0 = -1 (TCX_NEXT), exit.
    let program = [insn(0x18, 0x11, map.as_raw_fd()), 0, insn(0xb7, 0, -1), insn(0x95, 0, 0)];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    attr[0] = u64::from(BPF_PROG_TYPE_SCHED_CLS) | ((program.len() as u64) << 32);
    attr[1] = program.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // SAFETY: a zero-padded bpf_attr for BPF_PROG_LOAD.
    let prog = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), 128) };
    assert!(prog >= 0, "BPF_PROG_LOAD: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let mut attr = [0u64; 8];
    attr[0] = prog.as_raw_fd() as u64 | (u64::from(interface_index(interface).unwrap()) << 32);
    attr[1] = u64::from(BPF_TCX_EGRESS);
    // SAFETY: a zero-padded bpf_attr for BPF_LINK_CREATE.
    let link = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_mut_ptr(), 64) };
    assert!(link >= 0, "BPF_LINK_CREATE: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd.
    unsafe { OwnedFd::from_raw_fd(link as i32) }
}
