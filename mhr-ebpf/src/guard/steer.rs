//! Steer mode: an asymmetric packet (another uplink's source) is sent out
//! of the uplink that owns its source, towards that uplink's gateway.
//!
//! Whether a packet can be steered is decided before anything is counted
//! or changed ([`target`]); the redirect itself comes last ([`redirect`]).

use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_skb_change_head},
    macros::map,
    maps::Array,
    programs::TcContext,
};
use mhr_common::{
    guard::{MAX_UPLINKS, PacketFamily, SteerTarget, TC_ACT_REDIRECT, UplinkGuard, steered_mark},
    packet::Parsed,
};

#[map(name = "MHR_STEER")]
static STEER: Array<SteerTarget> = Array::pinned(MAX_UPLINKS, 0);

const ETH_HEADER: usize = 14;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// A packet another uplink's guard steered here (to `ifindex`): it was
/// counted there. Clears the mark so that nothing after this sees it.
#[inline(always)]
pub fn arrived(ctx: &TcContext, ifindex: u32) -> bool {
    // SAFETY: reading and writing a field of the context the kernel handed
    // us; tc_index is writable for TC programs.
    unsafe {
        let skb = ctx.skb.skb;
        if (*skb).tc_index != steered_mark(ifindex) {
            return false;
        }
        (*skb).tc_index = 0;
    }
    true
}

/// Where the packet would go, if it can be steered: the owner's entry
/// allows the family, and the frame is one the redirect can rewrite (an
/// untagged Ethernet frame, or a bare IP packet on an L3 uplink).
/// (A reference into the map: BPF functions return one register, and take
/// at most five arguments.)
#[inline(never)]
pub fn target(
    ctx: &TcContext,
    guard: &UplinkGuard,
    family: PacketFamily,
    parsed: &Parsed,
    owner: u32,
) -> Option<&'static SteerTarget> {
    let target = STEER.get(owner)?;
    let allowed = match family {
        PacketFamily::Ipv4 => target.v4,
        PacketFamily::Ipv6 => target.v6,
        PacketFamily::Other => 0,
    };
    if allowed == 0 || target.ifindex == 0 {
        return None;
    }
    let Parsed::Ip { l3, vlan, .. } = parsed else { return None };
    let expected = if guard.l3 != 0 { 0 } else { ETH_HEADER };
    // SAFETY: reading a field of the context the kernel handed us.
    let offloaded_tag = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    if *l3 != expected || *vlan != 0 || offloaded_tag {
        return None;
    }
    Some(target)
}

/// Redirects the packet to `target`; false when the kernel refused (the
/// packet is then unchanged and passes).
#[inline(never)]
pub fn redirect(ctx: &TcContext, guard: &UplinkGuard, family: PacketFamily, target: &SteerTarget) -> bool {
    let skb = ctx.skb.skb;
    let redirected = if target.l3 != 0 {
        // SAFETY: a helper with no preconditions; towards an L3 device the
        // kernel drops the MAC header itself.
        unsafe { bpf_redirect(target.ifindex, 0) }
    } else {
        // A bare IP packet towards an Ethernet uplink: the neighbour code
        // replaces a MAC header, so push a zeroed one (it writes the whole
        // header from skb->protocol). On failure the skb is unchanged.
        // SAFETY: the helper only grows the headroom of our own skb.
        if guard.l3 != 0 && unsafe { bpf_skb_change_head(skb as *mut _, ETH_HEADER as u32, 0) } != 0 {
            return false;
        }
        neighbour(target, family)
    };
    if redirected != i64::from(TC_ACT_REDIRECT) {
        return false;
    }
    // SAFETY: writing a field of our context; the redirect happens once
    // the program returns, so the owner's guard sees the mark.
    unsafe { (*skb).tc_index = steered_mark(target.ifindex) };
    true
}

/// bpf_redirect_neigh towards the target's gateway for the family.
#[inline(always)]
fn neighbour(target: &SteerTarget, family: PacketFamily) -> i64 {
    let mut params = match family {
        PacketFamily::Ipv4 => bpf_redir_neigh {
            nh_family: AF_INET,
            __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                ipv4_nh: u32::from_ne_bytes(target.gateway_v4),
            },
        },
        _ => {
            let g = target.gateway_v6;
            let word = |i: usize| u32::from_ne_bytes([g[i], g[i + 1], g[i + 2], g[i + 3]]);
            bpf_redir_neigh {
                nh_family: AF_INET6,
                __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                    ipv6_nh: [word(0), word(4), word(8), word(12)],
                },
            }
        }
    };
    // SAFETY: `params` lives across the call and its size is passed.
    unsafe {
        bpf_redirect_neigh(target.ifindex, &mut params, core::mem::size_of::<bpf_redir_neigh>() as i32, 0)
    }
}
