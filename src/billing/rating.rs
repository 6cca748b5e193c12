//! Rating: one contract, one period, its tickets, time entries and usage → rated entries,
//! invoice lines, VAT, the contingent statement and threshold crossings. Pure and
//! deterministic: the same input always gives the same output.
//!
//! Per entry, in work order (start time, then id): non-billable (reason required), flat-rate
//! coverage, free classification, written off, then free initial diagnosis per ticket (split
//! entries, `billable_from`); then rounding (entry or ticket scope); then charging by contract
//! kind (rate card, contingent draw with overdraft policy and thresholds, budget caps, calls);
//! travel as one flat charge per visit; usage × unit price; line write-offs; VAT per category.
//!
//! Minute accounting: every raw minute of an entry lands in exactly one bucket of its
//! [`MinuteSplit`]. Rounding changes billed minutes, never raw ones: the rounding surplus is
//! charged (or drawn) but is not a raw minute.

use super::rounding::round_minutes;
use canonical::contract::{
    ContingentUnit, Contract, ContractKind, Overdraft, Rollover, RoundingScope,
};
use canonical::invoice::{cents, vat_and_totals, EntryStatus, InvoiceLine, Totals, VatBreakdown};
use canonical::work::{Period, Ticket, TimeEntry, UsageRecord};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Something an approver wrote off, with the mandatory reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOff {
    pub target: WriteOffTarget,
    pub reason: String,
}

/// An entry (by id) or an invoice line (by key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum WriteOffTarget {
    Entry(String),
    Line(String),
}

/// Everything rating needs.
#[derive(Debug, Clone)]
pub struct RatingInput<'a> {
    pub contract: &'a Contract,
    pub period: Period,
    pub tickets: &'a [Ticket],
    /// The period's entries of this contract's customer (not yet billed).
    pub entries: &'a [TimeEntry],
    pub usage: &'a [UsageRecord],
    /// Contingent balance carried in (minutes, EUR or calls); 0 for other kinds.
    pub opening_balance: Decimal,
    pub write_offs: &'a [WriteOff],
}

/// Where an entry's raw minutes went. The buckets add up to `raw`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteSplit {
    pub raw: u32,
    pub free_diagnosis: u32,
    pub free_classification: u32,
    pub non_billable: u32,
    pub covered: u32,
    pub written_off: u32,
    pub held: u32,
    pub contingent: u32,
    pub invoiced: u32,
}

impl MinuteSplit {
    pub fn total(&self) -> u32 {
        self.free_diagnosis
            + self.free_classification
            + self.non_billable
            + self.covered
            + self.written_off
            + self.held
            + self.contingent
            + self.invoiced
    }
}

/// One rated entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedEntry {
    pub source: String,
    pub entry_id: String,
    pub ticket_id: String,
    pub level: String,
    pub activity: String,
    pub started_at: DateTime<Utc>,
    pub technician: String,
    pub note: Option<String>,
    /// Billed minutes after rounding (entry scope); in ticket scope the line carries them.
    pub billed_minutes: u32,
    /// Billed minutes on an invoice line (a budget counts them against its cap).
    #[serde(default)]
    pub charged_minutes: u32,
    pub split: MinuteSplit,
    pub statuses: Vec<EntryStatus>,
}

/// A contingent threshold crossed by an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdCrossing {
    pub percent: u32,
    pub entry_id: String,
    pub at: DateTime<Utc>,
    pub consumed: Decimal,
    pub available: Decimal,
}

/// Opening + allotment − consumption = closing (after overdraft and rollover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContingentStatement {
    pub unit: ContingentUnit,
    pub opening: Decimal,
    pub allotment: Decimal,
    pub consumption: Decimal,
    /// Beyond the balance: billed, carried or held per the overdraft policy.
    pub overdraft: Decimal,
    pub overdraft_policy: Overdraft,
    /// Positive remainder that expired under the rollover rule.
    pub forfeited: Decimal,
    pub closing: Decimal,
}

/// The result of rating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub contract_id: String,
    pub customer_id: String,
    pub period: Period,
    pub entries: Vec<RatedEntry>,
    pub lines: Vec<InvoiceLine>,
    pub vat: Vec<VatBreakdown>,
    pub totals: Totals,
    pub contingent: Option<ContingentStatement>,
    pub crossings: Vec<ThresholdCrossing>,
}

/// Why rating refused the input; names the record and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("time entry {entry}: `{field}`: {expected}")]
    Invalid {
        entry: String,
        field: String,
        expected: String,
    },
    #[error("contract {contract}: no hourly rate for level `{level}`, activity `{activity}`")]
    MissingRate {
        contract: String,
        level: String,
        activity: String,
    },
    #[error("contract {contract}: {what}")]
    MissingTerm { contract: String, what: String },
    #[error("write-off of {target}: a reason is required")]
    WriteOffWithoutReason { target: String },
}

const TRAVEL: &str = "travel";
const SIXTY: Decimal = Decimal::from_parts(60, 0, 0, false, 0);
const HUNDRED: Decimal = Decimal::from_parts(100, 0, 0, false, 0);

fn hours(minutes: u32) -> Decimal {
    Decimal::from(minutes) / SIXTY
}

/// Work state of one entry while rating.
struct Work<'a> {
    e: &'a TimeEntry,
    split: MinuteSplit,
    statuses: Vec<EntryStatus>,
    /// Raw minutes still to be charged after the free buckets.
    billable_raw: u32,
    billed: u32,
    /// Billed minutes put on an invoice line (within a budget cap).
    charged: u32,
}

/// A work line being built: (ticket, level, activity) → billed minutes at a rate.
#[derive(Default)]
struct LineAcc {
    minutes: u32,
    entry_ids: Vec<String>,
}

/// Rates a period of a contract.
pub fn rate(input: &RatingInput<'_>) -> Result<Rating, RatingError> {
    let c = input.contract;
    for w in input.write_offs {
        if w.reason.trim().is_empty() {
            let target = match &w.target {
                WriteOffTarget::Entry(id) => format!("entry {id}"),
                WriteOffTarget::Line(k) => format!("line {k}"),
            };
            return Err(RatingError::WriteOffWithoutReason { target });
        }
    }
    let written_entries: HashMap<&str, &str> = input
        .write_offs
        .iter()
        .filter_map(|w| match &w.target {
            WriteOffTarget::Entry(id) => Some((id.as_str(), w.reason.as_str())),
            _ => None,
        })
        .collect();
    let written_lines: HashMap<&str, &str> = input
        .write_offs
        .iter()
        .filter_map(|w| match &w.target {
            WriteOffTarget::Line(k) => Some((k.as_str(), w.reason.as_str())),
            _ => None,
        })
        .collect();
    let tickets: HashMap<&str, &Ticket> =
        input.tickets.iter().map(|t| (t.id.as_str(), t)).collect();

    let mut sorted: Vec<&TimeEntry> = input.entries.iter().collect();
    sorted.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then_with(|| a.id.cmp(&b.id))
    });

    // 1. Free buckets and diagnosis.
    let mut diag_left: HashMap<&str, u32> = HashMap::new();
    let mut work: Vec<Work<'_>> = Vec::with_capacity(sorted.len());
    for e in sorted {
        e.validate().map_err(|err| RatingError::Invalid {
            entry: e.id.clone(),
            field: err.field,
            expected: err.expected,
        })?;
        let raw = e.minutes;
        let mut w = Work {
            e,
            split: MinuteSplit {
                raw,
                ..Default::default()
            },
            statuses: vec![],
            billable_raw: 0,
            billed: 0,
            charged: 0,
        };
        let ticket = tickets.get(e.ticket_id.as_str());
        let classification = ticket.and_then(|t| t.classification.as_deref());
        if !e.billable {
            w.split.non_billable = raw;
            w.statuses.push(EntryStatus::NonBillable {
                reason: e.non_billable_reason.clone().unwrap_or_default(),
            });
        } else if matches!(
            c.kind,
            ContractKind::FlatRate | ContractKind::ManagedService { .. }
        ) {
            w.split.covered = raw;
            w.statuses.push(EntryStatus::Covered);
        } else if let Some(cl) =
            classification.filter(|cl| c.free_classifications.iter().any(|f| f == cl))
        {
            w.split.free_classification = raw;
            w.statuses.push(EntryStatus::FreeClassification {
                classification: cl.to_string(),
            });
        } else if let Some(reason) = written_entries.get(e.id.as_str()) {
            w.split.written_off = raw;
            w.statuses.push(EntryStatus::WrittenOff {
                reason: reason.to_string(),
            });
        } else if e.activity == TRAVEL {
            w.billable_raw = raw;
        } else {
            // With `billable_from`, it alone decides: before it diagnosis (free), after it
            // billable, whatever is left of the free minutes.
            let billable_from = ticket.and_then(|t| t.billable_from);
            let free = if let Some(from) = billable_from {
                if e.started_at < from {
                    raw
                } else {
                    0
                }
            } else {
                let left = diag_left
                    .entry(e.ticket_id.as_str())
                    .or_insert(c.free_diagnosis_minutes);
                let free = (*left).min(raw);
                *left -= free;
                free
            };
            if free > 0 {
                w.split.free_diagnosis = free;
                w.statuses.push(EntryStatus::FreeDiagnosis);
            }
            w.billable_raw = raw - free;
        }
        work.push(w);
    }

    // 2. Rounding (travel with a flat rate per visit is not time-billed).
    let travel_flat = c.rate_card.travel.as_ref().and_then(|t| t.flat_per_visit);
    let time_billed =
        |w: &Work<'_>| w.billable_raw > 0 && !(w.e.activity == TRAVEL && travel_flat.is_some());
    match c.rounding.scope {
        RoundingScope::Entry => {
            for w in work.iter_mut().filter(|w| time_billed(w)) {
                w.billed = round_minutes(w.billable_raw, &c.rounding);
            }
        }
        RoundingScope::Ticket => {
            // The sum per (ticket, level, activity) is rounded once; the difference to the raw
            // sum is carried by the group's last entries in work order (added to the last one
            // when rounding up, taken from the last ones backwards when rounding down).
            let mut groups: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
            for (i, w) in work.iter_mut().enumerate() {
                if time_billed(w) {
                    w.billed = w.billable_raw;
                    groups
                        .entry((
                            w.e.ticket_id.clone(),
                            w.e.level.clone(),
                            w.e.activity.clone(),
                        ))
                        .or_default()
                        .push(i);
                }
            }
            for idx in groups.values() {
                let sum: u32 = idx.iter().map(|&i| work[i].billable_raw).sum();
                let target = round_minutes(sum, &c.rounding);
                if target >= sum {
                    if let Some(&last) = idx.last() {
                        work[last].billed += target - sum;
                    }
                } else {
                    let mut take = sum - target;
                    for &i in idx.iter().rev() {
                        let t = take.min(work[i].billed);
                        work[i].billed -= t;
                        take -= t;
                        if take == 0 {
                            break;
                        }
                    }
                }
            }
        }
    }

    // 3. Charging by contract kind, in work order.
    let mut lines: Vec<InvoiceLine> = Vec::new();
    let mut acc: BTreeMap<(String, String, String), LineAcc> = BTreeMap::new();
    let mut crossings = Vec::new();
    let mut contingent = None;
    let mut overdraft_minutes_billed: u32 = 0;
    let mut overdraft_money_billed = Decimal::ZERO;
    let mut visits: BTreeMap<String, Vec<String>> = BTreeMap::new();

    let rate_of = |level: &str, activity: &str| -> Result<Decimal, RatingError> {
        if activity == TRAVEL {
            if let Some(h) = c.rate_card.travel.as_ref().and_then(|t| t.hourly) {
                return Ok(h);
            }
        }
        c.rate_card
            .hourly(level, activity)
            .ok_or_else(|| RatingError::MissingRate {
                contract: c.id.clone(),
                level: level.into(),
                activity: activity.into(),
            })
    };
    let invoice = |w: &mut Work<'_>,
                   acc: &mut BTreeMap<(String, String, String), LineAcc>,
                   raw: u32,
                   billed: u32| {
        w.split.invoiced += raw;
        if !w.statuses.contains(&EntryStatus::Invoiced) {
            w.statuses.push(EntryStatus::Invoiced);
        }
        let a = acc
            .entry((
                w.e.ticket_id.clone(),
                w.e.level.clone(),
                w.e.activity.clone(),
            ))
            .or_default();
        a.minutes += billed;
        w.charged += billed;
        if !a.entry_ids.contains(&w.e.id) {
            a.entry_ids.push(w.e.id.clone());
        }
    };

    // Travel with a flat rate: one charge per visit.
    if travel_flat.is_some() {
        for w in work
            .iter_mut()
            .filter(|w| w.e.activity == TRAVEL && w.billable_raw > 0)
        {
            let visit =
                w.e.visit_id
                    .clone()
                    .unwrap_or_else(|| format!("entry {}", w.e.id));
            visits.entry(visit).or_default().push(w.e.id.clone());
            w.split.invoiced += w.billable_raw;
            w.statuses.push(EntryStatus::Invoiced);
        }
    }

    match &c.kind {
        ContractKind::TimeAndMaterial
        | ContractKind::FlatRate
        | ContractKind::ManagedService { .. } => {
            for w in work.iter_mut().filter(|w| time_billed(w)) {
                rate_of(&w.e.level, &w.e.activity)?;
                let (raw, billed) = (w.billable_raw, w.billed);
                invoice(w, &mut acc, raw, billed);
            }
        }
        ContractKind::Budget { caps_minutes, .. } => {
            let mut used: HashMap<String, u32> = HashMap::new();
            for w in work.iter_mut().filter(|w| time_billed(w)) {
                rate_of(&w.e.level, &w.e.activity)?;
                let cap = caps_minutes.get(&w.e.level).copied();
                let (raw, billed) = (w.billable_raw, w.billed);
                // No cap for the level, or nothing left to charge after ticket-scope rounding.
                let Some(cap) = cap.filter(|_| billed > 0) else {
                    invoice(w, &mut acc, raw, billed);
                    continue;
                };
                let u = used.entry(w.e.level.clone()).or_default();
                let within = (cap.saturating_sub(*u)).min(billed);
                *u += within;
                let within_raw = if billed == 0 {
                    0
                } else {
                    (u64::from(raw) * u64::from(within) / u64::from(billed)) as u32
                };
                if within > 0 {
                    invoice(w, &mut acc, within_raw, within);
                }
                if within < billed {
                    w.split.held += raw - within_raw;
                    w.statuses.push(EntryStatus::Held {
                        reason: format!(
                            "beyond the budget cap of {cap} min for level {}",
                            w.e.level
                        ),
                    });
                }
            }
        }
        ContractKind::Contingent(t) => {
            let available = input.opening_balance + t.allotment;
            let mut consumed = Decimal::ZERO;
            let mut crossed: BTreeSet<u32> = BTreeSet::new();
            let mut over_total = Decimal::ZERO;
            let draws_level = |level: &str| {
                t.levels
                    .as_ref()
                    .is_none_or(|ls| ls.iter().any(|l| l == level))
            };
            let mut calls_used: HashSet<String> = HashSet::new();
            let mut extra_calls: Vec<String> = Vec::new();
            for w in work.iter_mut().filter(|w| {
                time_billed(w)
                    || (w.e.activity == TRAVEL && w.billable_raw > 0 && t.includes_travel)
            }) {
                let is_travel = w.e.activity == TRAVEL;
                if (is_travel && !t.includes_travel) || !draws_level(&w.e.level) {
                    if time_billed(w) {
                        rate_of(&w.e.level, &w.e.activity)?;
                        let (raw, billed) = (w.billable_raw, w.billed);
                        invoice(w, &mut acc, raw, billed);
                    }
                    continue;
                }
                if is_travel && travel_flat.is_some() {
                    // Flat travel already charged per visit; with includes_travel it draws nothing more.
                    continue;
                }
                let (raw, billed) = (w.billable_raw, w.billed);
                let amount = match t.unit {
                    ContingentUnit::Minutes => Decimal::from(billed),
                    ContingentUnit::Money => {
                        cents(hours(billed) * rate_of(&w.e.level, &w.e.activity)?)
                    }
                    ContingentUnit::Calls => {
                        if calls_used.insert(w.e.ticket_id.clone()) {
                            Decimal::ONE
                        } else {
                            Decimal::ZERO
                        }
                    }
                };
                let room = (available - consumed).max(Decimal::ZERO);
                let covered = amount.min(room);
                let over = amount - covered;
                let over_policy = if over > Decimal::ZERO {
                    Some(t.overdraft)
                } else {
                    None
                };
                match over_policy {
                    Some(Overdraft::Hold) => consumed += covered,
                    _ => consumed += amount,
                }
                // Raw minutes: the covered share is contingent, the rest per policy.
                let covered_raw = if amount.is_zero() {
                    raw
                } else {
                    let share = (Decimal::from(raw) * covered / amount).floor();
                    u32::try_from(share.mantissa() / 10i128.pow(share.scale()))
                        .unwrap_or(0)
                        .min(raw)
                };
                // Later entries of a ticket that was an extra (billed) call are covered by that
                // call's price: invoiced, not contingent.
                if amount.is_zero()
                    && t.unit == ContingentUnit::Calls
                    && extra_calls.contains(&w.e.ticket_id)
                {
                    w.split.invoiced += raw;
                    w.statuses.push(EntryStatus::Invoiced);
                    continue;
                }
                if covered_raw > 0 || amount.is_zero() {
                    w.split.contingent += covered_raw;
                    w.statuses.push(EntryStatus::Contingent);
                }
                let rest_raw = raw - covered_raw.min(raw);
                match over_policy {
                    None => w.split.contingent += rest_raw,
                    Some(Overdraft::Carry) => w.split.contingent += rest_raw,
                    Some(Overdraft::Hold) => {
                        w.split.held += rest_raw;
                        w.statuses.push(EntryStatus::Held {
                            reason: "beyond the contingent (overdraft on hold)".into(),
                        });
                    }
                    Some(Overdraft::Bill) => {
                        over_total += over;
                        match t.unit {
                            ContingentUnit::Calls => extra_calls.push(w.e.ticket_id.clone()),
                            ContingentUnit::Money => overdraft_money_billed += over,
                            ContingentUnit::Minutes => {
                                overdraft_minutes_billed +=
                                    u32::try_from(over.trunc().mantissa()).unwrap_or(0);
                            }
                        }
                        w.split.invoiced += rest_raw;
                        w.statuses.push(EntryStatus::Invoiced);
                    }
                }
                if over_policy == Some(Overdraft::Carry) {
                    over_total += over;
                }
                if over_policy == Some(Overdraft::Hold) {
                    over_total += over;
                }
                if available > Decimal::ZERO {
                    for &pct in &t.thresholds {
                        if !crossed.contains(&pct)
                            && consumed * HUNDRED >= Decimal::from(pct) * available
                        {
                            crossed.insert(pct);
                            crossings.push(ThresholdCrossing {
                                percent: pct,
                                entry_id: w.e.id.clone(),
                                at: w.e.started_at,
                                consumed,
                                available,
                            });
                        }
                    }
                }
            }
            // Lines: the fee once per period (none when a run of the period already billed
            // it), the overdraft correction, extra calls.
            if !t.fee.is_zero() {
                lines.push(InvoiceLine {
                    key: "FEE".into(),
                    description: format!(
                        "Kontingent {} ({}), Pauschale {}",
                        t.allotment.normalize(),
                        match t.unit {
                            ContingentUnit::Minutes => "Minuten",
                            ContingentUnit::Money => "EUR",
                            ContingentUnit::Calls => "Calls",
                        },
                        input.period
                    ),
                    quantity: Decimal::ONE,
                    unit: "C62".into(),
                    unit_price: t.fee,
                    price_base_quantity: None,
                    net: cents(t.fee),
                    vat_category: c.vat_category.clone(),
                    vat_rate: c.vat_rate,
                    ticket_id: None,
                    entry_ids: vec![],
                });
            }
            if overdraft_minutes_billed > 0 {
                let rate = t.overage_hourly.ok_or_else(|| RatingError::MissingTerm {
                    contract: c.id.clone(),
                    what: "overdraft `bill` needs `overage_hourly`".into(),
                })?;
                lines.push(InvoiceLine::minutes(
                    "OVERDRAFT".into(),
                    format!("Überziehung des Kontingents {}", input.period),
                    overdraft_minutes_billed,
                    rate,
                    c.vat_category.clone(),
                    c.vat_rate,
                ));
            }
            if overdraft_money_billed > Decimal::ZERO {
                lines.push(InvoiceLine {
                    key: "OVERDRAFT".into(),
                    description: format!("Überziehung des Kontingents {}", input.period),
                    quantity: Decimal::ONE,
                    unit: "C62".into(),
                    unit_price: overdraft_money_billed,
                    price_base_quantity: None,
                    net: cents(overdraft_money_billed),
                    vat_category: c.vat_category.clone(),
                    vat_rate: c.vat_rate,
                    ticket_id: None,
                    entry_ids: vec![],
                });
            }
            if !extra_calls.is_empty() {
                let price = t.per_call_price.ok_or_else(|| RatingError::MissingTerm {
                    contract: c.id.clone(),
                    what: "a calls contingent billing extra calls needs `per_call_price`".into(),
                })?;
                let n = Decimal::from(extra_calls.len() as u64);
                lines.push(InvoiceLine {
                    key: "CALLS".into(),
                    description: format!("Calls über dem Kontingent ({})", extra_calls.join(", ")),
                    quantity: n,
                    unit: "C62".into(),
                    unit_price: price,
                    price_base_quantity: None,
                    net: cents(n * price),
                    vat_category: c.vat_category.clone(),
                    vat_rate: c.vat_rate,
                    ticket_id: None,
                    entry_ids: vec![],
                });
            }
            let remainder = available - consumed;
            let (closing, forfeited) = if remainder >= Decimal::ZERO {
                match &t.rollover {
                    Rollover::Unlimited => (remainder, Decimal::ZERO),
                    Rollover::Cap(cap) => {
                        (remainder.min(*cap), (remainder - *cap).max(Decimal::ZERO))
                    }
                    Rollover::None => (Decimal::ZERO, remainder),
                }
            } else {
                match t.overdraft {
                    Overdraft::Bill => (Decimal::ZERO, Decimal::ZERO),
                    Overdraft::Carry | Overdraft::Hold => (remainder, Decimal::ZERO),
                }
            };
            contingent = Some(ContingentStatement {
                unit: t.unit,
                opening: input.opening_balance,
                allotment: t.allotment,
                consumption: consumed,
                overdraft: over_total,
                overdraft_policy: t.overdraft,
                forfeited,
                closing,
            });
        }
    }

    // 4. Work lines, one per (ticket, level, activity), priced once.
    for ((ticket_id, level, activity), a) in acc {
        let hourly = rate_of(&level, &activity)?;
        let t = tickets.get(ticket_id.as_str());
        let label = t
            .map(|t| {
                format!(
                    "Ticket {} {}",
                    t.number.as_deref().unwrap_or(&t.id),
                    t.title
                )
            })
            .unwrap_or_else(|| format!("Ticket {ticket_id}"));
        lines.push(InvoiceLine {
            ticket_id: Some(ticket_id.clone()),
            entry_ids: a.entry_ids,
            ..InvoiceLine::minutes(
                format!("T:{ticket_id}:{level}:{activity}"),
                format!("{label} – {level} Level, {activity}"),
                a.minutes,
                hourly,
                c.vat_category.clone(),
                c.vat_rate,
            )
        });
    }
    if let Some(flat) = travel_flat {
        for (visit, ids) in visits {
            lines.push(InvoiceLine {
                key: format!("TRAVEL:{visit}"),
                description: format!("Anfahrtspauschale ({visit})"),
                quantity: Decimal::ONE,
                unit: "C62".into(),
                unit_price: flat,
                price_base_quantity: None,
                net: cents(flat),
                vat_category: c.vat_category.clone(),
                vat_rate: c.vat_rate,
                ticket_id: None,
                entry_ids: ids,
            });
        }
    }
    if let ContractKind::ManagedService { unit_prices } = &c.kind {
        lines.extend(usage_lines(input, unit_prices)?);
    }

    // 5. Line write-offs: the line leaves the invoice; its entries' invoiced minutes are written off.
    let mut entries: Vec<RatedEntry> = Vec::with_capacity(work.len());
    let mut written_ids: HashMap<String, String> = HashMap::new();
    lines.retain(|l| match written_lines.get(l.key.as_str()) {
        Some(reason) => {
            for id in &l.entry_ids {
                written_ids.insert(id.clone(), reason.to_string());
            }
            false
        }
        None => true,
    });
    for mut w in work {
        if let Some(reason) = written_ids.get(&w.e.id) {
            w.split.written_off += w.split.invoiced;
            w.split.invoiced = 0;
            w.statuses.retain(|s| *s != EntryStatus::Invoiced);
            w.statuses.push(EntryStatus::WrittenOff {
                reason: reason.clone(),
            });
        }
        entries.push(RatedEntry {
            source: w.e.source.clone(),
            entry_id: w.e.id.clone(),
            ticket_id: w.e.ticket_id.clone(),
            level: w.e.level.clone(),
            activity: w.e.activity.clone(),
            started_at: w.e.started_at,
            technician: w.e.technician.clone(),
            note: w.e.note.clone(),
            billed_minutes: w.billed,
            charged_minutes: if w.split.invoiced > 0 { w.charged } else { 0 },
            split: w.split,
            statuses: w.statuses,
        });
    }
    let (vat, totals) = vat_and_totals(&lines);
    Ok(Rating {
        contract_id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        period: input.period,
        entries,
        lines,
        vat,
        totals,
        contingent,
        crossings,
    })
}

use std::collections::HashSet;

/// Pay per use: one line per usage record of the period (quantity × unit price of its SKU).
fn usage_lines(
    input: &RatingInput<'_>,
    unit_prices: &BTreeMap<String, Decimal>,
) -> Result<Vec<InvoiceLine>, RatingError> {
    let c = input.contract;
    let mut usage: Vec<&UsageRecord> = input
        .usage
        .iter()
        .filter(|u| u.period == input.period)
        .collect();
    usage.sort_by(|a, b| a.sku.cmp(&b.sku).then_with(|| a.id.cmp(&b.id)));
    let mut lines = Vec::with_capacity(usage.len());
    for u in usage {
        let price = unit_prices
            .get(&u.sku)
            .ok_or_else(|| RatingError::MissingTerm {
                contract: c.id.clone(),
                what: format!("no unit price for SKU `{}` (usage record {})", u.sku, u.id),
            })?;
        lines.push(InvoiceLine {
            key: format!("USAGE:{}:{}", u.sku, u.id),
            description: format!("{} {}", u.sku, input.period),
            quantity: u.quantity,
            unit: "C62".into(),
            unit_price: *price,
            price_base_quantity: None,
            net: cents(u.quantity * *price),
            vat_category: c.vat_category.clone(),
            vat_rate: c.vat_rate,
            ticket_id: None,
            entry_ids: vec![],
        });
    }
    Ok(lines)
}
