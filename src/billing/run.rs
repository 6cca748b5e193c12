//! Invoice runs: `preview → adjust → approve → finalize`, persisted, and credit notes.
//!
//! - **Preview** rates every contract (or one customer's) for the period from the stored,
//!   not-yet-billed work and is recomputed on demand until approval.
//! - **Adjust** writes off an entry or a line (reason mandatory); the preview is recomputed.
//! - **Approve** recomputes one last time and freezes the content.
//! - **Finalize** assigns gapless numbers from each contract's number range, stores the
//!   invoices (immutable: the database refuses updates and deletes), marks every rated entry as
//!   settled (held work stays open for a later run), books the contingent ledger and publishes
//!   `invoice.finalized` through the outbox — all in one transaction. The first statement
//!   claims the run (`approved → finalized`), so concurrent finalizers serialize on it (row
//!   lock on PostgreSQL, the write lock on SQLite) and the loser changes nothing.
//! - **Credit note** reverses an invoice with a new number from the same range, referencing
//!   the original; its entries become billable again.

use super::rating::{rate, Rating, RatingInput, WriteOff, WriteOffTarget};
use super::report::{self, ServiceReport};
use crate::masterdata;
use crate::store::{audit, now_ms, outbox, Db, Tx};
use canonical::contract::{Contract, ContractKind};
use canonical::invoice::{Invoice, InvoiceKind};
use canonical::work::{Period, Ticket, TimeEntry, UsageRecord};
use canonical::Envelope;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// Counts and totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub targets: usize,
    pub entries: usize,
    pub lines: usize,
    pub net: Decimal,
    pub vat: Decimal,
    pub gross: Decimal,
}

/// One billing target of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Position in the run.
    #[serde(default)]
    pub seq: i64,
    pub customer_id: String,
    pub contract_id: String,
    /// A branch with decentral billing gets its own invoice.
    #[serde(default)]
    pub branch: Option<String>,
    /// With `split_by_cost_centre`, one invoice per cost centre.
    #[serde(default)]
    pub cost_centre: Option<String>,
    pub number_range: String,
    pub rating: Rating,
    pub report: ServiceReport,
    /// Set at finalization.
    #[serde(default)]
    pub invoice_number: Option<String>,
}

/// A run's state and content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRun {
    pub id: String,
    pub period: Period,
    pub customer: Option<String>,
    pub state: RunState,
    /// Counts and totals over all targets (kept on the run row).
    #[serde(default)]
    pub summary: RunSummary,
    /// The targets (stored one row each; filled by [`load`], empty in the run row itself).
    #[serde(default)]
    pub targets: Vec<Target>,
    pub write_offs: Vec<WriteOff>,
    /// Contracts that could not be rated, with the reason (fix master data, then preview again).
    pub problems: Vec<String>,
    /// Invoices of this run that an export target refused (dead letters of `export-<target>`,
    /// e.g. failed e-invoice rules with their ids); filled by [`load`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Preview,
    Approved,
    Finalized,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Preview => "preview",
            RunState::Approved => "approved",
            RunState::Finalized => "finalized",
        }
    }
}

/// Why a run operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no invoice run {0}")]
    NotFound(String),
    #[error("invoice run {id} is {state:?}; {what}")]
    WrongState {
        id: String,
        state: RunState,
        what: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
}

fn decode<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn encode<T: Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Loads a run without its targets (summary only).
pub async fn load_summary(db: &Db, id: &str) -> Result<InvoiceRun, RunError> {
    let doc: Option<String> = sqlx::query_scalar("SELECT document FROM invoice_runs WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(decode(&doc.ok_or_else(|| RunError::NotFound(id.into()))?)?)
}

/// Loads a run with all its targets.
pub async fn load(db: &Db, id: &str) -> Result<InvoiceRun, RunError> {
    let mut run = load_summary(db, id).await?;
    let docs: Vec<String> = sqlx::query_scalar(
        "SELECT document FROM invoice_run_targets WHERE run_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    run.targets = docs.iter().map(|d| decode(d)).collect::<Result<_, _>>()?;
    let numbers: std::collections::HashSet<&str> = run
        .targets
        .iter()
        .filter_map(|t| t.invoice_number.as_deref())
        .collect();
    if !numbers.is_empty() {
        let dead: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT consumer, envelope, reason FROM dead_letters \
             WHERE consumer LIKE 'export-%' AND replayed_at IS NULL ORDER BY id",
        )
        .fetch_all(&db.pool)
        .await?;
        for (consumer, envelope, reason) in dead {
            let subject = serde_json::from_str::<Envelope>(&envelope)
                .ok()
                .and_then(|e| e.subject);
            if subject.as_deref().is_some_and(|s| numbers.contains(s)) {
                run.export_problems.push(format!("{consumer}: {reason}"));
            }
        }
    }
    Ok(run)
}

async fn write_targets(db: &Db, run_id: &str, targets: &[Target]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for t in targets {
        sqlx::query("INSERT INTO invoice_run_targets (run_id, seq, customer_id, contract_id, document) VALUES ($1, $2, $3, $4, $5)")
            .bind(run_id)
            .bind(t.seq)
            .bind(&t.customer_id)
            .bind(&t.contract_id)
            .bind(encode(t)?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Runs of a period (newest last).
pub async fn list(
    db: &Db,
    period: Option<&str>,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = match period {
        Some(p) => sqlx::query(
            "SELECT id, period, state FROM invoice_runs WHERE period = $1 ORDER BY created_at, id",
        )
        .bind(p)
        .fetch_all(&db.pool)
        .await?,
        None => {
            sqlx::query("SELECT id, period, state FROM invoice_runs ORDER BY created_at, id")
                .fetch_all(&db.pool)
                .await?
        }
    };
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("period")?, r.try_get("state")?)))
        .collect()
}

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

async fn usage_for(
    conn: &mut sqlx::AnyConnection,
    customer: &str,
    period: Period,
) -> Result<Vec<UsageRecord>, sqlx::Error> {
    let docs: Vec<String> = sqlx::query_scalar(
        "SELECT document FROM usage_records WHERE customer_id = $1 AND period = $2",
    )
    .bind(customer)
    .bind(period.to_string())
    .fetch_all(&mut *conn)
    .await?;
    docs.iter().map(|d| decode(d)).collect()
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
struct Inputs {
    entries: Vec<TimeEntry>,
    tickets: Vec<Ticket>,
    usage: Vec<UsageRecord>,
    contract: Contract,
    opening: Decimal,
}

async fn inputs(
    conn: &mut sqlx::AnyConnection,
    contract: &Contract,
    period: Period,
) -> Result<Inputs, sqlx::Error> {
    let entries = if matches!(contract.kind, ContractKind::ManagedService { .. }) {
        Vec::new()
    } else {
        open_entries(conn, &contract.customer_id, period).await?
    };
    let mut ticket_ids: Vec<String> = entries.iter().map(|e| e.ticket_id.clone()).collect();
    ticket_ids.sort();
    ticket_ids.dedup();
    let tickets = tickets_for(conn, &ticket_ids).await?;
    let usage = usage_for(conn, &contract.customer_id, period).await?;
    let (opening, booked) = opening(conn, &contract.id, period).await?;
    let mut c = contract.clone();
    if booked {
        if let ContractKind::Contingent(t) = &mut c.kind {
            t.allotment = Decimal::ZERO;
            t.fee = Decimal::ZERO;
        }
    }
    Ok(Inputs {
        entries,
        tickets,
        usage,
        contract: c,
        opening,
    })
}

/// Rates one contract for the period from the store (all its work in one rating).
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

/// Billing target of a piece of work: (decentral branch, cost centre).
type TargetKey = (Option<String>, Option<String>);

/// Rates one contract per billing target: decentral branches and (if the contract says so)
/// cost centres get their own rating; a contingent is shared and billed centrally.
async fn rate_targets(
    db: &Db,
    contract: &Contract,
    customer: &canonical::customer::Customer,
    period: Period,
    write_offs: &[WriteOff],
) -> Result<Vec<(TargetKey, Result<Rating, String>)>, sqlx::Error> {
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
    let tickets: std::collections::HashMap<&str, &Ticket> =
        i.tickets.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut parts: std::collections::BTreeMap<TargetKey, Vec<TimeEntry>> =
        std::collections::BTreeMap::new();
    parts.entry((None, None)).or_default();
    for e in &i.entries {
        parts
            .entry(key_of(tickets.get(e.ticket_id.as_str()).copied()))
            .or_default()
            .push(e.clone());
    }
    let mut out = Vec::new();
    for (key, entries) in parts {
        if entries.is_empty() && key != (None, None) {
            continue;
        }
        let r = rate(&RatingInput {
            contract: &i.contract,
            period,
            tickets: &i.tickets,
            entries: &entries,
            usage: if key == (None, None) { &i.usage } else { &[] },
            opening_balance: i.opening,
            write_offs,
        })
        .map_err(|e| e.to_string());
        out.push((key, r));
    }
    Ok(out)
}

fn run_id(period: Period, customer: Option<&str>) -> String {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    match customer {
        Some(c) => format!("RUN-{period}-{c}-{}", &suffix[24..]),
        None => format!("RUN-{period}-{}", &suffix[24..]),
    }
}

async fn compute(
    db: &Db,
    id: &str,
    period: Period,
    customer: Option<&str>,
    write_offs: Vec<WriteOff>,
) -> Result<InvoiceRun, RunError> {
    // Targets are written as they are computed, a batch at a time: memory stays bounded by
    // one batch, however many customers and entries the period has.
    sqlx::query("DELETE FROM invoice_run_targets WHERE run_id = $1")
        .bind(id)
        .execute(&db.pool)
        .await?;
    let mut batch: Vec<Target> = Vec::with_capacity(64);
    let mut summary = RunSummary::default();
    let mut seq = 0i64;
    let mut problems = Vec::new();
    for (contract, range) in masterdata::contracts(db, customer).await? {
        let Some(cust) = masterdata::customer(db, &contract.customer_id).await? else {
            problems.push(format!(
                "contract {}: customer {} has no complete master data",
                contract.id, contract.customer_id
            ));
            continue;
        };
        for ((branch, cost_centre), rating) in
            rate_targets(db, &contract, &cust, period, &write_offs).await?
        {
            match rating {
                Ok(rating) => {
                    let mut report_id =
                        format!("LN-{period}-{}-{}", contract.customer_id, contract.id);
                    for part in [&branch, &cost_centre].into_iter().flatten() {
                        report_id.push('-');
                        report_id.push_str(part);
                    }
                    let report = report::build(&report_id, &cust, &rating);
                    summary.targets += 1;
                    summary.entries += rating.entries.len();
                    summary.lines += rating.lines.len();
                    summary.net += rating.totals.net;
                    summary.vat += rating.totals.vat;
                    summary.gross += rating.totals.gross;
                    seq += 1;
                    batch.push(Target {
                        seq,
                        customer_id: contract.customer_id.clone(),
                        contract_id: contract.id.clone(),
                        branch,
                        cost_centre,
                        number_range: range.clone(),
                        rating,
                        report,
                        invoice_number: None,
                    });
                }
                Err(e) => problems.push(e),
            }
        }
        if batch.len() >= 64 {
            write_targets(db, id, &batch).await?;
            batch.clear();
        }
    }
    write_targets(db, id, &batch).await?;
    Ok(InvoiceRun {
        id: id.to_string(),
        period,
        customer: customer.map(String::from),
        state: RunState::Preview,
        summary,
        targets: vec![],
        write_offs,
        problems,
        export_problems: Vec::new(),
    })
}

async fn save(
    tx: &mut Tx<'_>,
    run: &InvoiceRun,
    actor: &str,
    insert: bool,
) -> Result<(), sqlx::Error> {
    let run = &InvoiceRun {
        targets: vec![],
        ..run.clone()
    };
    if insert {
        sqlx::query(
            "INSERT INTO invoice_runs (id, period, customer, state, document, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&run.id)
        .bind(run.period.to_string())
        .bind(&run.customer)
        .bind(run.state.as_str())
        .bind(encode(run)?)
        .bind(now_ms())
        .bind(actor)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query("UPDATE invoice_runs SET state = $1, document = $2 WHERE id = $3")
            .bind(run.state.as_str())
            .bind(encode(run)?)
            .bind(&run.id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Creates (or recomputes) the open preview run of a period and customer filter, with all targets.
pub async fn preview(
    db: &Db,
    period: Period,
    customer: Option<&str>,
    actor: &str,
) -> Result<InvoiceRun, RunError> {
    let run = preview_summary(db, period, customer, actor).await?;
    load(db, &run.id).await
}

/// Like [`preview`], returning only the run's summary: memory stays bounded by one batch of
/// targets however large the period is (the monthly schedule and big runs use this).
pub async fn preview_summary(
    db: &Db,
    period: Period,
    customer: Option<&str>,
    actor: &str,
) -> Result<InvoiceRun, RunError> {
    let existing: Option<(String, String)> = {
        let row = match customer {
            Some(c) => sqlx::query("SELECT id, state FROM invoice_runs WHERE period = $1 AND customer = $2 AND state <> 'finalized' ORDER BY created_at DESC LIMIT 1")
                .bind(period.to_string()).bind(c).fetch_optional(&db.pool).await?,
            None => sqlx::query("SELECT id, state FROM invoice_runs WHERE period = $1 AND customer IS NULL AND state <> 'finalized' ORDER BY created_at DESC LIMIT 1")
                .bind(period.to_string()).fetch_optional(&db.pool).await?,
        };
        row.map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("state")?)))
            .transpose()?
    };
    match existing {
        Some((id, state)) if state == "approved" => Err(RunError::WrongState {
            id,
            state: RunState::Approved,
            what: "it is frozen; finalize it before previewing the period again".into(),
        }),
        Some((id, _)) => {
            let old = load_summary(db, &id).await?;
            let run = compute(db, &id, period, customer, old.write_offs).await?;
            let mut tx = db.begin().await?;
            save(&mut tx, &run, actor, false).await?;
            tx.commit().await?;
            Ok(run)
        }
        None => {
            let id = run_id(period, customer);
            let run = compute(db, &id, period, customer, vec![]).await?;
            let mut tx = db.begin().await?;
            save(&mut tx, &run, actor, true).await?;
            tx.commit().await?;
            Ok(run)
        }
    }
}

/// Writes off an entry or a line of a preview run (reason mandatory) and recomputes it.
pub async fn adjust(
    db: &Db,
    id: &str,
    target: WriteOffTarget,
    reason: &str,
    actor: &str,
) -> Result<InvoiceRun, RunError> {
    if reason.trim().is_empty() {
        return Err(RunError::Invalid(
            "a write-off needs a reason (`reason`)".into(),
        ));
    }
    let run = load(db, id).await?;
    if run.state != RunState::Preview {
        return Err(RunError::WrongState {
            id: id.into(),
            state: run.state,
            what: "only a preview can be adjusted".into(),
        });
    }
    let known = run.targets.iter().any(|t| match &target {
        WriteOffTarget::Entry(e) => t.rating.entries.iter().any(|r| &r.entry_id == e),
        WriteOffTarget::Line(k) => t.rating.lines.iter().any(|l| &l.key == k),
    });
    if !known {
        return Err(RunError::Invalid(format!(
            "{target:?} is not part of run {id}"
        )));
    }
    let mut write_offs = run.write_offs.clone();
    write_offs.retain(|w| w.target != target);
    write_offs.push(WriteOff {
        target: target.clone(),
        reason: reason.to_string(),
    });
    let new = compute(db, id, run.period, run.customer.as_deref(), write_offs).await?;
    let mut tx = db.begin().await?;
    save(&mut tx, &new, actor, false).await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "invoice_run.write_off",
            object: &format!("invoice_run:{id}"),
            before: None,
            after: Some(serde_json::json!({ "target": target, "reason": reason })),
        },
    )
    .await?;
    tx.commit().await?;
    load(db, id).await
}

/// Freezes a preview (recomputed one last time).
pub async fn approve(db: &Db, id: &str, actor: &str) -> Result<InvoiceRun, RunError> {
    let run = load(db, id).await?;
    if run.state != RunState::Preview {
        return Err(RunError::WrongState {
            id: id.into(),
            state: run.state,
            what: "only a preview can be approved".into(),
        });
    }
    let mut new = compute(db, id, run.period, run.customer.as_deref(), run.write_offs).await?;
    if !new.problems.is_empty() {
        return Err(RunError::Invalid(format!(
            "run {id} has problems; fix them first: {}",
            new.problems.join("; ")
        )));
    }
    new.state = RunState::Approved;
    let mut tx = db.begin().await?;
    save(&mut tx, &new, actor, false).await?;
    sqlx::query("UPDATE invoice_runs SET approved_at = $1, approved_by = $2 WHERE id = $3")
        .bind(now_ms())
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "invoice_run.approve",
            object: &format!("invoice_run:{id}"),
            before: Some(serde_json::json!({ "state": "preview" })),
            after: Some(serde_json::json!({ "state": "approved", "net": new.summary.net })),
        },
    )
    .await?;
    tx.commit().await?;
    load(db, id).await
}

/// Takes the next number of a range (inside the finalizing transaction: gapless).
async fn next_number(tx: &mut Tx<'_>, range: &str) -> Result<String, RunError> {
    let row = sqlx::query("UPDATE number_ranges SET next = next + 1 WHERE id = $1 RETURNING next - 1 AS n, prefix, width")
        .bind(range)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| RunError::Invalid(format!("number range {range:?} does not exist")))?;
    let n: i64 = row.try_get("n")?;
    let prefix: String = row.try_get("prefix")?;
    let width: i64 = row.try_get("width")?;
    Ok(format!("{prefix}{n:0width$}", width = width as usize))
}

fn berlin_today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive()
}

async fn store_invoice(tx: &mut Tx<'_>, inv: &Invoice) -> Result<(), sqlx::Error> {
    record_invoice(tx, inv).await?;
    let ev = Envelope::new(
        "/drehkreuz/billing",
        "invoice.finalized",
        &inv.number,
        "1",
        chrono::Utc::now(),
        inv,
    )
    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    outbox::enqueue(tx, &ev).await
}

/// Writes a finalized invoice to the `invoices` table (what exports and write-backs read).
pub async fn record_invoice(tx: &mut Tx<'_>, inv: &Invoice) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invoices (number, run_id, customer_id, kind, original_number, period, net, vat, gross, document, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&inv.number)
    .bind(&inv.run_id)
    .bind(&inv.buyer.id)
    .bind(match inv.kind {
        InvoiceKind::Invoice => "invoice",
        InvoiceKind::CreditNote => "credit_note",
    })
    .bind(&inv.original_number)
    .bind(inv.period.to_string())
    .bind(inv.totals.net.to_string())
    .bind(inv.totals.vat.to_string())
    .bind(inv.totals.gross.to_string())
    .bind(encode(inv)?)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Finalizes an approved run; finalizing twice changes nothing.
pub async fn finalize(db: &Db, id: &str, actor: &str) -> Result<InvoiceRun, RunError> {
    // Master data is read before the transaction: inside it, the connection holding the write
    // lock must not wait for a second pooled connection.
    let frozen = load(db, id).await?;
    let seller = masterdata::seller(db).await?;
    let mut buyers = std::collections::HashMap::new();
    for t in &frozen.targets {
        if let Some(c) = masterdata::customer(db, &t.customer_id).await? {
            buyers.insert(t.customer_id.clone(), c);
        }
    }
    let mut tx = db.begin().await?;
    // The claim is the transaction's first write: concurrent finalizers serialize here.
    let claimed = sqlx::query("UPDATE invoice_runs SET state = 'finalized', finalized_at = $1 WHERE id = $2 AND state = 'approved'")
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if claimed == 0 {
        drop(tx);
        let run = load(db, id).await?;
        return match run.state {
            RunState::Finalized => Ok(run),
            s => Err(RunError::WrongState {
                id: id.into(),
                state: s,
                what: "approve it before finalizing".into(),
            }),
        };
    }
    let mut run = frozen.clone();
    let today = berlin_today();
    for t in &mut run.targets {
        let Some(buyer) = buyers.get(&t.customer_id).cloned() else {
            return Err(RunError::Invalid(format!(
                "customer {} vanished from master data",
                t.customer_id
            )));
        };
        let mut buyer = buyer;
        let mut note = Vec::new();
        if let Some(b) = &t.branch {
            if let Some(br) = buyer.branches.iter().find(|x| &x.id == b).cloned() {
                buyer.name = format!("{} – {}", buyer.name, br.name);
                if let Some(a) = br.address {
                    buyer.address = a;
                }
                note.push(format!("Filiale {}", br.id));
            }
        }
        if let Some(cc) = &t.cost_centre {
            note.push(format!("Kostenstelle {cc}"));
        }
        let settled = if t.rating.lines.is_empty() {
            format!("run:{id}")
        } else {
            let number = next_number(&mut tx, &t.number_range).await?;
            let inv = Invoice {
                number: number.clone(),
                kind: InvoiceKind::Invoice,
                original_number: None,
                run_id: Some(id.to_string()),
                number_range: t.number_range.clone(),
                issue_date: today,
                due_date: today + chrono::Duration::days(i64::from(buyer.payment_terms_days)),
                period: run.period,
                period_start: run.period.first_day(),
                period_end: run.period.last_day(),
                seller: seller.clone(),
                buyer_reference: buyer.buyer_reference.clone(),
                buyer: buyer.clone(),
                contract_id: t.contract_id.clone(),
                lines: t.rating.lines.clone(),
                vat: t.rating.vat.clone(),
                totals: t.rating.totals.clone(),
                currency: "EUR".into(),
                payment_terms: format!(
                    "Zahlbar innerhalb von {} Tagen ohne Abzug.",
                    buyer.payment_terms_days
                ),
                service_report_id: Some(t.report.id.clone()),
                note: (!note.is_empty()).then(|| note.join(", ")),
            };
            store_invoice(&mut tx, &inv).await?;
            t.invoice_number = Some(number.clone());
            number
        };
        // Every rated entry is settled by this run, except held work (waits for approval).
        for e in &t.rating.entries {
            let held = e.split.held > 0 && e.split.invoiced == 0 && e.split.contingent == 0;
            if held {
                continue;
            }
            sqlx::query("UPDATE time_entries SET billed_invoice = $1 WHERE source = $2 AND id = $3 AND billed_invoice IS NULL")
                .bind(&settled)
                .bind(&e.source)
                .bind(&e.entry_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(s) = &t.rating.contingent {
            sqlx::query(
                "INSERT INTO contingent_ledger (contract_id, period, run_id, statement, closing) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (contract_id, period) DO UPDATE SET run_id = excluded.run_id, statement = excluded.statement, closing = excluded.closing",
            )
            .bind(&t.contract_id)
            .bind(run.period.to_string())
            .bind(id)
            .bind(encode(s)?)
            .bind(s.closing.to_string())
            .execute(&mut *tx)
            .await?;
        }
    }
    for t in &run.targets {
        sqlx::query("UPDATE invoice_run_targets SET document = $1 WHERE run_id = $2 AND seq = $3")
            .bind(encode(t)?)
            .bind(id)
            .bind(t.seq)
            .execute(&mut *tx)
            .await?;
    }
    run.state = RunState::Finalized;
    sqlx::query("UPDATE invoice_runs SET document = $1 WHERE id = $2")
        .bind(encode(&InvoiceRun {
            targets: vec![],
            ..run.clone()
        })?)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "invoice_run.finalize",
            object: &format!("invoice_run:{id}"),
            before: Some(serde_json::json!({ "state": "approved" })),
            after: Some(serde_json::json!({
                "state": "finalized",
                "invoices": run.targets.iter().filter_map(|t| t.invoice_number.clone()).collect::<Vec<_>>(),
            })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(run)
}

/// A stored invoice.
pub async fn invoice(db: &Db, number: &str) -> Result<Option<Invoice>, sqlx::Error> {
    let doc: Option<String> = sqlx::query_scalar("SELECT document FROM invoices WHERE number = $1")
        .bind(number)
        .fetch_optional(&db.pool)
        .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// Issues a credit note for an invoice (once); its entries become billable again.
pub async fn credit(db: &Db, number: &str, reason: &str, actor: &str) -> Result<Invoice, RunError> {
    if reason.trim().is_empty() {
        return Err(RunError::Invalid(
            "a credit note needs a reason (`reason`)".into(),
        ));
    }
    let original = invoice(db, number)
        .await?
        .ok_or_else(|| RunError::NotFound(format!("invoice {number}")))?;
    if original.kind != InvoiceKind::Invoice {
        return Err(RunError::Invalid(format!(
            "{number} is a credit note; only invoices can be credited"
        )));
    }
    let mut tx = db.begin().await?;
    let credit_number = next_number(&mut tx, &original.number_range).await?;
    let credited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM invoices WHERE original_number = $1")
            .bind(number)
            .fetch_one(&mut *tx)
            .await?;
    if credited > 0 {
        return Err(RunError::Invalid(format!(
            "invoice {number} was already credited"
        )));
    }
    let mut lines = original.lines.clone();
    for l in &mut lines {
        l.quantity = -l.quantity;
        l.net = -l.net;
    }
    let (vat, totals) = canonical::invoice::vat_and_totals(&lines);
    let today = berlin_today();
    let note = Invoice {
        number: credit_number,
        kind: InvoiceKind::CreditNote,
        original_number: Some(number.to_string()),
        issue_date: today,
        due_date: today,
        lines,
        vat,
        totals,
        note: Some(format!("Gutschrift zu Rechnung {number}: {reason}")),
        ..original
    };
    store_invoice(&mut tx, &note).await?;
    sqlx::query("UPDATE time_entries SET billed_invoice = NULL WHERE billed_invoice = $1")
        .bind(number)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "invoice.credit_note",
            object: &format!("invoice:{number}"),
            before: None,
            after: Some(serde_json::json!({ "credit_note": note.number, "reason": reason, "gross": note.totals.gross })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(note)
}
