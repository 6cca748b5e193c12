//! Tickets, time entries and usage records as received, versioned: a write with an older (or
//! equal) version than the stored one changes nothing. Customers are resolved here from the
//! master data (customer id, or the helpdesk organization id).

use super::{now_ms, Db, Tx};
use canonical::work::{Ticket, TimeEntry, UsageRecord};
use sqlx::Row;

/// What a versioned write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// New record.
    Inserted,
    /// Newer version replaced the stored one.
    Updated,
    /// The stored version is newer or the same: nothing changed.
    Stale,
}

/// The customer id for a customer id or helpdesk organization id, if master data knows it.
pub async fn resolve_customer(
    tx: &mut Tx<'_>,
    customer_id: Option<&str>,
    organization_id: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    if let Some(id) = customer_id {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    if let Some(org) = organization_id {
        return sqlx::query_scalar(
            "SELECT id FROM customers WHERE helpdesk_org_id = $1 ORDER BY id LIMIT 1",
        )
        .bind(org)
        .fetch_optional(&mut **tx)
        .await;
    }
    Ok(None)
}

async fn stored_version(
    tx: &mut Tx<'_>,
    table: &str,
    source: &str,
    id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT version FROM {table} WHERE source = $1 AND id = $2"
    ))
    .bind(source)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

/// Stores a ticket if it is newer than the stored one.
pub async fn upsert_ticket(
    tx: &mut Tx<'_>,
    t: &Ticket,
    customer_id: Option<&str>,
) -> Result<Written, sqlx::Error> {
    let doc = serde_json::to_string(t).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    match stored_version(tx, "tickets", &t.source, &t.id).await? {
        Some(v) if v >= t.version => Ok(Written::Stale),
        Some(_) => {
            sqlx::query(
                "UPDATE tickets SET version = $1, customer_id = $2, document = $3, deleted = 0, updated_at = $4 \
                 WHERE source = $5 AND id = $6",
            )
            .bind(t.version)
            .bind(customer_id)
            .bind(doc)
            .bind(now_ms())
            .bind(&t.source)
            .bind(&t.id)
            .execute(&mut **tx)
            .await?;
            Ok(Written::Updated)
        }
        None => {
            sqlx::query(
                "INSERT INTO tickets (source, id, version, customer_id, document, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&t.source)
            .bind(&t.id)
            .bind(t.version)
            .bind(customer_id)
            .bind(doc)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
            Ok(Written::Inserted)
        }
    }
}

/// Gives the ticket's customer to its entries that arrived before the ticket (bus order is not
/// guaranteed) and resolves their open review items. Returns how many entries were assigned.
pub async fn assign_waiting_entries(
    tx: &mut Tx<'_>,
    source: &str,
    ticket_id: &str,
    customer_id: &str,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM time_entries WHERE source = $1 AND ticket_id = $2 AND customer_id IS NULL",
    )
    .bind(source)
    .bind(ticket_id)
    .fetch_all(&mut **tx)
    .await?;
    for id in &ids {
        sqlx::query("UPDATE time_entries SET customer_id = $1, updated_at = $2 WHERE source = $3 AND id = $4")
            .bind(customer_id)
            .bind(now_ms())
            .bind(source)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE review_items SET resolved_at = $1 WHERE kind = 'unknown_customer' AND source = $2 \
             AND record_id = $3 AND resolved_at IS NULL",
        )
        .bind(now_ms())
        .bind(source)
        .bind(format!("time_entry:{id}"))
        .execute(&mut **tx)
        .await?;
    }
    Ok(ids.len() as u64)
}

/// A stored ticket's customer (and whether the ticket is known at all).
pub async fn ticket_customer(
    tx: &mut Tx<'_>,
    source: &str,
    id: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT customer_id FROM tickets WHERE source = $1 AND id = $2 AND deleted = 0",
    )
    .bind(source)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get::<Option<String>, _>("customer_id"))
        .transpose()
}

/// The invoice a stored entry was billed on, if any (`None` also when the entry is unknown).
pub async fn billed_invoice(
    tx: &mut Tx<'_>,
    source: &str,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let v: Option<Option<String>> =
        sqlx::query_scalar("SELECT billed_invoice FROM time_entries WHERE source = $1 AND id = $2")
            .bind(source)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(v.flatten())
}

/// Stores a time entry if it is newer than the stored one.
pub async fn upsert_entry(
    tx: &mut Tx<'_>,
    e: &TimeEntry,
    customer_id: Option<&str>,
) -> Result<Written, sqlx::Error> {
    let doc = serde_json::to_string(e).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    let period = e.period().to_string();
    match stored_version(tx, "time_entries", &e.source, &e.id).await? {
        Some(v) if v >= e.version => Ok(Written::Stale),
        Some(_) => {
            sqlx::query(
                "UPDATE time_entries SET version = $1, ticket_id = $2, customer_id = $3, started_at = $4, period = $5, \
                 minutes = $6, billable = $7, document = $8, deleted = 0, updated_at = $9 WHERE source = $10 AND id = $11",
            )
            .bind(e.version)
            .bind(&e.ticket_id)
            .bind(customer_id)
            .bind(e.started_at.timestamp_millis())
            .bind(period)
            .bind(i64::from(e.minutes))
            .bind(i64::from(e.billable))
            .bind(doc)
            .bind(now_ms())
            .bind(&e.source)
            .bind(&e.id)
            .execute(&mut **tx)
            .await?;
            Ok(Written::Updated)
        }
        None => {
            sqlx::query(
                "INSERT INTO time_entries (source, id, version, ticket_id, customer_id, started_at, period, minutes, \
                 billable, document, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&e.source)
            .bind(&e.id)
            .bind(e.version)
            .bind(&e.ticket_id)
            .bind(customer_id)
            .bind(e.started_at.timestamp_millis())
            .bind(period)
            .bind(i64::from(e.minutes))
            .bind(i64::from(e.billable))
            .bind(doc)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
            Ok(Written::Inserted)
        }
    }
}

/// Marks a ticket or entry deleted if the deletion's version is newer.
pub async fn mark_deleted(
    tx: &mut Tx<'_>,
    table: WorkTable,
    source: &str,
    id: &str,
    version: i64,
) -> Result<Written, sqlx::Error> {
    let t = table.name();
    match stored_version(tx, t, source, id).await? {
        Some(v) if v >= version => Ok(Written::Stale),
        Some(_) => {
            sqlx::query(&format!("UPDATE {t} SET deleted = 1, version = $1, updated_at = $2 WHERE source = $3 AND id = $4"))
                .bind(version)
                .bind(now_ms())
                .bind(source)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            Ok(Written::Updated)
        }
        None => Ok(Written::Stale),
    }
}

/// Which versioned table.
#[derive(Debug, Clone, Copy)]
pub enum WorkTable {
    Tickets,
    TimeEntries,
}

impl WorkTable {
    fn name(self) -> &'static str {
        match self {
            WorkTable::Tickets => "tickets",
            WorkTable::TimeEntries => "time_entries",
        }
    }
}

/// Stores a usage record if newer.
pub async fn upsert_usage(tx: &mut Tx<'_>, u: &UsageRecord) -> Result<Written, sqlx::Error> {
    let doc = serde_json::to_string(u).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    match stored_version(tx, "usage_records", &u.source, &u.id).await? {
        Some(v) if v >= u.version => Ok(Written::Stale),
        existing => {
            if existing.is_some() {
                sqlx::query("DELETE FROM usage_records WHERE source = $1 AND id = $2")
                    .bind(&u.source)
                    .bind(&u.id)
                    .execute(&mut **tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO usage_records (source, id, version, customer_id, period, document, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&u.source)
            .bind(&u.id)
            .bind(u.version)
            .bind(&u.customer_id)
            .bind(u.period.to_string())
            .bind(doc)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
            Ok(if existing.is_some() {
                Written::Updated
            } else {
                Written::Inserted
            })
        }
    }
}

/// The stored (not deleted) time entries of a customer and period, in work order.
pub async fn entries_for(
    db: &Db,
    customer_id: &str,
    period: &str,
) -> Result<Vec<TimeEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT document FROM time_entries WHERE customer_id = $1 AND period = $2 AND deleted = 0 ORDER BY started_at, id",
    )
    .bind(customer_id)
    .bind(period)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let d: String = r.try_get("document")?;
            serde_json::from_str(&d).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .collect()
}

/// Adds or replaces a customer (minimal master data: id, name, helpdesk organization).
pub async fn upsert_customer(
    tx: &mut Tx<'_>,
    id: &str,
    name: &str,
    helpdesk_org_id: Option<&str>,
    document: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (id, name, helpdesk_org_id, document, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, helpdesk_org_id = excluded.helpdesk_org_id, \
         document = excluded.document, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(name)
    .bind(helpdesk_org_id)
    .bind(document.to_string())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
