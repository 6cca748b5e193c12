//! Invoice runs: `preview → adjust → approve → finalize`, their states and persistence.
//!
//! - **Preview** rates every contract (or one customer's) for the period from what is still
//!   open in the settlement ledger ([`super::run_inputs`]) and is recomputed on demand until
//!   approval. One open run per period and target: a new preview takes the targets it covers
//!   out of every other open preview of the period.
//! - **Adjust** writes off an entry or a line (reason mandatory); the preview is recomputed.
//! - **Approve** recomputes one last time and freezes the content. A target that cannot be
//!   rated (unknown SKU, missing rate, missing master data) is *blocked*: it is not part of the
//!   run, its reason is listed, and the other targets are approved.
//! - **Finalize** ([`super::finalize`]) numbers, stores and settles; **credit notes** are in
//!   [`super::credit`]; **release** of held work is here.

pub use super::credit::{credit, credit_lines, invoice};
pub use super::finalize::{finalize, record_invoice};
use super::rating::{WriteOff, WriteOffTarget};
use super::report::{self, ServiceReport};
use super::run_inputs::rate_targets;
pub use super::run_inputs::{rate_contract, rate_contract_in, resolve_contract, Resolution};
use crate::masterdata;
use crate::store::{audit, now_ms, settlement, Db, Tx};
use canonical::work::Period;
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
    pub rating: super::Rating,
    pub report: ServiceReport,
    /// Entries of this target that are released held parts (settled as such at finalize).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_entries: Vec<String>,
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
    /// Targets that could not be rated, with the reason: *blocked*, not part of the run (fix
    /// master data, then preview again); the other targets can be approved.
    pub problems: Vec<String>,
    /// Work no rule could place on exactly one contract ("ambiguous contract"), per customer:
    /// billed on no contract until it is resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review: Vec<String>,
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

pub(super) use super::run_inputs::{decode, encode};

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
    let mut review = Vec::new();
    let newer = superseded_by_newer(db, id, period).await?;
    for (contract, range) in masterdata::contracts(db, customer).await? {
        if newer.all || newer.customers.contains(&contract.customer_id) {
            continue;
        }
        let Some(cust) = masterdata::customer(db, &contract.customer_id).await? else {
            problems.push(format!(
                "contract {}: customer {} has no complete master data",
                contract.id, contract.customer_id
            ));
            continue;
        };
        let (rated, ambiguous) = rate_targets(db, &contract, &cust, period, &write_offs).await?;
        for a in ambiguous {
            if !review.contains(&a) {
                review.push(a);
            }
        }
        for t in rated {
            let (branch, cost_centre) = t.key;
            let rating = match t.rating {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("blocked: customer {}: {e}", contract.customer_id));
                    continue;
                }
            };
            let mut report_id = format!("LN-{period}-{}-{}", contract.customer_id, contract.id);
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
                released_entries: t.released,
                invoice_number: None,
            });
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
        review,
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
            supersede(db, &run).await?;
            Ok(run)
        }
        None => {
            let id = run_id(period, customer);
            let run = compute(db, &id, period, customer, vec![]).await?;
            let mut tx = db.begin().await?;
            save(&mut tx, &run, actor, true).await?;
            tx.commit().await?;
            supersede(db, &run).await?;
            Ok(run)
        }
    }
}

/// What newer open runs of the period cover (and this run must leave to them).
struct Newer {
    all: bool,
    customers: Vec<String>,
}

async fn superseded_by_newer(db: &Db, id: &str, period: Period) -> Result<Newer, sqlx::Error> {
    let rows: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT customer FROM invoice_runs WHERE period = $1 AND id <> $2 \
         AND state IN ('preview', 'approved') \
         AND created_at > (SELECT created_at FROM invoice_runs WHERE id = $2)",
    )
    .bind(period.to_string())
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    Ok(Newer {
        all: rows.iter().any(Option::is_none),
        customers: rows.into_iter().flatten().collect(),
    })
}

/// One open run per period and target: the targets `run` covers (one customer's, or every
/// customer's) leave every other preview of the period, whose summary is recomputed.
async fn supersede(db: &Db, run: &InvoiceRun) -> Result<(), RunError> {
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM invoice_runs WHERE period = $1 AND state = 'preview' AND id <> $2",
    )
    .bind(run.period.to_string())
    .bind(&run.id)
    .fetch_all(&db.pool)
    .await?;
    for other in others {
        let removed = match &run.customer {
            Some(c) => sqlx::query(
                "DELETE FROM invoice_run_targets WHERE run_id = $1 AND customer_id = $2",
            )
            .bind(&other)
            .bind(c)
            .execute(&db.pool)
            .await?
            .rows_affected(),
            None => sqlx::query("DELETE FROM invoice_run_targets WHERE run_id = $1")
                .bind(&other)
                .execute(&db.pool)
                .await?
                .rows_affected(),
        };
        if removed == 0 {
            continue;
        }
        let mut o = load(db, &other).await?;
        let mut summary = RunSummary::default();
        for t in &o.targets {
            summary.targets += 1;
            summary.entries += t.rating.entries.len();
            summary.lines += t.rating.lines.len();
            summary.net += t.rating.totals.net;
            summary.vat += t.rating.totals.vat;
            summary.gross += t.rating.totals.gross;
        }
        o.summary = summary;
        o.problems
            .push(format!("{removed} target(s) superseded by run {}", run.id));
        let mut tx = db.begin().await?;
        save(&mut tx, &o, "system", false).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Releases held work of a finalized run's entry: billable by the next run of its period, at
/// the rate card (no cap, no diagnosis). Audited.
pub async fn release(db: &Db, run_id: &str, entry: &str, actor: &str) -> Result<String, RunError> {
    let run = load(db, run_id).await?;
    let rated = run
        .targets
        .iter()
        .flat_map(|t| t.rating.entries.iter())
        .find(|e| e.entry_id == entry && e.split.held > 0)
        .ok_or_else(|| {
            RunError::Invalid(format!("entry {entry} has no held work in run {run_id}"))
        })?;
    let item = settlement::held_item(&rated.source, &rated.entry_id);
    let mut tx = db.begin().await?;
    if !settlement::release(&mut tx, &item, actor).await? {
        return Err(RunError::Invalid(format!(
            "entry {entry} is not held (finalize run {run_id} first; released work is released once)"
        )));
    }
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "invoice_run.release",
            object: &format!("invoice_run:{run_id}"),
            before: Some(serde_json::json!({ "item": item, "state": "held" })),
            after: Some(serde_json::json!({ "item": item, "state": "released" })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(item)
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
    // Blocked targets are not part of the run: the rest is approved (isolation).
    let mut new = compute(db, id, run.period, run.customer.as_deref(), run.write_offs).await?;
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
