//! Dead letters: messages a consumer gave up on, with the reason, the attempt count and the
//! first failure time. Both buses land them here (the embedded bus directly; RabbitMQ through
//! each consumer's DLQ, drained by a recorder) so `drehkreuz dlq` and the API read one table.

use super::{now_ms, Db, Tx};
use canonical::Envelope;
use serde::Serialize;
use sqlx::Row;

/// A dead-lettered message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub message_id: String,
    pub routing_key: String,
    pub reason: String,
    pub attempts: i64,
    pub first_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    pub dead_at: chrono::DateTime<chrono::Utc>,
    pub replayed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub envelope: Envelope,
}

/// What is recorded about a message when it is given up on.
#[derive(Debug, Clone)]
pub struct DeathNote<'a> {
    pub consumer: &'a str,
    pub reason: &'a str,
    pub attempts: i64,
    pub first_failure_at: Option<i64>,
}

/// Records a dead letter inside the caller's transaction.
pub async fn record(
    tx: &mut Tx<'_>,
    note: &DeathNote<'_>,
    env: &Envelope,
) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(env).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO dead_letters (consumer, message_id, routing_key, envelope, reason, attempts, \
         first_failure_at, dead_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(note.consumer)
    .bind(&env.id)
    .bind(&env.event_type)
    .bind(json)
    .bind(note.reason)
    .bind(note.attempts)
    .bind(note.first_failure_at)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, consumer, message_id, routing_key, envelope, reason, attempts, \
                       first_failure_at, dead_at, replayed_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<DeadLetter, sqlx::Error> {
    let text: String = r.try_get("envelope")?;
    let envelope: Envelope =
        serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(DeadLetter {
        id: r.try_get("id")?,
        consumer: r.try_get("consumer")?,
        message_id: r.try_get("message_id")?,
        routing_key: r.try_get("routing_key")?,
        reason: r.try_get("reason")?,
        attempts: r.try_get("attempts")?,
        first_failure_at: r
            .try_get::<Option<i64>, _>("first_failure_at")?
            .map(super::from_ms),
        dead_at: super::from_ms(r.try_get("dead_at")?),
        replayed_at: r
            .try_get::<Option<i64>, _>("replayed_at")?
            .map(super::from_ms),
        envelope,
    })
}

/// Dead letters, newest last; only those not replayed unless `include_replayed`.
pub async fn list(
    db: &Db,
    consumer: Option<&str>,
    include_replayed: bool,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE 1 = 1");
    if !include_replayed {
        sql.push_str(" AND replayed_at IS NULL");
    }
    if consumer.is_some() {
        sql.push_str(" AND consumer = $2");
    }
    sql.push_str(" ORDER BY id LIMIT $1");
    let mut q = sqlx::query(&sql).bind(limit);
    if let Some(c) = consumer {
        q = q.bind(c);
    }
    let rows = q.fetch_all(&db.pool).await?;
    rows.iter().map(from_row).collect()
}

/// One dead letter by id.
pub async fn get(db: &Db, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Marks a dead letter as re-injected, inside the caller's transaction.
pub async fn mark_replayed_in(tx: &mut Tx<'_>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Marks a dead letter as re-injected.
pub async fn mark_replayed(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Dead letters not yet replayed, per consumer (for metrics and `/readyz` detail).
pub async fn open_counts(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT consumer, COUNT(*) AS n FROM dead_letters WHERE replayed_at IS NULL GROUP BY consumer",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("consumer")?, r.try_get("n")?)))
        .collect()
}
