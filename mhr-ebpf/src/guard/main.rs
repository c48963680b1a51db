//! The source guard: on every uplink's egress, check each packet's source
//! against the addresses that uplink owns; count by verdict, remember
//! offenders, flag them (rate-limited) and, in enforce mode, drop them.
//!
//! Fast path: the uplink's own few addresses sit in its array slot and are
//! compared inline; maps are consulted only on a mismatch. Every internal
//! error fails open (the packet passes) and is counted.
#![no_std]
#![no_main]

mod skb;
mod steer;
mod tcp;

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::TcContext,
};
use mhr_common::{
    MAX_IFINDEX, TCX_NEXT,
    guard::{
        AllowV4, AllowV6, Count, EVENT_SLOTS, Event, FLAGS_PER_CPU_PER_SECOND, FLAGS_RING_BYTES, FlagBudget,
        FlagRecord, INLINE_V4, INLINE_V6, MAX_ALLOW, MAX_HIGH_IFINDEXES, MAX_OFFENDERS, MAX_OWNERS,
        MAX_UPLINKS, Offender, OffenderKey, PacketFamily, TC_ACT_REDIRECT, TC_ACT_SHOT, UplinkGuard,
        VERDICT_SLOTS, Verdict, event_slot, verdict_slot,
    },
    packet::{self, Details, Parsed, Source},
};
use skb::Skb;

#[map(name = "MHR_UPLINKS")]
static UPLINKS: Array<UplinkGuard> = Array::pinned(MAX_IFINDEX, 0);
#[map(name = "MHR_UPLINKS_HIGH")]
static UPLINKS_HIGH: HashMap<u32, UplinkGuard> = HashMap::pinned(MAX_HIGH_IFINDEXES, 0);
/// Slot → interface name, so counters keep their owner across restarts.
#[map(name = "MHR_SLOT_NAMES")]
static SLOT_NAMES: Array<[u8; 16]> = Array::pinned(MAX_UPLINKS, 0);
#[map(name = "MHR_OWNERS_V4")]
static OWNERS_V4: HashMap<u32, u32> = HashMap::pinned(MAX_OWNERS, 0);
#[map(name = "MHR_OWNERS_V6")]
static OWNERS_V6: HashMap<[u64; 2], u32> = HashMap::pinned(MAX_OWNERS, 0);
#[map(name = "MHR_ALLOW_V4")]
static ALLOW_V4: LpmTrie<AllowV4, u8> = LpmTrie::pinned(MAX_ALLOW, 0);
#[map(name = "MHR_ALLOW_V6")]
static ALLOW_V6: LpmTrie<AllowV6, u8> = LpmTrie::pinned(MAX_ALLOW, 0);
#[map(name = "MHR_VERDICTS")]
static VERDICTS: PerCpuArray<Count> = PerCpuArray::pinned(VERDICT_SLOTS, 0);
#[map(name = "MHR_EVENTS")]
static EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(EVENT_SLOTS, 0);
/// Per-CPU values: no atomics on the hot path; userspace sums the CPUs.
#[map(name = "MHR_OFFENDERS")]
static OFFENDERS: LruPerCpuHashMap<OffenderKey, Offender> = LruPerCpuHashMap::pinned(MAX_OFFENDERS, 0);
#[map(name = "MHR_FLAGS")]
static FLAGS: RingBuf = RingBuf::pinned(FLAGS_RING_BYTES, 0);
/// Per uplink (slot) and CPU.
#[map(name = "MHR_FLAG_BUDGET")]
static FLAG_BUDGET: PerCpuArray<FlagBudget> = PerCpuArray::pinned(MAX_UPLINKS, 0);

const NS_PER_SECOND: u64 = 1_000_000_000;

/// Baseline for benchmarks: the cost of running any classifier at all.
#[classifier]
pub fn mhr_empty(_ctx: TcContext) -> i32 {
    TCX_NEXT
}

#[classifier]
pub fn mhr_guard(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel handed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let guard =
        if ifindex < MAX_IFINDEX { UPLINKS.get(ifindex) } else { unsafe { UPLINKS_HIGH.get(ifindex) } };
    let Some(guard) = guard else { return TCX_NEXT };
    if guard.enabled == 0 {
        return TCX_NEXT;
    }
    if steer::arrived(&ctx, ifindex) {
        return TCX_NEXT;
    }
    if guard.slot >= MAX_UPLINKS {
        // Only a corrupt entry gets here: pass, counted against slot 0.
        bump(0, Event::Errors);
        return TCX_NEXT;
    }
    let skb = Skb(&ctx);
    let parsed = if guard.l3 != 0 { packet::parse_l3(&skb) } else { packet::parse(&skb) };
    let (family, mut verdict, owner) = classify(guard, &parsed);
    let mut steer_to = None;
    if guard.steer != 0 && verdict == Verdict::Asymmetric {
        steer_to = steer::target(&ctx, guard, family, &parsed, owner);
        verdict = if steer_to.is_some() { Verdict::Steered } else { Verdict::SteerFailed };
    }
    let length = u64::from(ctx.len());
    let counted = count(guard.slot, family, verdict, length);
    // The kernel's stack never sends these; a source hidden behind a third
    // tag must not get past enforce mode.
    if guard.enforce != 0 && matches!(parsed, Parsed::TooManyTags) {
        bump(guard.slot, Event::Dropped);
        return TC_ACT_SHOT;
    }
    if !verdict.is_offence() {
        if verdict == Verdict::Ok {
            tcp::count_sent(&skb, &parsed, family, guard.slot);
        }
        return TCX_NEXT;
    }
    // Steered packets are delivered, never dropped; one that could not be
    // steered is handled as an asymmetric one.
    let enforced = guard.enforce != 0
        && (verdict == Verdict::Spoofed || (guard.enforce_asymmetric != 0 && verdict != Verdict::Steered));
    // The coarse clock (jiffies resolution) is enough for first/last seen
    // and one-second flag windows, and much cheaper than the precise one.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut offence =
        Offence { ifindex, slot: guard.slot, family, verdict, length, dropped: false, now, parsed: &parsed };
    // Every internal error fails open: the packet passes (and is counted
    // as an error), whatever the mode.
    let remembered = remember_offender(&offence);
    offence.dropped = enforced && counted && remembered;
    let flagged = flag(&ctx, &offence);
    if offence.dropped && flagged {
        bump(guard.slot, Event::Dropped);
        return TC_ACT_SHOT;
    }
    if let Some(target) = steer_to {
        if steer::redirect(&ctx, guard, family, target) {
            return TC_ACT_REDIRECT;
        }
        // Fails open like every internal error: the packet passes.
        bump(guard.slot, Event::Errors);
    }
    TCX_NEXT
}

/// A packet that is flagged (BPF functions take at most five arguments).
struct Offence<'a> {
    ifindex: u32,
    slot: u32,
    family: PacketFamily,
    verdict: Verdict,
    length: u64,
    dropped: bool,
    /// CLOCK_MONOTONIC_COARSE ns, read once per packet.
    now: u64,
    parsed: &'a Parsed,
}

/// The family, the verdict and, for an asymmetric packet, the slot of the
/// uplink that owns the source.
#[inline(always)]
fn classify(guard: &UplinkGuard, parsed: &Parsed) -> (PacketFamily, Verdict, u32) {
    match parsed {
        Parsed::NonIp => (PacketFamily::Other, Verdict::NonIp, 0),
        Parsed::Malformed(family) => (*family, Verdict::Malformed, 0),
        Parsed::TooManyTags => (PacketFamily::Other, Verdict::Malformed, 0),
        Parsed::Ip { source: Source::V4(source), .. } => {
            let (verdict, owner) = classify_v4(guard, *source);
            (PacketFamily::Ipv4, verdict, owner)
        }
        Parsed::Ip { source: Source::V6(source), .. } => {
            let (verdict, owner) = classify_v6(guard, source);
            (PacketFamily::Ipv6, verdict, owner)
        }
    }
}

#[inline(always)]
fn classify_v4(guard: &UplinkGuard, source: u32) -> (Verdict, u32) {
    if source == 0 {
        return (Verdict::Exempt, 0);
    }
    let count = usize::from(guard.v4_count).min(INLINE_V4);
    for i in 0..INLINE_V4 {
        if i >= count {
            break;
        }
        if guard.v4[i] == source {
            return (Verdict::Ok, 0);
        }
    }
    mismatch_v4(guard.slot, guard.allow_v4 != 0, source)
}

/// Not one of the inline addresses: an owner lookup, then (only for
/// uplinks that have them) the allow prefixes.
#[inline(never)]
fn mismatch_v4(slot: u32, has_allow: bool, source: u32) -> (Verdict, u32) {
    // SAFETY: the value is read once, right away.
    let (verdict, owner) = match unsafe { OWNERS_V4.get(source) } {
        Some(owner) if *owner == slot => return (Verdict::Ok, 0),
        Some(owner) => (Verdict::Asymmetric, *owner),
        None => (Verdict::Spoofed, 0),
    };
    let key = Key::new(32 + 32, AllowV4 { slot: slot.to_be_bytes(), address: source.to_ne_bytes() });
    if has_allow && ALLOW_V4.get(key).is_some() { (Verdict::Ok, 0) } else { (verdict, owner) }
}

#[inline(always)]
fn classify_v6(guard: &UplinkGuard, source: &[u64; 2]) -> (Verdict, u32) {
    if source[0] == 0 && source[1] == 0 {
        return (Verdict::Exempt, 0);
    }
    let first = source[0].to_ne_bytes();
    if first[0] == 0xfe && first[1] & 0xc0 == 0x80 {
        return (Verdict::Exempt, 0);
    }
    let count = usize::from(guard.v6_count).min(INLINE_V6);
    for i in 0..INLINE_V6 {
        if i >= count {
            break;
        }
        if guard.v6[i][0] == source[0] && guard.v6[i][1] == source[1] {
            return (Verdict::Ok, 0);
        }
    }
    mismatch_v6(guard.slot, guard.allow_v6 != 0, source)
}

#[inline(never)]
fn mismatch_v6(slot: u32, has_allow: bool, source: &[u64; 2]) -> (Verdict, u32) {
    // SAFETY: the value is read once, right away.
    let (verdict, owner) = match unsafe { OWNERS_V6.get(source) } {
        Some(owner) if *owner == slot => return (Verdict::Ok, 0),
        Some(owner) => (Verdict::Asymmetric, *owner),
        None => (Verdict::Spoofed, 0),
    };
    if !has_allow {
        return (verdict, owner);
    }
    let mut address = [0u8; 16];
    address[..8].copy_from_slice(&source[0].to_ne_bytes());
    address[8..].copy_from_slice(&source[1].to_ne_bytes());
    let key = Key::new(32 + 128, AllowV6 { slot: slot.to_be_bytes(), address });
    if ALLOW_V6.get(key).is_some() { (Verdict::Ok, 0) } else { (verdict, owner) }
}

/// False on an internal error (counted).
#[inline(always)]
fn count(slot: u32, family: PacketFamily, verdict: Verdict, length: u64) -> bool {
    match VERDICTS.get_ptr_mut(verdict_slot(slot, family, verdict)) {
        // SAFETY: this CPU's slot of a pre-allocated per-CPU array.
        Some(counter) => unsafe {
            (*counter).packets += 1;
            (*counter).bytes += length;
            true
        },
        None => {
            bump(slot, Event::Errors);
            false
        }
    }
}

#[inline(always)]
fn bump(slot: u32, event: Event) {
    if let Some(counter) = EVENTS.get_ptr_mut(event_slot(slot, event)) {
        // SAFETY: this CPU's slot of a pre-allocated per-CPU array.
        unsafe { *counter += 1 };
    }
}

fn offender_key(slot: u32, family: PacketFamily, parsed: &Parsed) -> OffenderKey {
    let mut source = [0u8; 16];
    match parsed {
        Parsed::Ip { source: Source::V4(address), .. } => source[..4].copy_from_slice(&address.to_ne_bytes()),
        Parsed::Ip { source: Source::V6(words), .. } => {
            source[..8].copy_from_slice(&words[0].to_ne_bytes());
            source[8..].copy_from_slice(&words[1].to_ne_bytes());
        }
        _ => {}
    }
    OffenderKey { slot, family: family as u8, _pad: [0; 3], source }
}

/// False on an internal error (counted).
#[inline(never)]
fn remember_offender(offence: &Offence) -> bool {
    let Offence { slot, family, verdict, length, now, parsed, .. } = *offence;
    let key = offender_key(slot, family, parsed);
    match OFFENDERS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the entry.
        Some(offender) => unsafe {
            (*offender).packets += 1;
            (*offender).bytes += length;
            (*offender).last_seen_ns = now;
            // Another CPU may have created the entry: this CPU's value
            // starts zeroed.
            if (*offender).first_seen_ns == 0 {
                (*offender).first_seen_ns = now;
                (*offender).verdict = verdict as u8;
            }
            true
        },
        None => {
            let offender = Offender {
                packets: 1,
                bytes: length,
                first_seen_ns: now,
                last_seen_ns: now,
                verdict: verdict as u8,
                _pad: [0; 7],
            };
            // BPF_ANY: if another CPU inserted the key meanwhile, this
            // only sets this CPU's value and keeps the others.
            if OFFENDERS.insert(key, offender, 0).is_err() {
                bump(slot, Event::Errors);
                return false;
            }
            true
        }
    }
}

/// Writes a flag record unless this CPU used up its budget for the second.
/// False on an internal error (counted); a spent budget or a full ring is
/// none (counted as suppressed).
#[inline(never)]
fn flag(ctx: &TcContext, offence: &Offence) -> bool {
    let Offence { ifindex, slot, family, verdict, dropped, now, parsed, .. } = *offence;
    let Some(budget) = FLAG_BUDGET.get_ptr_mut(slot) else {
        bump(slot, Event::Errors);
        return false;
    };
    // SAFETY: `budget` is this CPU's entry for this uplink.
    let allowed = unsafe {
        if now.wrapping_sub((*budget).window_start_ns) >= NS_PER_SECOND {
            (*budget).window_start_ns = now;
            (*budget).window_emitted = 0;
        }
        (*budget).window_emitted < FLAGS_PER_CPU_PER_SECOND
    };
    let entry = if allowed { FLAGS.reserve::<FlagRecord>(0) } else { None };
    let Some(mut entry) = entry else {
        // SAFETY: as above.
        unsafe { (*budget).suppressed += 1 };
        return true;
    };
    let key = offender_key(slot, family, parsed);
    let details = details(ctx, parsed);
    entry.write(FlagRecord {
        ifindex,
        slot,
        length: ctx.len(),
        source_port: details.source_port,
        destination_port: details.destination_port,
        verdict: verdict as u8,
        family: family as u8,
        protocol: details.protocol,
        dropped: u8::from(dropped),
        vlan: packet::vlan(&Skb(ctx), parsed),
        _pad: 0,
        source: key.source,
        destination: details.destination,
    });
    entry.submit(0);
    // SAFETY: as above.
    unsafe {
        (*budget).window_emitted += 1;
        (*budget).emitted += 1;
    }
    true
}

/// Kept out of line: only flagged packets need it.
#[inline(never)]
fn details(ctx: &TcContext, parsed: &Parsed) -> Details {
    packet::details(&Skb(ctx), parsed)
}

/// GPL-compatible, as some helpers require; explicit rather than the
/// loader's default.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic.
    unsafe { core::hint::unreachable_unchecked() }
}
