//! Credit notes: reverse an invoice in full or line by line, with a new number from the same
//! range, referencing the original.
//!
//! Credited items stay settled — by the credit note. A *correction* (`rebill`, "Storno mit
//! Neuberechnung") reopens exactly the credited lines' items, so the next run bills them
//! again. Written-off items stay written off either way (they were never on the invoice). Each
//! line of an invoice is credited at most once.

use super::finalize::{berlin_today, next_number, store_invoice};
use super::run::{decode, RunError};
use crate::store::{audit, settlement, Db};
use canonical::invoice::{Invoice, InvoiceKind, InvoiceLine};
use std::collections::HashSet;

/// A stored invoice.
pub async fn invoice(db: &Db, number: &str) -> Result<Option<Invoice>, sqlx::Error> {
    let doc: Option<String> = sqlx::query_scalar("SELECT document FROM invoices WHERE number = $1")
        .bind(number)
        .fetch_optional(&db.pool)
        .await?;
    doc.map(|d| decode(&d)).transpose()
}

/// Credits a whole invoice; its items stay settled by the credit note.
pub async fn credit(db: &Db, number: &str, reason: &str, actor: &str) -> Result<Invoice, RunError> {
    credit_lines(db, number, &[], false, reason, actor).await
}

/// The settlement items behind an invoice line, among the items the invoice settled.
fn items_of(line: &InvoiceLine, billed: &[String], customer: &str, contract: &str) -> Vec<String> {
    if let Some(id) = line
        .key
        .strip_prefix("USAGE:")
        .and_then(|k| k.split_once(':'))
        .map(|(_, id)| id)
    {
        return vec![settlement::usage_item(customer, id)];
    }
    if line.key == "FEE" {
        return billed
            .iter()
            .filter(|i| i.starts_with(&format!("fee:{contract}:")))
            .cloned()
            .collect();
    }
    billed
        .iter()
        .filter(|item| {
            line.entry_ids.iter().any(|id| {
                item.starts_with("entry:")
                    && (item.ends_with(&format!(":{id}")) || item.ends_with(&format!(":{id}:held")))
            })
        })
        .cloned()
        .collect()
}

/// Credits the given lines (1-based; empty = all not yet credited). With `rebill`, the
/// credited lines' items are reopened for the next run.
pub async fn credit_lines(
    db: &Db,
    number: &str,
    lines: &[usize],
    rebill: bool,
    reason: &str,
    actor: &str,
) -> Result<Invoice, RunError> {
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
    let earlier: Vec<String> =
        sqlx::query_scalar("SELECT document FROM invoices WHERE original_number = $1")
            .bind(number)
            .fetch_all(&db.pool)
            .await?;
    let mut credited: HashSet<String> = HashSet::new();
    for d in &earlier {
        let note: Invoice = decode(d)?;
        credited.extend(note.lines.into_iter().map(|l| l.key));
    }
    for &n in lines {
        if n == 0 || n > original.lines.len() {
            return Err(RunError::Invalid(format!(
                "invoice {number} has lines 1..={}; there is no line {n}",
                original.lines.len()
            )));
        }
    }
    let chosen: Vec<InvoiceLine> = original
        .lines
        .iter()
        .enumerate()
        .filter(|(i, _)| lines.is_empty() || lines.contains(&(i + 1)))
        .map(|(_, l)| l.clone())
        .collect();
    if let Some(l) = chosen.iter().find(|l| credited.contains(&l.key)) {
        return Err(RunError::Invalid(format!(
            "invoice {number} was already credited (line {})",
            l.key
        )));
    }
    let mut tx = db.begin().await?;
    let credit_number = next_number(&mut tx, &original.number_range).await?;
    let billed = settlement::billed_by(&mut tx, number).await?;
    let mut items = Vec::new();
    for l in &chosen {
        items.extend(items_of(
            l,
            &billed,
            &original.buyer.id,
            &original.contract_id,
        ));
    }
    let mut neg = chosen.clone();
    for l in &mut neg {
        l.quantity = -l.quantity;
        l.net = -l.net;
    }
    let (vat, totals) = canonical::invoice::vat_and_totals(&neg);
    let today = berlin_today();
    let kind = if rebill {
        "Storno mit Neuberechnung"
    } else {
        "Gutschrift"
    };
    let note = Invoice {
        number: credit_number,
        kind: InvoiceKind::CreditNote,
        original_number: Some(number.to_string()),
        issue_date: today,
        due_date: today,
        lines: neg,
        vat,
        totals,
        note: Some(format!("{kind} zu Rechnung {number}: {reason}")),
        ..original
    };
    store_invoice(&mut tx, &note).await?;
    if rebill {
        settlement::reopen(&mut tx, number, &items).await?;
        for item in &items {
            if let Some((source, id)) = item
                .strip_prefix("entry:")
                .filter(|k| !k.ends_with(":held"))
                .and_then(|k| k.split_once(':'))
            {
                sqlx::query("UPDATE time_entries SET billed_invoice = NULL WHERE source = $1 AND id = $2 AND billed_invoice = $3")
                    .bind(source)
                    .bind(id)
                    .bind(number)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    } else {
        settlement::mark_credited(&mut tx, number, &items, &note.number).await?;
    }
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "invoice.credit_note",
            object: &format!("invoice:{number}"),
            before: None,
            after: Some(serde_json::json!({
                "credit_note": note.number, "reason": reason, "gross": note.totals.gross,
                "lines": chosen.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
                "rebill": rebill, "reopened": if rebill { items.clone() } else { vec![] },
            })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(note)
}
