//! Billing rules, the four worked examples of BILLING.md (to the cent), and property tests.

use super::rating::*;
use canonical::contract::*;
use canonical::invoice::EntryStatus;
use canonical::work::{Period, Ticket, TimeEntry, UsageRecord};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;

fn ticket(id: &str) -> Ticket {
    Ticket {
        source: "t".into(),
        id: id.into(),
        version: 1,
        customer_id: Some("C-1".into()),
        organization_id: None,
        number: Some(format!("#{id}")),
        title: "Drucker".into(),
        classification: None,
        level: None,
        billable_from: None,
        asset: None,
        branch: None,
        cost_centre: None,
        contract_id: None,
    }
}

fn entry(id: &str, ticket: &str, level: &str, minutes: u32, at_min: i64) -> TimeEntry {
    TimeEntry {
        source: "t".into(),
        id: id.into(),
        version: 1,
        ticket_id: ticket.into(),
        customer_id: Some("C-1".into()),
        technician: "anna".into(),
        level: level.into(),
        activity: "remote".into(),
        started_at: "2026-10-05T08:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            + chrono::Duration::minutes(at_min),
        minutes,
        billable: true,
        non_billable_reason: None,
        visit_id: None,
        note: None,
    }
}

fn card(rates: &[(&str, Decimal)]) -> RateCard {
    RateCard {
        rates: rates
            .iter()
            .map(|(l, r)| Rate {
                level: l.to_string(),
                activity: None,
                hourly: *r,
            })
            .collect(),
        travel: None,
    }
}

fn contract(kind: ContractKind, rates: &[(&str, Decimal)], rounding: RoundingPolicy) -> Contract {
    Contract {
        id: "K-1".into(),
        customer_id: "C-1".into(),
        kind,
        rate_card: card(rates),
        rounding,
        free_classifications: vec!["base_bug".into()],
        free_diagnosis_minutes: 0,
        vat_rate: dec!(19),
        vat_category: "S".into(),
        split_by_cost_centre: false,
        scope: Default::default(),
        is_default: false,
    }
}

fn rounding(inc: u32, mode: RoundingMode, scope: RoundingScope) -> RoundingPolicy {
    RoundingPolicy {
        increment_minutes: inc,
        mode,
        scope,
        minimum_minutes: None,
    }
}

fn period() -> Period {
    "2026-10".parse().unwrap()
}

fn run(
    c: &Contract,
    tickets: &[Ticket],
    entries: &[TimeEntry],
    opening: Decimal,
    wo: &[WriteOff],
) -> Rating {
    rate(&RatingInput {
        contract: c,
        period: period(),
        tickets,
        entries,
        usage: &[],
        opening_balance: opening,
        write_offs: wo,
    })
    .unwrap()
}

#[test]
fn example_a_each_started_quarter_hour() {
    let c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(200))],
        rounding(15, RoundingMode::Up, RoundingScope::Entry),
    );
    let e = [
        entry("1", "T", "1st", 7, 0),
        entry("2", "T", "1st", 16, 10),
        entry("3", "T", "1st", 45, 20),
    ];
    let r = run(&c, &[ticket("T")], &e, dec!(0), &[]);
    assert_eq!(
        r.entries
            .iter()
            .map(|e| e.billed_minutes)
            .collect::<Vec<_>>(),
        vec![15, 30, 45]
    );
    assert_eq!(r.lines.len(), 1);
    // 90 minutes, priced per 60 (BT-149).
    assert_eq!(
        (
            r.lines[0].quantity,
            r.lines[0].unit.as_str(),
            r.lines[0].base_quantity()
        ),
        (dec!(90), "MIN", dec!(60))
    );
    assert_eq!(
        (r.totals.net, r.totals.vat, r.totals.gross),
        (dec!(300.00), dec!(57.00), dec!(357.00))
    );
}

#[test]
fn example_b_per_ticket_scope() {
    let e = [
        entry("1", "T", "1st", 45, 0),
        entry("2", "T", "1st", 45, 50),
        entry("3", "T", "1st", 5, 100),
    ];
    let c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(200))],
        rounding(60, RoundingMode::Up, RoundingScope::Ticket),
    );
    let r = run(&c, &[ticket("T")], &e, dec!(0), &[]);
    assert_eq!(r.lines[0].quantity, dec!(120));
    assert_eq!(r.totals.net, dec!(400.00));
    let c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(200))],
        rounding(60, RoundingMode::Up, RoundingScope::Entry),
    );
    assert_eq!(
        run(&c, &[ticket("T")], &e, dec!(0), &[]).totals.net,
        dec!(600.00)
    );
}

#[test]
fn example_c_free_diagnosis_splits_an_entry() {
    let mut c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(70))],
        rounding(5, RoundingMode::Up, RoundingScope::Entry),
    );
    c.free_diagnosis_minutes = 30;
    let r = run(
        &c,
        &[ticket("T")],
        &[
            entry("1", "T", "1st", 20, 0),
            entry("2", "T", "1st", 25, 30),
        ],
        dec!(0),
        &[],
    );
    assert_eq!(r.entries[0].split.free_diagnosis, 20);
    assert_eq!(r.entries[1].split.free_diagnosis, 10);
    assert_eq!(r.entries[1].split.invoiced, 15);
    assert_eq!(r.entries[1].billed_minutes, 15);
    assert_eq!(r.totals.net, dec!(17.50));
}

fn contingent_terms() -> ContingentTerms {
    ContingentTerms {
        unit: ContingentUnit::Minutes,
        allotment: dec!(600),
        fee: dec!(850.00),
        rollover: Rollover::Unlimited,
        overdraft: Overdraft::Bill,
        overage_hourly: Some(dec!(95)),
        per_call_price: None,
        thresholds: vec![80, 100],
        levels: None,
        includes_travel: false,
    }
}

#[test]
fn example_d_prepaid_contingent_with_rollover_and_overdraft() {
    let c = contract(
        ContractKind::Contingent(contingent_terms()),
        &[("1st", dec!(95))],
        rounding(15, RoundingMode::Up, RoundingScope::Entry),
    );
    // 13 h 30 min after rounding: 9 × 90 min.
    let e: Vec<_> = (0..9)
        .map(|i| entry(&format!("{i}"), "T", "1st", 90, i * 100))
        .collect();
    let r = run(&c, &[ticket("T")], &e, dec!(120), &[]);
    let s = r.contingent.clone().unwrap();
    assert_eq!(
        (
            s.opening,
            s.allotment,
            s.consumption,
            s.overdraft,
            s.closing
        ),
        (dec!(120), dec!(600), dec!(810), dec!(90), dec!(0))
    );
    let fee = r.lines.iter().find(|l| l.key == "FEE").unwrap();
    let od = r.lines.iter().find(|l| l.key == "OVERDRAFT").unwrap();
    assert_eq!(
        (fee.net, od.quantity, od.net),
        (dec!(850.00), dec!(90), dec!(142.50))
    );
    assert_eq!(r.totals.net, dec!(992.50));
    assert_eq!(r.lines.len(), 2, "contingent work is not a line of its own");
    // 80 % of 720 = 576 min: crossed by the 7th entry (630); 100 % = 720 by the 8th (720).
    let crossed: Vec<_> = r
        .crossings
        .iter()
        .map(|c| (c.percent, c.entry_id.as_str()))
        .collect();
    assert_eq!(crossed, vec![(80, "6"), (100, "7")]);
    // The last entry is the overdraft: 90 raw minutes invoiced as the correction line.
    assert_eq!(r.entries[8].split.invoiced, 90);
    assert_eq!(r.entries[0].split.contingent, 90);
}

#[test]
fn non_billable_needs_reason_and_is_listed_not_charged() {
    let c = contract(
        ContractKind::Contingent(contingent_terms()),
        &[("1st", dec!(95))],
        RoundingPolicy::default(),
    );
    let mut e = entry("1", "T", "1st", 30, 0);
    e.billable = false;
    let err = rate(&RatingInput {
        contract: &c,
        period: period(),
        tickets: &[ticket("T")],
        entries: std::slice::from_ref(&e),
        usage: &[],
        opening_balance: dec!(0),
        write_offs: &[],
    })
    .unwrap_err();
    assert!(err.to_string().contains("`non_billable_reason`"), "{err}");
    e.non_billable_reason = Some("Kulanz".into());
    let r = run(&c, &[ticket("T")], &[e], dec!(0), &[]);
    assert_eq!(r.entries[0].split.non_billable, 30);
    assert_eq!(
        r.entries[0].statuses,
        vec![EntryStatus::NonBillable {
            reason: "Kulanz".into()
        }]
    );
    assert_eq!(
        r.contingent.unwrap().consumption,
        dec!(0),
        "never consumes the contingent"
    );
}

#[test]
fn free_classification_and_flat_rate_coverage() {
    let c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(100))],
        RoundingPolicy::default(),
    );
    let mut t = ticket("T");
    t.classification = Some("base_bug".into());
    let r = run(
        &c,
        &[t, ticket("U")],
        &[entry("1", "T", "1st", 30, 0), entry("2", "U", "1st", 30, 1)],
        dec!(0),
        &[],
    );
    assert_eq!(r.entries[0].split.free_classification, 30);
    assert_eq!(r.totals.net, dec!(50.00));
    let flat = contract(
        ContractKind::FlatRate,
        &[("1st", dec!(100))],
        RoundingPolicy::default(),
    );
    let r = run(
        &flat,
        &[ticket("U")],
        &[entry("2", "U", "1st", 30, 1)],
        dec!(0),
        &[],
    );
    assert_eq!(r.entries[0].statuses, vec![EntryStatus::Covered]);
    assert!(r.lines.is_empty() && r.totals.gross.is_zero());
}

#[test]
fn billable_from_makes_earlier_work_diagnosis() {
    let c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(60))],
        RoundingPolicy::default(),
    );
    let mut t = ticket("T");
    t.billable_from = Some("2026-10-05T09:00:00Z".parse().unwrap());
    let r = run(
        &c,
        &[t],
        &[
            entry("1", "T", "1st", 40, 0),
            entry("2", "T", "1st", 20, 90),
        ],
        dec!(0),
        &[],
    );
    assert_eq!(r.entries[0].split.free_diagnosis, 40);
    assert_eq!(r.entries[1].split.invoiced, 20);
    assert_eq!(r.totals.net, dec!(20.00));
}

#[test]
fn minimum_and_single_rounding_per_line() {
    let mut pol = rounding(1, RoundingMode::Up, RoundingScope::Entry);
    pol.minimum_minutes = Some(15);
    let c = contract(ContractKind::TimeAndMaterial, &[("1st", dec!(99.99))], pol);
    // 3 × 7 min → 3 × 15 min = 45 min × 99.99/60 = 74.9925 → 74.99 (per entry it would be 3 × 25.00 = 75.00).
    let e = [
        entry("1", "T", "1st", 7, 0),
        entry("2", "T", "1st", 7, 10),
        entry("3", "T", "1st", 7, 20),
    ];
    let r = run(&c, &[ticket("T")], &e, dec!(0), &[]);
    assert_eq!(r.totals.net, dec!(74.99));
}

#[test]
fn travel_flat_rate_once_per_visit() {
    let mut c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(80))],
        RoundingPolicy::default(),
    );
    c.rate_card.travel = Some(Travel {
        flat_per_visit: Some(dec!(45.00)),
        hourly: None,
    });
    let mut t1 = entry("1", "T", "1st", 30, 0);
    t1.activity = "travel".into();
    t1.visit_id = Some("V1".into());
    let mut t2 = t1.clone();
    t2.id = "2".into();
    t2.started_at += chrono::Duration::hours(3);
    let mut w = entry("3", "T", "1st", 60, 40);
    w.activity = "onsite".into();
    let r = run(&c, &[ticket("T")], &[t1, t2, w], dec!(0), &[]);
    let travel: Vec<_> = r
        .lines
        .iter()
        .filter(|l| l.key.starts_with("TRAVEL"))
        .collect();
    assert_eq!(travel.len(), 1);
    assert_eq!(travel[0].net, dec!(45.00));
    assert_eq!(r.totals.net, dec!(125.00));
}

#[test]
fn per_level_contingent_bills_other_levels() {
    let mut t = contingent_terms();
    t.levels = Some(vec!["1st".into()]);
    let c = contract(
        ContractKind::Contingent(t),
        &[("1st", dec!(95)), ("3rd", dec!(150))],
        RoundingPolicy::default(),
    );
    let r = run(
        &c,
        &[ticket("T")],
        &[
            entry("1", "T", "1st", 60, 0),
            entry("2", "T", "3rd", 60, 10),
        ],
        dec!(0),
        &[],
    );
    assert_eq!(r.contingent.unwrap().consumption, dec!(60));
    assert_eq!(
        r.lines
            .iter()
            .find(|l| l.key == "T:T:3rd:remote")
            .unwrap()
            .net,
        dec!(150.00)
    );
}

#[test]
fn calls_contingent_and_extra_calls() {
    let t = ContingentTerms {
        unit: ContingentUnit::Calls,
        allotment: dec!(2),
        fee: dec!(100),
        per_call_price: Some(dec!(49)),
        overage_hourly: None,
        ..contingent_terms()
    };
    let c = contract(
        ContractKind::Contingent(t),
        &[("1st", dec!(95))],
        RoundingPolicy::default(),
    );
    let e = [
        entry("1", "A", "1st", 30, 0),
        entry("2", "A", "1st", 30, 10),
        entry("3", "B", "1st", 10, 20),
        entry("4", "C", "1st", 10, 30),
    ];
    let r = run(
        &c,
        &[ticket("A"), ticket("B"), ticket("C")],
        &e,
        dec!(0),
        &[],
    );
    assert_eq!(r.contingent.as_ref().unwrap().consumption, dec!(3));
    let calls = r.lines.iter().find(|l| l.key == "CALLS").unwrap();
    assert_eq!((calls.quantity, calls.net), (dec!(1), dec!(49.00)));
    assert_eq!(r.totals.net, dec!(149.00));
}

#[test]
fn money_contingent_draws_prices_and_bills_the_excess() {
    let t = ContingentTerms {
        unit: ContingentUnit::Money,
        allotment: dec!(200.00),
        fee: dec!(180.00),
        overage_hourly: None,
        ..contingent_terms()
    };
    let c = contract(
        ContractKind::Contingent(t),
        &[("1st", dec!(90))],
        rounding(15, RoundingMode::Up, RoundingScope::Entry),
    );
    // 60 min = 90.00 €, 45 min = 67.50 €, 60 min = 90.00 € → 247.50 € drawn from 200.00 €.
    let e = [
        entry("1", "T", "1st", 60, 0),
        entry("2", "T", "1st", 40, 100),
        entry("3", "T", "1st", 55, 200),
    ];
    let r = run(&c, &[ticket("T")], &e, dec!(0), &[]);
    let s = r.contingent.clone().unwrap();
    assert_eq!(
        (s.consumption, s.overdraft, s.closing),
        (dec!(247.50), dec!(47.50), dec!(0))
    );
    let od = r.lines.iter().find(|l| l.key == "OVERDRAFT").unwrap();
    assert_eq!(od.net, dec!(47.50));
    assert_eq!(r.totals.net, dec!(227.50));
    assert_eq!(
        r.crossings.iter().map(|x| x.percent).collect::<Vec<_>>(),
        vec![80, 100]
    );
}

#[test]
fn later_entries_of_an_extra_call_are_covered_by_its_price() {
    let t = ContingentTerms {
        unit: ContingentUnit::Calls,
        allotment: dec!(1),
        fee: dec!(50),
        per_call_price: Some(dec!(49)),
        overage_hourly: None,
        ..contingent_terms()
    };
    let c = contract(
        ContractKind::Contingent(t),
        &[("1st", dec!(95))],
        RoundingPolicy::default(),
    );
    let e = [
        entry("1", "A", "1st", 30, 0),
        entry("2", "B", "1st", 20, 10),
        entry("3", "B", "1st", 25, 20),
    ];
    let r = run(&c, &[ticket("A"), ticket("B")], &e, dec!(0), &[]);
    assert_eq!(r.entries[2].split.invoiced, 25);
    assert_eq!(r.entries[0].split.contingent, 30);
    assert_eq!(r.totals.net, dec!(99.00));
}

#[test]
fn rollover_cap_and_none() {
    for (rollover, closing, forfeited) in [
        (Rollover::Unlimited, dec!(540), dec!(0)),
        (Rollover::Cap(dec!(120)), dec!(120), dec!(420)),
        (Rollover::None, dec!(0), dec!(540)),
    ] {
        let t = ContingentTerms {
            rollover,
            ..contingent_terms()
        };
        let c = contract(
            ContractKind::Contingent(t),
            &[("1st", dec!(95))],
            RoundingPolicy::default(),
        );
        let s = run(
            &c,
            &[ticket("T")],
            &[entry("1", "T", "1st", 60, 0)],
            dec!(0),
            &[],
        )
        .contingent
        .unwrap();
        assert_eq!((s.closing, s.forfeited), (closing, forfeited));
    }
}

#[test]
fn overdraft_carry_and_hold() {
    let e = [
        entry("1", "T", "1st", 500, 0),
        entry("2", "T", "1st", 200, 600),
    ];
    let carry = contract(
        ContractKind::Contingent(ContingentTerms {
            overdraft: Overdraft::Carry,
            ..contingent_terms()
        }),
        &[("1st", dec!(95))],
        RoundingPolicy::default(),
    );
    let r = run(&carry, &[ticket("T")], &e, dec!(0), &[]);
    assert_eq!(r.contingent.as_ref().unwrap().closing, dec!(-100));
    assert_eq!(r.totals.net, dec!(850.00), "only the fee");
    let hold = contract(
        ContractKind::Contingent(ContingentTerms {
            overdraft: Overdraft::Hold,
            ..contingent_terms()
        }),
        &[("1st", dec!(95))],
        RoundingPolicy::default(),
    );
    let r = run(&hold, &[ticket("T")], &e, dec!(0), &[]);
    let s = r.contingent.unwrap();
    assert_eq!((s.consumption, s.closing), (dec!(600), dec!(0)));
    assert_eq!(r.entries[1].split.held, 100);
    assert_eq!(r.entries[1].split.contingent, 100);
}

#[test]
fn budget_caps_hold_the_rest() {
    let caps = BTreeMap::from([("1st".to_string(), 60u32)]);
    let c = contract(
        ContractKind::Budget {
            caps_minutes: caps,
            thresholds: vec![80, 100],
        },
        &[("1st", dec!(60))],
        RoundingPolicy::default(),
    );
    let r = run(
        &c,
        &[ticket("T")],
        &[
            entry("1", "T", "1st", 45, 0),
            entry("2", "T", "1st", 45, 60),
        ],
        dec!(0),
        &[],
    );
    assert_eq!(r.totals.net, dec!(60.00));
    assert_eq!(r.entries[1].split.held, 30);
    assert!(matches!(
        r.entries[1].statuses.last(),
        Some(EntryStatus::Held { .. })
    ));
}

#[test]
fn managed_service_usage_and_two_vat_rates() {
    let prices = BTreeMap::from([
        ("M365".to_string(), dec!(12.50)),
        ("BACKUP-GB".to_string(), dec!(0.07)),
    ]);
    let mut c = contract(
        ContractKind::ManagedService {
            unit_prices: prices,
        },
        &[],
        RoundingPolicy::default(),
    );
    let usage = [
        UsageRecord {
            source: "rmm".into(),
            id: "u1".into(),
            version: 1,
            customer_id: "C-1".into(),
            sku: "M365".into(),
            quantity: dec!(14),
            period: period(),
        },
        UsageRecord {
            source: "rmm".into(),
            id: "u2".into(),
            version: 1,
            customer_id: "C-1".into(),
            sku: "BACKUP-GB".into(),
            quantity: dec!(333),
            period: period(),
        },
    ];
    let r = rate(&RatingInput {
        contract: &c,
        period: period(),
        tickets: &[],
        entries: &[],
        usage: &usage,
        opening_balance: dec!(0),
        write_offs: &[],
    })
    .unwrap();
    assert_eq!(r.totals.net, dec!(198.31)); // 175.00 + 23.31
    assert_eq!(r.totals.vat, dec!(37.68));
    c.vat_rate = dec!(7);
    let mut lines = r.lines.clone();
    lines[0].vat_rate = dec!(7);
    let (vat, totals) = canonical::invoice::vat_and_totals(&lines);
    assert_eq!(vat.len(), 2);
    assert_eq!(totals.net, dec!(198.31));
}

#[test]
fn write_offs_of_entry_and_line_need_a_reason() {
    let c = contract(
        ContractKind::TimeAndMaterial,
        &[("1st", dec!(60))],
        RoundingPolicy::default(),
    );
    let e = [
        entry("1", "T", "1st", 30, 0),
        entry("2", "U", "1st", 60, 10),
    ];
    let wo = [
        WriteOff {
            target: WriteOffTarget::Entry("1".into()),
            reason: "Kulanz".into(),
        },
        WriteOff {
            target: WriteOffTarget::Line("T:U:1st:remote".into()),
            reason: "Ticket strittig".into(),
        },
    ];
    let r = run(&c, &[ticket("T"), ticket("U")], &e, dec!(0), &wo);
    assert!(r.lines.is_empty());
    assert_eq!(r.entries[0].split.written_off, 30);
    assert_eq!(r.entries[1].split.written_off, 60);
    let bad = [WriteOff {
        target: WriteOffTarget::Entry("1".into()),
        reason: " ".into(),
    }];
    let err = rate(&RatingInput {
        contract: &c,
        period: period(),
        tickets: &[],
        entries: &e,
        usage: &[],
        opening_balance: dec!(0),
        write_offs: &bad,
    })
    .unwrap_err();
    assert!(err.to_string().contains("reason is required"));
}

fn arb_contract() -> impl Strategy<Value = Contract> {
    let kind = prop_oneof![
        Just(ContractKind::TimeAndMaterial),
        Just(ContractKind::Contingent(contingent_terms())),
        Just(ContractKind::Contingent(ContingentTerms {
            overdraft: Overdraft::Hold,
            ..contingent_terms()
        })),
        Just(ContractKind::Contingent(ContingentTerms {
            overdraft: Overdraft::Carry,
            ..contingent_terms()
        })),
        Just(ContractKind::Budget {
            caps_minutes: BTreeMap::from([("1st".to_string(), 120u32)]),
            thresholds: vec![80, 100],
        }),
        Just(ContractKind::FlatRate),
    ];
    (
        kind,
        prop::sample::select(vec![1u32, 5, 15, 60]),
        any::<bool>(),
        any::<bool>(),
        0u32..60,
    )
        .prop_map(|(kind, inc, nearest, ticket_scope, diag)| {
            let mut c = contract(
                kind,
                &[("1st", dec!(95)), ("2nd", dec!(120))],
                rounding(
                    inc,
                    if nearest {
                        RoundingMode::Nearest
                    } else {
                        RoundingMode::Up
                    },
                    if ticket_scope {
                        RoundingScope::Ticket
                    } else {
                        RoundingScope::Entry
                    },
                ),
            );
            c.free_diagnosis_minutes = diag;
            c
        })
}

fn arb_entries() -> impl Strategy<Value = Vec<TimeEntry>> {
    prop::collection::vec(
        (
            0usize..4,
            1u32..300,
            any::<bool>(),
            0i64..5000,
            any::<bool>(),
        ),
        0..25,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (t, m, second, at, free))| {
                let mut e = entry(
                    &format!("{i:03}"),
                    &format!("T{t}"),
                    if second { "2nd" } else { "1st" },
                    m,
                    at,
                );
                if free && i % 5 == 0 {
                    e.billable = false;
                    e.non_billable_reason = Some("Kulanz".into());
                }
                e
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn every_raw_minute_is_accounted_once_and_rating_is_deterministic(c in arb_contract(), e in arb_entries(), opening in 0i64..200) {
        let tickets: Vec<_> = (0..4).map(|i| { let mut t = ticket(&format!("T{i}")); if i == 3 { t.classification = Some("base_bug".into()); } t }).collect();
        let r1 = run(&c, &tickets, &e, Decimal::from(opening), &[]);
        for re in &r1.entries {
            prop_assert_eq!(re.split.total(), re.split.raw, "entry {} {:?}", re.entry_id, re.split);
        }
        let raw_in: u32 = e.iter().map(|x| x.minutes).sum();
        let raw_out: u32 = r1.entries.iter().map(|x| x.split.raw).sum();
        prop_assert_eq!(raw_in, raw_out);
        let mut shuffled = e.clone();
        shuffled.reverse();
        let r2 = run(&c, &tickets, &shuffled, Decimal::from(opening), &[]);
        prop_assert_eq!(&r1, &r2, "same input, same result, whatever the arrival order");
        let sum: Decimal = r1.lines.iter().map(|l| l.net).sum();
        prop_assert_eq!(r1.totals.net, sum);
        prop_assert_eq!(r1.totals.gross, r1.totals.net + r1.totals.vat);
        let vat: Decimal = r1.vat.iter().map(|v| v.amount).sum();
        prop_assert_eq!(r1.totals.vat, vat);
    }

    #[test]
    fn aligned_durations_are_unchanged(inc in prop::sample::select(vec![1u32, 5, 15, 30, 60]), k in 1u32..20, nearest in any::<bool>()) {
        let c = contract(ContractKind::TimeAndMaterial, &[("1st", dec!(60))], rounding(inc, if nearest { RoundingMode::Nearest } else { RoundingMode::Up }, RoundingScope::Entry));
        let r = run(&c, &[ticket("T")], &[entry("1", "T", "1st", k * inc, 0)], dec!(0), &[]);
        prop_assert_eq!(r.entries[0].billed_minutes, k * inc);
        prop_assert_eq!(r.totals.net, Decimal::from(k * inc));
    }
}

#[test]
fn budget_entry_rounded_down_to_nothing_keeps_its_raw_minutes() {
    // Found by the property test: ticket scope, nearest 60 → the group rounds down to 0 billed
    // minutes; the entry's raw minute must still be accounted (invoiced at 0 minutes).
    let caps = BTreeMap::from([("1st".to_string(), 120u32)]);
    let c = contract(
        ContractKind::Budget {
            caps_minutes: caps,
            thresholds: vec![80, 100],
        },
        &[("1st", dec!(95))],
        rounding(60, RoundingMode::Nearest, RoundingScope::Ticket),
    );
    // 61 + 1 = 62 min → 60 billed: the last entry (1 min) is rounded down to 0 billed minutes.
    let r = run(
        &c,
        &[ticket("T")],
        &[entry("1", "T", "1st", 61, 0), entry("2", "T", "1st", 1, 90)],
        dec!(0),
        &[],
    );
    assert_eq!(r.entries[1].billed_minutes, 0);
    for e in &r.entries {
        assert_eq!(e.split.total(), e.split.raw, "{e:?}");
    }
    assert_eq!(r.totals.net, dec!(95.00));
}
