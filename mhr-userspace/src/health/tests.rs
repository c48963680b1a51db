use super::*;

fn book() -> HealthBook {
    HealthBook::new(HealthConfig { down_after: 3, up_after: 5, ..HealthConfig::default() })
}

fn probe(answered: bool) -> RoundSample {
    RoundSample {
        gateway_unreachable: false,
        probe: Some(ProbeOutcome { answered, rtt: answered.then_some(Duration::from_millis(2)) }),
        skipped: false,
        passive: None,
        busy: false,
    }
}

#[test]
fn a_new_uplink_starts_healthy_unless_its_link_is_at_fault() {
    let mut book = book();
    assert_eq!(book.observe_link("a", Family::V4, None, 1), None);
    assert!(book.is_healthy("a", Family::V4));
    assert_eq!(book.observe_link("b", Family::V4, Some(Fault::NoCarrier), 1), None);
    assert!(!book.is_healthy("b", Family::V4));
    assert_eq!(book.get("b", Family::V4).unwrap().fault, Some(Fault::NoCarrier));
    assert!(!book.is_healthy("a", Family::V6), "families are separate");
}

#[test]
fn a_new_uplink_with_probes_is_unproven_until_up_after_good_rounds_unless_assumed_healthy() {
    let mut book = book();
    book.set_probed([("a".to_owned(), Family::V4)]);
    assert_eq!(book.observe_link("a", Family::V4, None, 1), None);
    assert_eq!(book.get("a", Family::V4).map(|e| (e.healthy, e.fault)), Some((false, Some(Fault::Unproven))));
    assert!(book.observe_link("a", Family::V6, None, 1).is_none());
    assert!(book.is_healthy("a", Family::V6), "a family without probes starts healthy");
    for round in 1..5 {
        assert_eq!(book.observe_round("a", Family::V4, None, probe(true), 1 + round), None, "round {round}");
    }
    let proven = book.observe_round("a", Family::V4, None, probe(true), 6).expect("healthy after 5 rounds");
    assert_eq!((proven.healthy, proven.fault), (true, None));
    // Re-created: judged as first seen again.
    book.forget("a");
    assert_eq!((book.get("a", Family::V4), book.get("a", Family::V6)), (None, None));
    book.observe_link("a", Family::V4, None, 7);
    assert_eq!(book.get("a", Family::V4).and_then(|e| e.fault), Some(Fault::Unproven));

    let mut trusting = HealthBook::new(HealthConfig { assume: Assume::Healthy, ..HealthConfig::default() });
    trusting.set_probed([("a".to_owned(), Family::V4)]);
    trusting.observe_link("a", Family::V4, None, 1);
    assert!(trusting.is_healthy("a", Family::V4));
}

#[test]
fn a_remembered_or_first_round_judgement_stands_until_rounds_change_it() {
    let mut book = book();
    book.set_probed([("a".to_owned(), Family::V4), ("b".to_owned(), Family::V4)]);
    let mut sick = FamilyHealth::new(Some(Fault::ProbesFailing), 1);
    sick.failed_rounds = 40;
    book.remember("a", Family::V4, sick);
    assert_eq!(book.observe_link("a", Family::V4, None, 2), None, "an event does not bring it back");
    assert!(!book.is_healthy("a", Family::V4));
    assert_eq!(book.get("a", Family::V4).map(|e| e.failed_rounds), Some(0), "counters start afresh");
    book.first_round("b", Family::V4, true, 2);
    assert!(book.is_healthy("b", Family::V4), "answered at start-up: healthy at once");
    book.first_round("b", Family::V4, false, 3);
    assert!(book.is_healthy("b", Family::V4), "only a family without an entry is judged so");
    book.first_round("c", Family::V4, false, 3);
    assert_eq!(book.get("c", Family::V4).and_then(|e| e.fault), Some(Fault::ProbesFailing));
}

#[test]
fn link_faults_count_at_once_and_recovery_waits_for_up_after_rounds() {
    let mut book = book();
    book.observe_link("a", Family::V4, None, 1);
    let down = book.observe_link("a", Family::V4, Some(Fault::AdminDown), 2).unwrap();
    assert_eq!((down.healthy, down.fault), (false, Some(Fault::AdminDown)));
    assert_eq!(book.observe_link("a", Family::V4, None, 3), None, "an event alone does not bring it back");
    for round in 1..5 {
        let t = book.observe_round("a", Family::V4, None, RoundSample::default(), 3 + round);
        assert_eq!(t, None, "round {round} of 5");
        assert!(!book.is_healthy("a", Family::V4));
    }
    let up = book.observe_round("a", Family::V4, None, RoundSample::default(), 9).unwrap();
    assert!(up.healthy && up.fault.is_none());
    assert_eq!(book.get("a", Family::V4).unwrap().since, 9);
}

#[test]
fn probe_failures_need_down_after_consecutive_rounds() {
    let mut book = book();
    book.observe_link("a", Family::V4, None, 0);
    assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 1), None);
    assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 2), None);
    assert_eq!(book.observe_round("a", Family::V4, None, probe(true), 3), None, "a good round resets");
    assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 4), None);
    assert_eq!(book.observe_round("a", Family::V4, None, probe(false), 5), None);
    assert!(book.is_healthy("a", Family::V4));
    assert_eq!(book.get("a", Family::V4).unwrap().fault, Some(Fault::ProbesFailing));
    let down = book.observe_round("a", Family::V4, None, probe(false), 6).unwrap();
    assert_eq!((down.healthy, down.fault), (false, Some(Fault::ProbesFailing)));
}

#[test]
fn an_unreachable_gateway_counts_like_a_failed_round() {
    let mut book = book();
    book.observe_link("a", Family::V6, None, 0);
    let unreachable = RoundSample { gateway_unreachable: true, ..RoundSample::default() };
    for now in 1..3 {
        assert_eq!(book.observe_round("a", Family::V6, None, unreachable, now), None);
    }
    let down = book.observe_round("a", Family::V6, None, unreachable, 3).unwrap();
    assert_eq!(down.fault, Some(Fault::GatewayUnreachable));
}

#[test]
fn loss_and_rtt_follow_the_probe_window() {
    let mut book = book();
    book.observe_link("a", Family::V4, None, 0);
    for (now, answered) in [true, false, true, true].into_iter().enumerate() {
        book.observe_round("a", Family::V4, None, probe(answered), now as u64);
    }
    let entry = book.get("a", Family::V4).unwrap();
    assert_eq!(entry.probe_loss, Some(0.25));
    assert_eq!(entry.probe_rtt_seconds, Some(0.002));
    for now in 0..LOSS_WINDOW {
        book.observe_round("a", Family::V4, None, probe(true), 10 + now as u64);
    }
    assert_eq!(book.get("a", Family::V4).unwrap().probe_loss, Some(0.0), "old losses leave the window");
}

#[test]
fn occasional_loss_does_not_flap() {
    // 10% loss, never three in a row: healthy throughout.
    let mut book = book();
    book.observe_link("a", Family::V4, None, 0);
    for now in 1..=200u64 {
        let answered = now % 10 != 0;
        assert_eq!(book.observe_round("a", Family::V4, None, probe(answered), now), None, "round {now}");
    }
    assert!(book.is_healthy("a", Family::V4));
}

#[test]
fn one_shot_takes_the_link_first_then_the_round() {
    assert_eq!(one_shot(Some(Fault::NoCarrier), probe(false)), Some(Fault::NoCarrier));
    assert_eq!(one_shot(None, probe(false)), Some(Fault::ProbesFailing));
    assert_eq!(one_shot(None, probe(true)), None);
    assert_eq!(one_shot(None, RoundSample::default()), None);
}

#[test]
fn skipped_rounds_keep_the_judge_and_the_probe_figures_but_a_failed_gateway_counts() {
    let mut book = book();
    book.observe_link("lte0", Family::V4, None, 0);
    let skipped = RoundSample { skipped: true, ..RoundSample::default() };
    // Two failed probe rounds, then many skipped ones: still healthy.
    for now in 1..3 {
        assert_eq!(book.observe_round("lte0", Family::V4, None, probe(false), now), None);
    }
    for now in 3..30 {
        assert_eq!(book.observe_round("lte0", Family::V4, None, skipped, now), None);
    }
    let entry = book.get("lte0", Family::V4).unwrap();
    assert_eq!((entry.healthy, entry.failed_rounds, entry.probe_loss), (true, 2, Some(1.0)));
    // The third probed round turns it.
    let down = book.observe_round("lte0", Family::V4, None, probe(false), 30).expect("down");
    assert_eq!((down.healthy, down.fault), (false, Some(Fault::ProbesFailing)));
    // Skipped rounds do not bring it back either.
    for now in 31..40 {
        assert_eq!(book.observe_round("lte0", Family::V4, None, skipped, now), None);
    }
    assert_eq!(book.get("lte0", Family::V4).unwrap().good_rounds, 0);
    // A failed gateway neighbour counts in every round, as without a cadence.
    let mut book = self::book();
    book.observe_link("lte0", Family::V4, None, 0);
    let unreachable = RoundSample { gateway_unreachable: true, skipped: true, ..RoundSample::default() };
    for now in 1..3 {
        assert_eq!(book.observe_round("lte0", Family::V4, None, unreachable, now), None);
    }
    assert!(book.observe_round("lte0", Family::V4, None, unreachable, 3).is_some());
    // So does the link.
    let link = book.observe_round("lte0", Family::V6, Some(Fault::NoCarrier), skipped, 4);
    assert!(link.is_none() && !book.is_healthy("lte0", Family::V6));
}
