//! The stored inputs of one contract and period, and rating them per billing target.
//!
//! Reads only what is still open in the settlement ledger: entries without a settling document,
//! usage records without a settlement, released held parts. Each entry goes to exactly one
//! contract of its customer ([`resolve_contract`]); entries no rule can place are returned as
//! review items ("ambiguous contract") and billed on no contract. Budget caps are reduced by
//! what earlier runs of the period billed; a fee already billed for the period is not billed
//! again.

use super::rating::{rate, Rating, RatingInput, WriteOff};
use crate::store::{settlement, Db};
use canonical::contract::{Contract, ContractKind};
use canonical::invoice::vat_and_totals;
use canonical::work::{Period, Ticket, TimeEntry, UsageRecord};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

async fn tickets_for(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
) -> Result<Vec<Ticket>, sqlx::Error> {
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let list = (0..chunk.len())
            .map(|i| format!("${}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SELECT document FROM tickets WHERE id IN ({list})");
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for d in q.fetch_all(&mut *conn).await? {
            out.push(decode(&d)?);
        }
    }
    Ok(out)
}

async fn open_entries(
    conn: &mut sqlx::AnyConnection,
    customer: &str,
    period: Period,
) -> Result<Vec<TimeEntry>, sqlx::Error> {
    let docs: Vec<String> = sqlx::query_scalar(
        "SELECT document FROM time_entries WHERE customer_id = $1 AND period = $2 AND deleted = 0 \
         AND billed_invoice IS NULL ORDER BY started_at, id",
    )
    .bind(customer)
    .bind(period.to_string())
    .fetch_all(&mut *conn)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

/// Held parts an approver released, of this contract and this or an earlier period, as entries
/// of their held minutes.
async fn released_entries(
    conn: &mut sqlx::AnyConnection,
    contract: &Contract,
    period: Period,
) -> Result<Vec<TimeEntry>, sqlx::Error> {
    let mut out = Vec::new();
    for (item, c, p, minutes) in
        settlement::items_in_state(conn, &contract.customer_id, "released").await?
    {
        if c != contract.id || p > period.to_string() {
            continue;
        }
        let Some(key) = item
            .strip_prefix("entry:")
            .and_then(|k| k.strip_suffix(":held"))
        else {
            continue;
        };
        let Some((source, id)) = key.split_once(':') else {
            continue;
        };
        let doc: Option<String> =
            sqlx::query_scalar("SELECT document FROM time_entries WHERE source = $1 AND id = $2")
                .bind(source)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(d) = doc {
            let mut e: TimeEntry = decode(&d)?;
            e.minutes = minutes;
            out.push(e);
        }
    }
    Ok(out)
}

async fn usage_for(
    conn: &mut sqlx::AnyConnection,
    customer: &str,
    period: Period,
) -> Result<Vec<UsageRecord>, sqlx::Error> {
    let docs: Vec<String> = sqlx::query_scalar(
        "SELECT u.document FROM usage_records u WHERE u.customer_id = $1 AND u.period = $2 \
         AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.item = 'usage:' || u.customer_id || ':' || u.id \
                         AND s.state <> 'released')",
    )
    .bind(customer)
    .bind(period.to_string())
    .fetch_all(&mut *conn)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
}

/// Where a piece of work goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Contract(String),
    /// No rule picks exactly one contract: the reason, for the review list.
    Ambiguous(String),
}

/// The contract a piece of work is billed on: the ticket's explicit contract (if it is one of
/// the customer's); else the one contract whose scope (levels, activities, services, branch)
/// names the work; else the customer's default contract; else the customer's only contract.
/// Pay-per-use usage only goes to `managed_service` contracts, time only to the others.
pub fn resolve_contract(
    contracts: &[Contract],
    ticket: Option<&Ticket>,
    level: Option<&str>,
    activity: Option<&str>,
    service: Option<&str>,
) -> Resolution {
    let usage = service.is_some();
    let eligible: Vec<&Contract> = contracts
        .iter()
        .filter(|c| matches!(c.kind, ContractKind::ManagedService { .. }) == usage)
        .collect();
    let all: Vec<&Contract> = if eligible.is_empty() {
        contracts.iter().collect()
    } else {
        eligible
    };
    if let Some(explicit) = ticket.and_then(|t| t.contract_id.as_deref()) {
        if let Some(c) = contracts.iter().find(|c| c.id == explicit) {
            return Resolution::Contract(c.id.clone());
        }
    }
    let branch = ticket.and_then(|t| t.branch.as_deref());
    let scoped: Vec<&&Contract> = all
        .iter()
        .filter(|c| !c.scope.is_empty() && c.scope.matches(level, activity, service, branch))
        .collect();
    if let [one] = scoped.as_slice() {
        return Resolution::Contract(one.id.clone());
    }
    let defaults: Vec<&&Contract> = all.iter().filter(|c| c.is_default).collect();
    if let [one] = defaults.as_slice() {
        return Resolution::Contract(one.id.clone());
    }
    if let [one] = all.as_slice() {
        return Resolution::Contract(one.id.clone());
    }
    let names: Vec<&str> = if scoped.is_empty() {
        all.iter().map(|c| c.id.as_str()).collect()
    } else {
        scoped.iter().map(|c| c.id.as_str()).collect()
    };
    Resolution::Ambiguous(format!(
        "ambiguous contract: candidates {}; name one on the ticket, give the contracts a scope or mark one `default`",
        names.join(", ")
    ))
}

/// The contingent balance a contract starts the period with, and whether the period was
/// already booked (a later run of the same period then grants no second allotment or fee).
async fn opening(
    conn: &mut sqlx::AnyConnection,
    contract: &str,
    period: Period,
) -> Result<(Decimal, bool), sqlx::Error> {
    let same: Option<String> = sqlx::query_scalar(
        "SELECT closing FROM contingent_ledger WHERE contract_id = $1 AND period = $2",
    )
    .bind(contract)
    .bind(period.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(c) = same {
        return Ok((c.parse().unwrap_or_default(), true));
    }
    let prev: Option<String> = sqlx::query_scalar(
        "SELECT closing FROM contingent_ledger WHERE contract_id = $1 AND period < $2 ORDER BY period DESC LIMIT 1",
    )
    .bind(contract)
    .bind(period.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok((prev.and_then(|c| c.parse().ok()).unwrap_or_default(), false))
}

/// The stored inputs of one contract and period.
pub(super) struct Inputs {
    pub entries: Vec<TimeEntry>,
    pub released: Vec<TimeEntry>,
    pub tickets: Vec<Ticket>,
    pub usage: Vec<UsageRecord>,
    pub contract: Contract,
    pub opening: Decimal,
    /// Work no rule could place on one contract (never billed, listed for review).
    pub ambiguous: Vec<String>,
}

pub(super) async fn inputs(
    conn: &mut sqlx::AnyConnection,
    contract: &Contract,
    period: Period,
) -> Result<Inputs, sqlx::Error> {
    let contracts: Vec<Contract> =
        crate::masterdata::contracts_in(conn, Some(&contract.customer_id))
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
    let all_entries = open_entries(conn, &contract.customer_id, period).await?;
    let released = released_entries(conn, contract, period).await?;
    let mut ticket_ids: Vec<String> = all_entries
        .iter()
        .chain(&released)
        .map(|e| e.ticket_id.clone())
        .collect();
    ticket_ids.sort();
    ticket_ids.dedup();
    let tickets = tickets_for(conn, &ticket_ids).await?;
    let by_id: HashMap<&str, &Ticket> = tickets.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut entries = Vec::new();
    let mut ambiguous = Vec::new();
    for e in all_entries {
        let t = by_id.get(e.ticket_id.as_str()).copied();
        match resolve_contract(&contracts, t, Some(&e.level), Some(&e.activity), None) {
            Resolution::Contract(id) if id == contract.id => entries.push(e),
            Resolution::Contract(_) => {}
            Resolution::Ambiguous(why) => ambiguous.push(format!(
                "time entry {} (ticket {}): {why}",
                e.id, e.ticket_id
            )),
        }
    }
    let mut usage = Vec::new();
    for u in usage_for(conn, &contract.customer_id, period).await? {
        match resolve_contract(&contracts, None, None, None, Some(&u.sku)) {
            Resolution::Contract(id) if id == contract.id => usage.push(u),
            Resolution::Contract(_) => {}
            Resolution::Ambiguous(why) => ambiguous.push(format!("usage record {}: {why}", u.id)),
        }
    }
    let (opening, booked) = opening(conn, &contract.id, period).await?;
    let fee_billed = settlement::is_settled(
        conn,
        &settlement::fee_item(&contract.id, &period.to_string()),
    )
    .await?;
    let mut c = contract.clone();
    match &mut c.kind {
        ContractKind::Contingent(t) if booked || fee_billed => {
            t.allotment = Decimal::ZERO;
            t.fee = Decimal::ZERO;
        }
        ContractKind::Budget { caps_minutes, .. } => {
            // Caps count every run of the period.
            let used =
                settlement::billed_minutes_per_level(conn, &contract.id, &period.to_string())
                    .await?;
            for (level, cap) in caps_minutes.iter_mut() {
                *cap = cap.saturating_sub(used.get(level).copied().unwrap_or(0));
            }
        }
        _ => {}
    }
    Ok(Inputs {
        entries,
        released,
        tickets,
        usage,
        contract: c,
        opening,
        ambiguous,
    })
}

/// Rates one contract for the period from the store (all its open work in one rating).
pub async fn rate_contract(
    db: &Db,
    contract: &Contract,
    period: Period,
    write_offs: &[WriteOff],
) -> Result<Result<Rating, String>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    rate_contract_in(&mut conn, contract, period, write_offs).await
}

/// [`rate_contract`] on a given connection or transaction (a consumer reads inside its own
/// transaction: taking a second pool connection while holding SQLite's write lock can wait for
/// a connection that itself waits for the lock).
pub async fn rate_contract_in(
    conn: &mut sqlx::AnyConnection,
    contract: &Contract,
    period: Period,
    write_offs: &[WriteOff],
) -> Result<Result<Rating, String>, sqlx::Error> {
    let i = inputs(conn, contract, period).await?;
    Ok(rate(&RatingInput {
        contract: &i.contract,
        period,
        tickets: &i.tickets,
        entries: &i.entries,
        usage: &i.usage,
        opening_balance: i.opening,
        write_offs,
    })
    .map_err(|e| e.to_string()))
}

/// One billing target's rating, with the ids of released held parts it bills.
pub(super) struct RatedTarget {
    pub key: TargetKey,
    pub rating: Result<Rating, String>,
    pub released: Vec<String>,
}

/// Released held parts are billed as they were approved: at the rate card, with no diagnosis
/// and no cap (their own period's contract terms otherwise).
fn rate_released(
    i: &Inputs,
    period: Period,
    entries: &[TimeEntry],
    write_offs: &[WriteOff],
) -> Result<Rating, String> {
    let mut c = i.contract.clone();
    c.kind = ContractKind::TimeAndMaterial;
    c.free_diagnosis_minutes = 0;
    let mut tickets = i.tickets.clone();
    for t in &mut tickets {
        t.billable_from = None;
    }
    rate(&RatingInput {
        contract: &c,
        period,
        tickets: &tickets,
        entries,
        usage: &[],
        opening_balance: Decimal::ZERO,
        write_offs,
    })
    .map_err(|e| e.to_string())
}

/// Adds the released parts' rating to a target's rating (their lines keyed `R:…`).
fn merge(mut main: Rating, extra: Rating) -> Rating {
    main.entries.extend(extra.entries);
    main.lines.extend(extra.lines.into_iter().map(|mut l| {
        l.key = format!("R:{}", l.key);
        l
    }));
    let (vat, totals) = vat_and_totals(&main.lines);
    main.vat = vat;
    main.totals = totals;
    main
}

/// Rates one contract per billing target: decentral branches and (if the contract says so)
/// cost centres get their own rating; a contingent is shared and billed centrally.
pub(super) async fn rate_targets(
    db: &Db,
    contract: &Contract,
    customer: &canonical::customer::Customer,
    period: Period,
    write_offs: &[WriteOff],
) -> Result<(Vec<RatedTarget>, Vec<String>), sqlx::Error> {
    let i = {
        let mut conn = db.pool.acquire().await?;
        inputs(&mut conn, contract, period).await?
    };
    let shared = matches!(
        contract.kind,
        ContractKind::Contingent(_) | ContractKind::ManagedService { .. }
    );
    let key_of = |t: Option<&Ticket>| -> TargetKey {
        if shared {
            return (None, None);
        }
        let branch = t.and_then(|t| t.branch.as_ref()).filter(|b| {
            customer
                .branches
                .iter()
                .any(|x| &x.id == *b && x.billing == canonical::customer::BranchBilling::Decentral)
        });
        let cc = if contract.split_by_cost_centre {
            t.and_then(|t| t.cost_centre.clone())
        } else {
            None
        };
        (branch.cloned(), cc)
    };
    let tickets: HashMap<&str, &Ticket> = i.tickets.iter().map(|t| (t.id.as_str(), t)).collect();
    type Parts = (Vec<TimeEntry>, Vec<TimeEntry>);
    let mut parts: BTreeMap<TargetKey, Parts> = BTreeMap::new();
    parts.entry((None, None)).or_default();
    for e in &i.entries {
        let key = key_of(tickets.get(e.ticket_id.as_str()).copied());
        parts.entry(key).or_default().0.push(e.clone());
    }
    for e in &i.released {
        let key = key_of(tickets.get(e.ticket_id.as_str()).copied());
        parts.entry(key).or_default().1.push(e.clone());
    }
    let mut out = Vec::new();
    for (key, (entries, released)) in parts {
        if entries.is_empty() && released.is_empty() && key != (None, None) {
            continue;
        }
        let main = rate(&RatingInput {
            contract: &i.contract,
            period,
            tickets: &i.tickets,
            entries: &entries,
            usage: if key == (None, None) { &i.usage } else { &[] },
            opening_balance: i.opening,
            write_offs,
        })
        .map_err(|e| e.to_string());
        let rating = if released.is_empty() {
            main
        } else {
            main.and_then(|m| Ok(merge(m, rate_released(&i, period, &released, write_offs)?)))
        };
        out.push(RatedTarget {
            key,
            rating,
            released: released.iter().map(|e| e.id.clone()).collect(),
        });
    }
    Ok((out, i.ambiguous))
}

/// Billing target of a piece of work: (decentral branch, cost centre).
pub(super) type TargetKey = (Option<String>, Option<String>);

/// A stored JSON document (run, target, invoice) back into its type.
pub(super) fn decode<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A value as the JSON document the billing tables store.
pub(super) fn encode<T: serde::Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}
