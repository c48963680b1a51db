//! The few bpf(2) commands aya 0.14 does not offer: what a pinned object
//! is, a link's program and interface, and forcing a link off
//! (BPF_LINK_DETACH, even while another process holds it).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `BPF_LINK_TYPE_TCX`.
const LINK_TYPE_TCX: u32 = 11;

/// What a bpffs pin refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pinned {
    Map { id: u32 },
    Program { id: u32 },
    Link(LinkInfo),
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LinkInfo {
    pub id: u32,
    pub program_id: u32,
    /// The interface of a TCX link.
    pub tcx_ifindex: Option<u32>,
}

/// The start of `bpf_{map,prog,link}_info`: type and id come first in all
/// three; for a link, the TCX ifindex sits at the union's start (offset 16).
#[repr(C, align(8))]
#[derive(Default)]
struct InfoHead {
    kind: u32,
    id: u32,
    program_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
    _rest: [u64; 4],
}

fn bpf(command: libc::c_long, attr: &mut [u64], size: usize) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr of `size` bytes the call reads.
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), size) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// BPF_OBJ_GET: an fd on the object pinned at `path`.
pub(super) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = [0u64; 2];
    attr[0] = name.as_ptr() as u64;
    owned(bpf(BPF_OBJ_GET, &mut attr, 16)?)
}

/// BPF_OBJ_PIN: pins the object behind `fd` at `path`. Unlike aya's
/// `FdLink::pin`, which consumes the link (and so detaches an unpinned one
/// when pinning fails), the caller keeps `fd` whatever happens.
pub(super) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = [0u64; 2];
    attr[0] = name.as_ptr() as u64;
    attr[1] = u64::from(fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr, 16).map(drop)
}

fn info(fd: &OwnedFd) -> io::Result<InfoHead> {
    let mut head = InfoHead::default();
    let mut attr = [0u64; 2];
    attr[0] = fd.as_raw_fd() as u32 as u64 | ((size_of::<InfoHead>() as u64) << 32);
    attr[1] = &mut head as *mut InfoHead as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, 16)?;
    Ok(head)
}

/// What the pin at `path` is (its kind from the fd's anon inode name).
pub(super) fn inspect(path: &Path) -> io::Result<(Pinned, OwnedFd)> {
    let fd = obj_get(path)?;
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let head = info(&fd)?;
    let pinned = match target.as_os_str().as_bytes() {
        b"anon_inode:bpf-map" => Pinned::Map { id: head.id },
        b"anon_inode:bpf-prog" => Pinned::Program { id: head.id },
        b"anon_inode:bpf_link" | b"anon_inode:bpf-link" => Pinned::Link(link_info(&head)),
        _ => Pinned::Other,
    };
    Ok((pinned, fd))
}

fn link_info(head: &InfoHead) -> LinkInfo {
    LinkInfo {
        id: head.id,
        program_id: head.program_id,
        tcx_ifindex: (head.kind == LINK_TYPE_TCX).then_some(head.ifindex),
    }
}

/// An fd on link `id` and what it is.
pub(super) fn link_by_id(id: u32) -> io::Result<(LinkInfo, OwnedFd)> {
    let mut attr = [u64::from(id), 0];
    let fd = owned(bpf(BPF_LINK_GET_FD_BY_ID, &mut attr, 12)?)?;
    let head = info(&fd)?;
    Ok((link_info(&head), fd))
}

/// BPF_LINK_DETACH: the link stops running its program now, whoever
/// still holds it.
pub(super) fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    let mut attr = [fd.as_raw_fd() as u32 as u64];
    bpf(BPF_LINK_DETACH, &mut attr, 4).map(drop)
}

/// An interface's name, or its index when it has none (any more).
pub(super) fn interface_name(ifindex: u32) -> String {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname needs.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into the buffer.
    unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned()
}

/// Every interface of this network namespace, by index.
pub(super) fn interfaces() -> Vec<u32> {
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut indexes = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 {
            indexes.push((*entry).if_index);
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        indexes
    }
}
