//! Finalizing an approved run: gapless numbers, immutable invoices, and the settlement of
//! every item the run bills — all in one transaction.
//!
//! The first statement claims the run (`approved → finalized`), so concurrent finalizers
//! serialize on it (row lock on PostgreSQL, the write lock on SQLite) and the loser changes
//! nothing. Every item is settled through [`settlement::settle`], which refuses an item that
//! another document already settled: an overlapping run that was approved before a newer one
//! was finalized is refused as a whole, with the item and its document named. A target with
//! nothing to bill (no line with a net amount) gets no invoice and uses no number.

use super::run::{encode, load, InvoiceRun, RunError, RunState, Target};
use crate::masterdata;
use crate::store::settlement::Settlement;
use crate::store::Db;
use crate::store::{audit, now_ms, outbox, settlement, Tx};
use canonical::invoice::{Invoice, InvoiceKind};
use canonical::Envelope;
use rust_decimal::Decimal;
use sqlx::Row;

/// Takes the next number of a range (inside the finalizing transaction: gapless).
pub(super) async fn next_number(tx: &mut Tx<'_>, range: &str) -> Result<String, RunError> {
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

pub(super) fn berlin_today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive()
}

pub(super) async fn store_invoice(tx: &mut Tx<'_>, inv: &Invoice) -> Result<(), sqlx::Error> {
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
        // Nothing to bill (no line with an amount): no invoice, no number.
        let settled = if t.rating.lines.iter().all(|l| l.net.is_zero()) {
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
        settle_target(&mut tx, id, &run.period.to_string(), t, &settled).await?;
        settle_written_off_usage(&mut tx, id, &run.period.to_string(), t, &frozen.write_offs)
            .await?;
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

fn refused(e: settlement::SettleError) -> RunError {
    match e {
        settlement::SettleError::Store(e) => RunError::Store(e),
        other => RunError::Invalid(format!("finalize refused: {other}")),
    }
}

/// Settles everything a target bills: each rated entry's part (billed, written off or free),
/// held parts (held), released parts (billed), usage records and the period's fee; books the
/// contingent ledger. `settled` is the invoice number, or `run:<id>` without an invoice.
async fn settle_target(
    tx: &mut Tx<'_>,
    run_id: &str,
    period: &str,
    t: &Target,
    settled: &str,
) -> Result<(), RunError> {
    let base = |item: String, kind: &'static str, state: &'static str| Settlement {
        item,
        kind,
        customer_id: t.customer_id.clone(),
        contract_id: t.contract_id.clone(),
        period: period.to_string(),
        level: None,
        state,
        document: settled.to_string(),
        run_id: run_id.to_string(),
        minutes: 0,
        amount: Decimal::ZERO,
        reason: None,
    };
    let has_invoice = !settled.starts_with("run:");
    for e in &t.rating.entries {
        let s = &e.split;
        let held_item = settlement::held_item(&e.source, &e.entry_id);
        if t.released_entries.contains(&e.entry_id) {
            // A released held part: billed now.
            let mut row = base(held_item, "held", "billed");
            row.minutes = s.raw;
            settlement::settle(tx, &row).await.map_err(refused)?;
            continue;
        }
        let billed_part = s.invoiced > 0 || s.contingent > 0;
        let state = if s.invoiced > 0 && has_invoice {
            "billed"
        } else if s.written_off > 0 && !billed_part {
            "written_off"
        } else {
            "free"
        };
        if s.held > 0 {
            let mut row = base(held_item, "held", "held");
            row.minutes = s.held;
            row.document = format!("run:{run_id}");
            settlement::settle(tx, &row).await.map_err(refused)?;
        }
        if s.held > 0 && !billed_part && s.written_off == 0 {
            // Only held: the entry's main part has nothing of its own.
            mark_entry(tx, &e.source, &e.entry_id, &format!("held:{run_id}")).await?;
            continue;
        }
        let mut row = base(
            settlement::entry_item(&e.source, &e.entry_id),
            "entry",
            state,
        );
        row.level = Some(e.level.clone());
        row.minutes = e.charged_minutes;
        if state != "billed" {
            row.document = format!("run:{run_id}");
        }
        if let Some(w) = e.statuses.iter().find_map(|st| match st {
            canonical::invoice::EntryStatus::WrittenOff { reason } => Some(reason.clone()),
            _ => None,
        }) {
            row.reason = Some(w);
        }
        settlement::settle(tx, &row).await.map_err(refused)?;
        mark_entry(tx, &e.source, &e.entry_id, settled).await?;
    }
    for l in &t.rating.lines {
        if let Some(id) = l
            .key
            .strip_prefix("USAGE:")
            .and_then(|k| k.split_once(':'))
            .map(|(_, id)| id)
        {
            let mut row = base(
                settlement::usage_item(&t.customer_id, id),
                "usage",
                "billed",
            );
            row.amount = l.net;
            settlement::settle(tx, &row).await.map_err(refused)?;
        }
        if l.key == "FEE" && !l.net.is_zero() {
            let mut row = base(
                settlement::fee_item(&t.contract_id, period),
                "fee",
                "billed",
            );
            row.amount = l.net;
            settlement::settle(tx, &row).await.map_err(refused)?;
        }
    }
    if let Some(s) = &t.rating.contingent {
        sqlx::query(
            "INSERT INTO contingent_ledger (contract_id, period, run_id, statement, closing) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (contract_id, period) DO UPDATE SET run_id = excluded.run_id, statement = excluded.statement, closing = excluded.closing",
        )
        .bind(&t.contract_id)
        .bind(period)
        .bind(run_id)
        .bind(encode(s)?)
        .bind(s.closing.to_string())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Mirrors an entry's settlement on the entry row (intake refuses changes to settled work).
async fn mark_entry(tx: &mut Tx<'_>, source: &str, id: &str, doc: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE time_entries SET billed_invoice = $1 WHERE source = $2 AND id = $3 AND billed_invoice IS NULL")
        .bind(doc)
        .bind(source)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Usage lines an approver wrote off are settled as written off (never billed later).
async fn settle_written_off_usage(
    tx: &mut Tx<'_>,
    run_id: &str,
    period: &str,
    t: &Target,
    write_offs: &[super::WriteOff],
) -> Result<(), RunError> {
    let pay_per_use = masterdata::contracts_in(tx, Some(&t.customer_id))
        .await?
        .iter()
        .any(|(c, _)| {
            c.id == t.contract_id
                && matches!(
                    c.kind,
                    canonical::contract::ContractKind::ManagedService { .. }
                )
        });
    if !pay_per_use {
        return Ok(());
    }
    for w in write_offs {
        let super::WriteOffTarget::Line(key) = &w.target else {
            continue;
        };
        let Some((_, id)) = key.strip_prefix("USAGE:").and_then(|k| k.split_once(':')) else {
            continue;
        };
        let mine: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM usage_records WHERE customer_id = $1 AND id = $2 AND period = $3",
        )
        .bind(&t.customer_id)
        .bind(id)
        .bind(period)
        .fetch_one(&mut **tx)
        .await?;
        let item = settlement::usage_item(&t.customer_id, id);
        if mine == 0 || settlement::state_of(tx, &item).await?.is_some() {
            continue;
        }
        let row = Settlement {
            item,
            kind: "usage",
            customer_id: t.customer_id.clone(),
            contract_id: t.contract_id.clone(),
            period: period.to_string(),
            level: None,
            state: "written_off",
            document: format!("run:{run_id}"),
            run_id: run_id.to_string(),
            minutes: 0,
            amount: Decimal::ZERO,
            reason: Some(w.reason.clone()),
        };
        settlement::settle(tx, &row).await.map_err(refused)?;
    }
    Ok(())
}
