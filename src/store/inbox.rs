//! The inbox: which consumer already applied which message. Recorded in the same transaction
//! as the consumer's effect, so a redelivered message is recognised and skipped.

use super::{now_ms, Db, Tx};

/// Claims `(consumer, message_id)` inside the effect's transaction. `false` means the message
/// was applied before (or is being applied by a competing worker right now, which then wins):
/// the caller rolls back and acknowledges the duplicate.
pub async fn claim(tx: &mut Tx<'_>, consumer: &str, message_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims many message ids at once; returns the ids that were new (not applied before).
pub async fn claim_many(
    tx: &mut Tx<'_>,
    consumer: &str,
    message_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut fresh = std::collections::HashSet::with_capacity(message_ids.len());
    let now = now_ms();
    let mut unique: Vec<&str> = message_ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    for chunk in unique.chunks(200) {
        let values = (0..chunk.len())
            .map(|i| format!("($1, $2, ${})", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO inbox (consumer, processed_at, message_id) VALUES {values} \
             ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id"
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql)
            .bind(consumer)
            .bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        fresh.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(fresh)
}

/// Whether the consumer has applied the message.
pub async fn contains(db: &Db, consumer: &str, message_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = $1 AND message_id = $2")
            .bind(consumer)
            .bind(message_id)
            .fetch_one(&db.pool)
            .await?;
    Ok(n > 0)
}

/// Forgets entries older than `before_ms` (housekeeping; keep longer than any redelivery window).
pub async fn prune(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM inbox WHERE processed_at < $1")
        .bind(before_ms)
        .execute(&db.pool)
        .await?
        .rows_affected())
}
