//! The egress classifier on real interfaces and through BPF_PROG_TEST_RUN:
//! exact counts, both attach mechanisms, and a TCX chain that continues.

use aya::programs::{TestRun as _, TestRunOptions};
use mhr_common::{InterfaceCounters, MAX_IFINDEX, TCX_NEXT};
use mhr_tests::{
    quiet_host::{QuietHost, UDP4_FRAME_OVERHEAD},
    require_root,
};
use mhr_userspace::{
    guard::counter::{CounterError, EgressCounter},
    guard::tc::{AttachError, AttachMode, Mechanism, interface_index},
};

const PAYLOAD: usize = 100;

fn expected(packets: u64) -> InterfaceCounters {
    InterfaceCounters { packets, bytes: packets * (PAYLOAD as u64 + UDP4_FRAME_OVERHEAD) }
}

/// Counters of `interface` as the loaded monitor sees them.
fn counters(monitor: &EgressCounter, interface: &str) -> InterfaceCounters {
    let ifindex = interface_index(interface).expect("interface exists");
    monitor.counters_for_ifindex(ifindex).expect("map read")
}

#[test]
fn counts_exact_packets_and_bytes_per_uplink() {
    require_root();
    let lab = QuietHost::start(&["ens3", "ens4"]).expect("host starts");
    let monitor = lab
        .host
        .run(|| {
            let mut monitor = EgressCounter::load().expect("eBPF object loads");
            for interface in ["ens3", "ens4"] {
                let attachment = monitor.attach(interface, AttachMode::Auto).expect("attaches");
                assert_eq!(attachment.mechanism, Mechanism::Tcx, "this kernel has TCX (≥ 6.6)");
            }
            monitor
        })
        .unwrap();
    lab.send_udp(0, 7, PAYLOAD).unwrap();
    lab.send_udp(1, 11, PAYLOAD).unwrap();

    let reports = monitor.reports().expect("counters read");
    let by_name: Vec<(&str, InterfaceCounters)> =
        reports.iter().map(|r| (r.attachment.interface.as_str(), r.counters)).collect();
    assert_eq!(by_name, vec![("ens3", expected(7)), ("ens4", expected(11))]);
    // TCX links are file descriptors: dropping the monitor detaches them.
    drop(monitor);
    for interface in ["ens3", "ens4"] {
        let (_, programs) = lab
            .host
            .run(move || {
                aya::programs::SchedClassifier::query_tcx(interface, aya::programs::TcAttachType::Egress)
            })
            .unwrap()
            .unwrap();
        assert!(programs.is_empty(), "{interface} runs nothing after the drop: {programs:?}");
    }
}

#[test]
fn clsact_attachment_counts_the_same_and_detaches_on_drop() {
    require_root();
    let lab = QuietHost::start(&["ens3", "ens4"]).expect("host starts");
    let filters = || lab.host.tc(["filter", "show", "dev", "ens3", "egress"]).expect("tc lists filters");
    lab.host
        .run(|| {
            let mut monitor = EgressCounter::load().expect("eBPF object loads");
            for interface in ["ens3", "ens4"] {
                let attachment = monitor.attach(interface, AttachMode::Clsact).expect("attaches");
                assert_eq!(attachment.mechanism, Mechanism::Clsact);
            }
            assert!(filters().contains("mhr_egress"), "tc shows the filter: {}", filters());
            lab.send_udp(0, 5, PAYLOAD).unwrap();
            lab.send_udp(1, 3, PAYLOAD).unwrap();
            assert_eq!(counters(&monitor, "ens3"), expected(5));
            assert_eq!(counters(&monitor, "ens4"), expected(3));
            drop(monitor);
            assert!(!filters().contains("mhr_egress"), "filter removed: {}", filters());
        })
        .unwrap();
}

#[test]
fn a_program_after_mhr_in_the_tcx_chain_still_sees_every_packet() {
    require_root();
    let lab = QuietHost::start(&["ens3"]).expect("host starts");
    let (first, second) = lab
        .host
        .run(|| {
            let mut first = EgressCounter::load().expect("first instance loads");
            let mut second = EgressCounter::load().expect("second instance loads");
            first.attach("ens3", AttachMode::Tcx).expect("first attaches");
            second.attach("ens3", AttachMode::Tcx).expect("second attaches after it");
            (first, second)
        })
        .unwrap();
    lab.send_udp(0, 9, PAYLOAD).unwrap();
    let first_counts = first.reports().unwrap()[0].counters;
    let second_counts = second.reports().unwrap()[0].counters;
    assert_eq!(first_counts, expected(9));
    assert_eq!(second_counts, expected(9), "TCX_NEXT lets the next program run");
}

/// `__sk_buff` up to and including `ifindex` (offset 40): the fields
/// BPF_PROG_TEST_RUN reads from `ctx_in` for this test.
fn skb_context(ifindex: u32) -> [u8; 44] {
    let mut context = [0u8; 44];
    context[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    context
}

fn frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; len];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // EtherType IPv4
    frame
}

#[test]
fn test_run_returns_tcx_next_and_counts_only_the_context_interface() {
    require_root();
    let lab = QuietHost::start(&["ens3", "ens4"]).expect("host starts");
    lab.host
        .run(|| {
            let mut monitor = EgressCounter::load().expect("eBPF object loads");
            let ens3 = interface_index("ens3").unwrap();
            let data = frame(60);
            let context = skb_context(ens3);
            let options = TestRunOptions {
                data_in: Some(&data),
                ctx_in: Some(&context),
                repeat: 10,
                ..Default::default()
            };
            let result = monitor.egress_program().unwrap().test_run(options).expect("test run");
            assert_eq!(result.return_value as i32, TCX_NEXT);
            assert_eq!(counters(&monitor, "ens3"), InterfaceCounters { packets: 10, bytes: 600 });
            assert_eq!(counters(&monitor, "ens4"), InterfaceCounters::default());
        })
        .unwrap();
}

#[test]
fn interfaces_beyond_the_counter_array_are_counted_in_the_overflow_slot() {
    require_root();
    let lab = QuietHost::start(&["ens3"]).expect("host starts");
    let big_index = MAX_IFINDEX + 100;
    lab.host
        .ip(["link", "add", "big0", "index", &big_index.to_string(), "type", "veth", "peer", "name", "big1"])
        .expect("interface with a large ifindex");
    lab.host
        .run(|| {
            let mut monitor = EgressCounter::load().expect("eBPF object loads");
            assert_eq!(interface_index("big0").unwrap(), big_index);
            let data = frame(64);
            let context = skb_context(big_index);
            let options = TestRunOptions {
                data_in: Some(&data),
                ctx_in: Some(&context),
                repeat: 3,
                ..Default::default()
            };
            let result = monitor.egress_program().unwrap().test_run(options).expect("test run");
            assert_eq!(result.return_value as i32, TCX_NEXT);
            let overflow = InterfaceCounters { packets: 3, bytes: 192 };
            assert_eq!(monitor.counters_for_ifindex(big_index).unwrap(), overflow);
            assert_eq!(monitor.counters_for_ifindex(MAX_IFINDEX + 7).unwrap(), overflow, "one shared slot");
            assert_eq!(counters(&monitor, "ens3"), InterfaceCounters::default());
        })
        .unwrap();
}

#[test]
fn attaching_to_a_missing_interface_names_it_and_attaches_nothing() {
    require_root();
    let lab = QuietHost::start(&["ens3"]).expect("host starts");
    lab.host
        .run(|| {
            let mut monitor = EgressCounter::load().expect("eBPF object loads");
            let err = monitor.attach("nosuch0", AttachMode::Auto).expect_err("no such interface");
            assert!(matches!(err, CounterError::Attach(AttachError::UnknownInterface(ref name)) if name == "nosuch0"));
            assert_eq!(err.to_string(), "no interface named `nosuch0`");
            assert!(monitor.attachments().is_empty());
        })
        .unwrap();
}
