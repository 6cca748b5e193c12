//! The review list: records the hub keeps but cannot process on its own (an entry for an
//! unknown customer, a change to an already billed entry). Nothing on it is dropped; a person
//! resolves it (fix master data, then replay or accept).

use super::{now_ms, Db, Tx};
use serde::Serialize;
use sqlx::Row;

/// One open or resolved review item.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReviewItem {
    pub id: i64,
    /// e.g. `unknown_customer`, `billed_entry_changed`.
    pub kind: String,
    pub source: String,
    pub record_id: String,
    pub reason: String,
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub resolved_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Puts a record on the review list (once per kind, record and reason while open).
pub async fn add(
    tx: &mut Tx<'_>,
    kind: &str,
    source: &str,
    record_id: &str,
    reason: &str,
    document: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO review_items (kind, source, record_id, reason, document, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(kind)
    .bind(source)
    .bind(record_id)
    .bind(reason)
    .bind(document.to_string())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Open items (or all), oldest first.
pub async fn list(db: &Db, include_resolved: bool) -> Result<Vec<ReviewItem>, sqlx::Error> {
    let sql = if include_resolved {
        "SELECT id, kind, source, record_id, reason, document, created_at, resolved_at FROM review_items ORDER BY id"
    } else {
        "SELECT id, kind, source, record_id, reason, document, created_at, resolved_at FROM review_items \
         WHERE resolved_at IS NULL ORDER BY id"
    };
    let rows = sqlx::query(sql).fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            let doc: String = r.try_get("document")?;
            Ok(ReviewItem {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                source: r.try_get("source")?,
                record_id: r.try_get("record_id")?,
                reason: r.try_get("reason")?,
                document: serde_json::from_str(&doc).unwrap_or(serde_json::Value::Null),
                created_at: super::from_ms(r.try_get("created_at")?),
                resolved_at: r
                    .try_get::<Option<i64>, _>("resolved_at")?
                    .map(super::from_ms),
            })
        })
        .collect()
}

/// Marks an item resolved.
pub async fn resolve(tx: &mut Tx<'_>, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE review_items SET resolved_at = $1 WHERE id = $2 AND resolved_at IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
