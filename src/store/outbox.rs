//! The transactional outbox: events written in the same transaction as the state change that
//! caused them, published later by the relay (`crate::relay`) and marked sent only after the
//! bus confirmed them.

use super::{now_ms, Db, Tx};
use canonical::Envelope;
use sqlx::Row;

/// One pending outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub attempts: i64,
    pub envelope: Envelope,
}

/// Writes `event` into the outbox inside the caller's transaction.
pub async fn enqueue(tx: &mut Tx<'_>, event: &Envelope) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (message_id, routing_key, envelope, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(json)
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO outbox_pending (outbox_id) VALUES ($1)")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes events in their own transaction (for ingress paths that change nothing else).
pub async fn enqueue_all(db: &Db, events: &[Envelope]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    enqueue_many(&mut tx, events).await?;
    tx.commit().await
}

/// Writes many events inside the caller's transaction, a few statements for the lot.
pub async fn enqueue_many(tx: &mut Tx<'_>, events: &[Envelope]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    for chunk in events.chunks(100) {
        let values = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${}, $1)", 3 * i + 2, 3 * i + 3, 3 * i + 4))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO outbox (message_id, routing_key, envelope, created_at) VALUES {values} RETURNING id"
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(now);
        for e in chunk {
            let json =
                serde_json::to_string(e).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
            q = q.bind(e.id.clone()).bind(e.event_type.clone()).bind(json);
        }
        let ids = q.fetch_all(&mut **tx).await?;
        let list = ids
            .iter()
            .map(|i| format!("({i})"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "INSERT INTO outbox_pending (outbox_id) VALUES {list}"
        ))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// How long claimed rows stay invisible to other relays (a crashed relay's rows come back).
pub const CLAIM_LEASE_MS: i64 = 30_000;

/// Claims the oldest publishable rows for this relay: their `next_attempt_at` moves past a
/// lease, so a competing relay (or this one after a crash) only sees them again if they are
/// neither marked sent nor failed in time. No transaction is held while publishing.
pub async fn claim(db: &Db, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    claim_for(db, limit, CLAIM_LEASE_MS).await
}

/// [`claim`] with a lease of `lease_ms` (the relay uses `bus.lease_ms`).
pub async fn claim_for(db: &Db, limit: i64, lease_ms: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let now = now_ms();
    let sql = format!(
        "UPDATE outbox_pending SET next_attempt_at = $1 WHERE outbox_id IN \
         (SELECT outbox_id FROM outbox_pending WHERE next_attempt_at <= $2 ORDER BY outbox_id LIMIT $3{}) \
         RETURNING outbox_id, attempts",
        db.skip_locked()
    );
    let mut tx = db.begin_relaxed().await?;
    let claimed = sqlx::query(&sql)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let mut attempts = std::collections::HashMap::with_capacity(claimed.len());
    for r in &claimed {
        attempts.insert(
            r.try_get::<i64, _>("outbox_id")?,
            r.try_get::<i64, _>("attempts")?,
        );
    }
    let mut out = Vec::with_capacity(claimed.len());
    if !attempts.is_empty() {
        let list = attempts
            .keys()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let rows = sqlx::query(&format!(
            "SELECT id, envelope FROM outbox WHERE id IN ({list})"
        ))
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let text: String = r.try_get("envelope")?;
            match serde_json::from_str::<Envelope>(&text) {
                Ok(envelope) => out.push(OutboxRow {
                    id,
                    attempts: attempts.get(&id).copied().unwrap_or(0),
                    envelope,
                }),
                Err(e) => {
                    // Cannot happen for rows written by `enqueue`; park the row instead of looping.
                    tracing::error!(outbox_id = id, error = %e, "Unreadable outbox row parked.");
                    mark_failed(
                        &mut tx,
                        id,
                        i64::MAX / 2,
                        &format!("unreadable envelope: {e}"),
                    )
                    .await?;
                }
            }
        }
    }
    tx.commit().await?;
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// Marks rows as published.
pub async fn mark_sent(tx: &mut Tx<'_>, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    sqlx::query(&format!(
        "DELETE FROM outbox_pending WHERE outbox_id IN ({list})"
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed publish and when to try again.
pub async fn mark_failed(
    tx: &mut Tx<'_>,
    id: i64,
    next_attempt_at: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox_pending SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE outbox_id = $3",
    )
    .bind(next_attempt_at)
    .bind(error)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rows not yet published (the backlog gauge and `/readyz` detail).
pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_pending")
        .fetch_one(&db.pool)
        .await
}

/// Deletes published events written before `before_ms` (housekeeping).
pub async fn prune_sent(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM outbox WHERE created_at < $1 AND id NOT IN (SELECT outbox_id FROM outbox_pending)")
            .bind(before_ms)
            .execute(&db.pool)
            .await?
            .rows_affected(),
    )
}
