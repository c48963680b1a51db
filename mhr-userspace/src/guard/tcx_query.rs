//! The programs on an interface's TCX egress hook, by id, from
//! BPF_PROG_QUERY alone. aya's `SchedClassifier::query_tcx` also opens
//! every program by id (BPF_PROG_GET_FD_BY_ID), which needs CAP_SYS_ADMIN;
//! the sandboxed daemon (`crate::sandbox`) keeps only CAP_BPF and
//! CAP_NET_ADMIN, which are enough for the ids.

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd};

/// Ids of the programs attached to `ifindex`'s TCX egress, in run order.
pub fn egress_program_ids(ifindex: u32) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 16];
    loop {
        // SAFETY: bpf_attr is a plain C union; all zeroes is its empty value.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.query.__bindgen_anon_1.target_ifindex = ifindex;
        attr.query.attach_type = bpf_attach_type::BPF_TCX_EGRESS as u32;
        attr.query.prog_ids = ids.as_mut_ptr() as u64;
        attr.query.__bindgen_anon_2.prog_cnt = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        // SAFETY: the kernel writes at most prog_cnt ids into `ids`, which
        // outlives the call, and reads `attr` of the size given.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_PROG_QUERY as libc::c_long,
                &mut attr as *mut bpf_attr,
                size_of::<bpf_attr>(),
            )
        };
        // SAFETY: the query member is the one written above and by the kernel.
        let count = unsafe { attr.query.__bindgen_anon_2.prog_cnt } as usize;
        if result == 0 {
            ids.truncate(count);
            return Ok(ids);
        }
        let error = std::io::Error::last_os_error();
        // More programs than room: the kernel said how many.
        if error.raw_os_error() == Some(libc::ENOSPC) && count > ids.len() {
            ids.resize(count, 0);
            continue;
        }
        return Err(error);
    }
}
