//! The audit trail: who (token id or CLI user) did what to which object, when, with the state
//! before and after where it applies. Append-only: this module only inserts and reads, and the
//! database refuses updates and deletes of `audit_log` (triggers in the migrations).

use super::{now_ms, Db, Tx};
use serde::Serialize;
use sqlx::Row;

/// One audit row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    /// `token:<id>` for API calls, `cli:<user>` for the command line.
    pub actor: String,
    /// What was done, e.g. `token.create`, `dead_letter.replay`, `invoice_run.approve`.
    pub action: String,
    /// Which object, e.g. `dead_letter:17`.
    pub object: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// What to record.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub object: &'a str,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Records an action inside the caller's transaction (so the action and its record commit
/// together or not at all).
pub async fn record(tx: &mut Tx<'_>, r: &AuditRecord<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, object, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_ms())
    .bind(r.actor)
    .bind(r.action)
    .bind(r.object)
    .bind(r.before.as_ref().map(|v| v.to_string()))
    .bind(r.after.as_ref().map(|v| v.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: i64,
}

/// Audit rows matching the filter, oldest first.
pub async fn list(db: &Db, f: &AuditFilter) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT id, at, actor, action, object, before_json, after_json FROM audit_log WHERE 1 = 1",
    );
    let mut n = 1;
    let mut binds: Vec<String> = Vec::new();
    for (col, v) in [
        ("actor", &f.actor),
        ("action", &f.action),
        ("object", &f.object),
    ] {
        if let Some(v) = v {
            n += 1;
            sql.push_str(&format!(" AND {col} = ${n}"));
            binds.push(v.clone());
        }
    }
    if f.since_ms.is_some() {
        n += 1;
        sql.push_str(&format!(" AND at >= ${n}"));
    }
    sql.push_str(" ORDER BY id LIMIT $1");
    let mut q = sqlx::query(&sql).bind(if f.limit > 0 { f.limit } else { 1000 });
    for b in binds {
        q = q.bind(b);
    }
    if let Some(s) = f.since_ms {
        q = q.bind(s);
    }
    let rows = q.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            let parse = |c: &str| -> Result<Option<serde_json::Value>, sqlx::Error> {
                Ok(r.try_get::<Option<String>, _>(c)?
                    .and_then(|s| serde_json::from_str(&s).ok()))
            };
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: super::from_ms(r.try_get("at")?),
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                object: r.try_get("object")?,
                before: parse("before_json")?,
                after: parse("after_json")?,
            })
        })
        .collect()
}
