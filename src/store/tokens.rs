//! API tokens: an id, a name, a role and the SHA-256 of the secret. The secret itself is
//! shown once at creation and never stored.

use super::{now_ms, Db, Tx};
use serde::Serialize;
use sqlx::Row;

/// A token as listed (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Stores a new token.
pub async fn insert(
    tx: &mut Tx<'_>,
    id: &str,
    name: &str,
    role: &str,
    secret_hash: &str,
    created_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, secret_hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(name)
    .bind(role)
    .bind(secret_hash)
    .bind(now_ms())
    .bind(created_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The role and secret hash of an active (not revoked) token.
pub async fn active(db: &Db, id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT role, secret_hash FROM api_tokens WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| Ok((r.try_get("role")?, r.try_get("secret_hash")?)))
        .transpose()
}

/// All tokens, oldest first.
pub async fn list(db: &Db) -> Result<Vec<TokenInfo>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, name, role, created_at, created_by, revoked_at FROM api_tokens ORDER BY created_at, id")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TokenInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                created_at: super::from_ms(r.try_get("created_at")?),
                created_by: r.try_get("created_by")?,
                revoked_at: r
                    .try_get::<Option<i64>, _>("revoked_at")?
                    .map(super::from_ms),
            })
        })
        .collect()
}

/// Revokes a token; `false` if there is no active token with that id.
pub async fn revoke(tx: &mut Tx<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}
