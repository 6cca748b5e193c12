//! The settlement ledger: the one place that knows what happened to every billable item.
//!
//! An item is a time-entry part (`entry:<source>:<id>`; the part held at a cap or an overdraft
//! is `entry:<source>:<id>:held`), a usage record (`usage:<customer>:<id>`) or the fee of a
//! contract and period (`fee:<contract>:<period>`). No row means *open*. A row is in one state:
//! `billed` (document = invoice number), `written_off` / `free` (document = run id), `held`
//! (waiting for an approver), `released` (billable by the next run), `credited` (document =
//! the credit note that reversed it). [`settle`] refuses an item that is already settled, so a
//! finalize inside one transaction can never settle anything twice.

use super::{now_ms, Tx};
use rust_decimal::Decimal;
use sqlx::Row;
use std::collections::HashMap;

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub item: String,
    pub kind: &'static str,
    pub customer_id: String,
    pub contract_id: String,
    pub period: String,
    pub level: Option<String>,
    pub state: &'static str,
    pub document: String,
    pub run_id: String,
    /// Billed minutes (counted against budget caps) or, for a held part, its raw minutes.
    pub minutes: u32,
    pub amount: Decimal,
    pub reason: Option<String>,
}

/// The item key of a time entry's main part.
pub fn entry_item(source: &str, id: &str) -> String {
    format!("entry:{source}:{id}")
}

/// The item key of the part of an entry held beyond a cap or contingent.
pub fn held_item(source: &str, id: &str) -> String {
    format!("entry:{source}:{id}:held")
}

/// The item key of a usage record (ids are unique per customer).
pub fn usage_item(customer: &str, id: &str) -> String {
    format!("usage:{customer}:{id}")
}

/// The item key of a contract's fee for a period.
pub fn fee_item(contract: &str, period: &str) -> String {
    format!("fee:{contract}:{period}")
}

/// Why an item could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("{item} is already settled ({state} by {document}); preview the period again")]
    AlreadySettled {
        item: String,
        state: String,
        document: String,
    },
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
}

/// State and document of an item, if it has a row.
pub async fn state_of(
    conn: &mut sqlx::AnyConnection,
    item: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT state, document FROM settlements WHERE item = $1")
        .bind(item)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| Ok((r.try_get("state")?, r.try_get("document")?)))
        .transpose()
}

/// Settles an item; an item may only be settled when it is open or released.
pub async fn settle(tx: &mut Tx<'_>, s: &Settlement) -> Result<(), SettleError> {
    if let Some((state, document)) = state_of(tx, &s.item).await? {
        if state != "released" {
            return Err(SettleError::AlreadySettled {
                item: s.item.clone(),
                state,
                document,
            });
        }
    }
    sqlx::query(
        "INSERT INTO settlements (item, kind, customer_id, contract_id, period, level, state, document, run_id, minutes, amount, reason, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (item) DO UPDATE SET state = excluded.state, document = excluded.document, run_id = excluded.run_id, \
         minutes = excluded.minutes, amount = excluded.amount, reason = excluded.reason, updated_at = excluded.updated_at",
    )
    .bind(&s.item)
    .bind(s.kind)
    .bind(&s.customer_id)
    .bind(&s.contract_id)
    .bind(&s.period)
    .bind(&s.level)
    .bind(s.state)
    .bind(&s.document)
    .bind(&s.run_id)
    .bind(i64::from(s.minutes))
    .bind(s.amount.to_string())
    .bind(&s.reason)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Items of a customer in a state, with their period: `(item, contract, period, minutes)`.
pub async fn items_in_state(
    conn: &mut sqlx::AnyConnection,
    customer: &str,
    state: &str,
) -> Result<Vec<(String, String, String, u32)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT item, contract_id, period, minutes FROM settlements WHERE customer_id = $1 AND state = $2 ORDER BY item",
    )
    .bind(customer)
    .bind(state)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let m: i64 = r.try_get("minutes")?;
            Ok((
                r.try_get("item")?,
                r.try_get("contract_id")?,
                r.try_get("period")?,
                u32::try_from(m).unwrap_or(0),
            ))
        })
        .collect()
}

/// Whether an item is settled (any state but `released`).
pub async fn is_settled(conn: &mut sqlx::AnyConnection, item: &str) -> Result<bool, sqlx::Error> {
    Ok(state_of(conn, item)
        .await?
        .is_some_and(|(state, _)| state != "released"))
}

/// Minutes per level billed on a contract in a period by earlier runs (budget caps count them).
pub async fn billed_minutes_per_level(
    conn: &mut sqlx::AnyConnection,
    contract: &str,
    period: &str,
) -> Result<HashMap<String, u32>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT level, minutes FROM settlements WHERE contract_id = $1 AND period = $2 \
         AND kind = 'entry' AND state = 'billed' AND level IS NOT NULL",
    )
    .bind(contract)
    .bind(period)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<String, u32> = HashMap::new();
    for r in rows {
        let level: String = r.try_get("level")?;
        let m: i64 = r.try_get("minutes")?;
        *out.entry(level).or_default() += u32::try_from(m).unwrap_or(0);
    }
    Ok(out)
}

/// Moves a held item to `released` (audited by the caller); false if it is not held.
pub async fn release(tx: &mut Tx<'_>, item: &str, actor: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE settlements SET state = 'released', reason = $1, updated_at = $2 WHERE item = $3 AND state = 'held'",
    )
    .bind(format!("released by {actor}"))
    .bind(now_ms())
    .bind(item)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Items billed by an invoice, optionally only the given ones.
pub async fn billed_by(
    conn: &mut sqlx::AnyConnection,
    invoice: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT item FROM settlements WHERE document = $1 AND state = 'billed' ORDER BY item",
    )
    .bind(invoice)
    .fetch_all(&mut *conn)
    .await
}

/// A credit note took over the items (without rebill): they stay settled, by the credit note.
pub async fn mark_credited(
    tx: &mut Tx<'_>,
    invoice: &str,
    items: &[String],
    credit_note: &str,
) -> Result<(), sqlx::Error> {
    for item in items {
        sqlx::query("UPDATE settlements SET state = 'credited', document = $1, updated_at = $2 WHERE item = $3 AND document = $4 AND state = 'billed'")
            .bind(credit_note)
            .bind(now_ms())
            .bind(item)
            .bind(invoice)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A correction credit note reopens exactly these items (their rows go; written-off items are
/// never among them).
pub async fn reopen(tx: &mut Tx<'_>, invoice: &str, items: &[String]) -> Result<(), sqlx::Error> {
    for item in items {
        sqlx::query(
            "DELETE FROM settlements WHERE item = $1 AND document = $2 AND state = 'billed'",
        )
        .bind(item)
        .bind(invoice)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
