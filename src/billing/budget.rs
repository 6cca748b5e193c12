//! Budget contracts as they stand: per level, the cap, what is used against it, what is left
//! and what waits beyond it (held), and the thresholds crossed — from a [`Rating`] of the
//! period, so the live status, the notices and the invoice agree.
//!
//! The cap counts billed minutes (after rounding) in the rating's work order, exactly as
//! [`crate::billing::rating::rate`] applies it: an entry takes `min(cap − used, billed)`; the
//! rest is held. A threshold `p` of a level is crossed by the entry with which `used` first
//! reaches `p` % of the cap (seed 004: the customer is told before the budget is exceeded; at
//! 100 % the next work is held). Pure: the `contingent-ledger` consumer turns the crossings into
//! `budget.threshold_crossed` events once per threshold, level and period.

use crate::billing::rating::Rating;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One level of a budget now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetLevel {
    pub level: String,
    pub cap_minutes: u32,
    /// Billed minutes counted against the cap.
    pub used_minutes: u32,
    /// `cap − used`.
    pub remaining_minutes: u32,
    /// Billed minutes beyond the cap, held for the customer's approval.
    pub held_minutes: u32,
    /// Thresholds (percent of the cap) reached so far in the period.
    pub crossed: Vec<u32>,
}

/// A threshold of one level reached by an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCrossing {
    pub level: String,
    pub percent: u32,
    pub entry_id: String,
    pub at: DateTime<Utc>,
    pub used_minutes: u32,
    pub cap_minutes: u32,
}

/// The budget status per level (every capped level, in level order) and the crossings in the
/// order they happened.
pub fn status(
    rating: &Rating,
    caps: &BTreeMap<String, u32>,
    thresholds: &[u32],
) -> (Vec<BudgetLevel>, Vec<BudgetCrossing>) {
    let mut thresholds: Vec<u32> = thresholds.to_vec();
    thresholds.sort_unstable();
    thresholds.dedup();
    let mut levels: BTreeMap<&str, BudgetLevel> = caps
        .iter()
        .map(|(l, c)| {
            (
                l.as_str(),
                BudgetLevel {
                    level: l.clone(),
                    cap_minutes: *c,
                    used_minutes: 0,
                    remaining_minutes: *c,
                    held_minutes: 0,
                    crossed: Vec::new(),
                },
            )
        })
        .collect();
    let mut crossings = Vec::new();
    for e in rating.entries.iter().filter(|e| e.billed_minutes > 0) {
        let Some(s) = levels.get_mut(e.level.as_str()) else {
            continue;
        };
        let before = s.used_minutes;
        let within = s.cap_minutes.saturating_sub(before).min(e.billed_minutes);
        s.used_minutes += within;
        s.held_minutes += e.billed_minutes - within;
        s.remaining_minutes = s.cap_minutes - s.used_minutes;
        for &p in &thresholds {
            let reached =
                |used: u32| u64::from(used) * 100 >= u64::from(s.cap_minutes) * u64::from(p);
            if s.cap_minutes > 0 && !reached(before) && reached(s.used_minutes) {
                s.crossed.push(p);
                crossings.push(BudgetCrossing {
                    level: s.level.clone(),
                    percent: p,
                    entry_id: e.entry_id.clone(),
                    at: e.started_at,
                    used_minutes: s.used_minutes,
                    cap_minutes: s.cap_minutes,
                });
            }
        }
    }
    (levels.into_values().collect(), crossings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::rating::{rate, RatingInput};
    use canonical::contract::*;
    use canonical::work::{Ticket, TimeEntry};
    use rust_decimal::Decimal;

    fn entry(id: &str, level: &str, minutes: u32, hour: i64) -> TimeEntry {
        TimeEntry {
            source: "t".into(),
            id: id.into(),
            version: 1,
            ticket_id: "T".into(),
            customer_id: Some("C-1".into()),
            technician: "anna".into(),
            level: level.into(),
            activity: "remote".into(),
            started_at: "2026-10-05T08:00:00Z".parse::<DateTime<Utc>>().unwrap()
                + chrono::Duration::hours(hour),
            minutes,
            billable: true,
            non_billable_reason: None,
            visit_id: None,
            note: None,
        }
    }

    #[test]
    fn used_held_remaining_and_crossings_per_level() {
        let caps = BTreeMap::from([("1st".to_string(), 240u32), ("2nd".to_string(), 120)]);
        let c = Contract {
            id: "K-1".into(),
            customer_id: "C-1".into(),
            kind: ContractKind::Budget {
                caps_minutes: caps.clone(),
                thresholds: vec![80, 100],
            },
            rate_card: RateCard {
                rates: ["1st", "2nd", "3rd"]
                    .iter()
                    .map(|l| Rate {
                        level: l.to_string(),
                        activity: None,
                        hourly: Decimal::new(90, 0),
                    })
                    .collect(),
                travel: None,
            },
            rounding: RoundingPolicy {
                increment_minutes: 15,
                mode: RoundingMode::Up,
                scope: RoundingScope::Entry,
                minimum_minutes: None,
            },
            free_classifications: vec![],
            free_diagnosis_minutes: 0,
            vat_rate: Decimal::new(19, 0),
            vat_category: "S".into(),
            split_by_cost_centre: false,
            scope: Default::default(),
            is_default: false,
        };
        let t = Ticket {
            source: "t".into(),
            id: "T".into(),
            version: 1,
            customer_id: Some("C-1".into()),
            organization_id: None,
            number: None,
            title: "x".into(),
            classification: None,
            level: None,
            billable_from: None,
            asset: None,
            branch: None,
            cost_centre: None,
            contract_id: None,
        };
        // 1st (15-min rounding): 105 + 105 = 210 ≥ 192 (80 %) with the second entry; then 60
        // more: 30 within (240 = 100 %), 30 held. 2nd: 30 (25 %). 3rd: no cap, not listed.
        let es = [
            entry("a", "1st", 100, 0),
            entry("b", "1st", 95, 1),
            entry("x", "2nd", 30, 2),
            entry("c", "1st", 60, 3),
            entry("z", "3rd", 60, 4),
        ];
        let r = rate(&RatingInput {
            contract: &c,
            period: "2026-10".parse().unwrap(),
            tickets: std::slice::from_ref(&t),
            entries: &es,
            usage: &[],
            opening_balance: Decimal::ZERO,
            write_offs: &[],
        })
        .unwrap();
        let (levels, crossings) = status(&r, &caps, &[100, 80]);
        assert_eq!(
            levels,
            vec![
                BudgetLevel {
                    level: "1st".into(),
                    cap_minutes: 240,
                    used_minutes: 240,
                    remaining_minutes: 0,
                    held_minutes: 30,
                    crossed: vec![80, 100],
                },
                BudgetLevel {
                    level: "2nd".into(),
                    cap_minutes: 120,
                    used_minutes: 30,
                    remaining_minutes: 90,
                    held_minutes: 0,
                    crossed: vec![],
                },
            ]
        );
        assert_eq!(
            crossings
                .iter()
                .map(|x| (
                    x.level.as_str(),
                    x.percent,
                    x.entry_id.as_str(),
                    x.used_minutes
                ))
                .collect::<Vec<_>>(),
            vec![("1st", 80, "b", 210), ("1st", 100, "c", 240)]
        );
        // The status agrees with what rating held.
        let held: u32 = r
            .entries
            .iter()
            .filter(|e| e.level == "1st")
            .map(|e| e.billed_minutes)
            .sum::<u32>()
            - 240;
        assert_eq!(held, 30);
    }
}
