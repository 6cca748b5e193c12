//! `/api/v1/dead-letters`: inspect and replay dead letters (role `admin`; replays are audited).

use super::problem::Problem;
use super::AppState;
use crate::access::{Caller, Permission};
use crate::store::{audit, deadletter};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(replay))
}

/// A dead letter as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    pub id: i64,
    pub consumer: String,
    pub message_id: String,
    pub routing_key: String,
    pub reason: String,
    pub attempts: i64,
    pub first_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    pub dead_at: chrono::DateTime<chrono::Utc>,
    pub replayed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The whole message (CloudEvents JSON).
    #[schema(value_type = Object)]
    pub envelope: serde_json::Value,
}

impl From<deadletter::DeadLetter> for DeadLetterView {
    fn from(d: deadletter::DeadLetter) -> Self {
        Self {
            id: d.id,
            envelope: serde_json::to_value(&d.envelope).unwrap_or_default(),
            consumer: d.consumer,
            message_id: d.message_id,
            routing_key: d.routing_key,
            reason: d.reason,
            attempts: d.attempts,
            first_failure_at: d.first_failure_at,
            dead_at: d.dead_at,
            replayed_at: d.replayed_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only this consumer's dead letters.
    pub consumer: Option<String>,
    /// Include replayed ones.
    #[serde(default)]
    pub all: bool,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

/// Lists dead letters, oldest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead letters",
    params(ListQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "Dead letters", body = Vec<DeadLetterView>),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin", body = Problem, content_type = "application/problem+json")))]
async fn list(
    caller: Caller,
    State(st): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeadLetterView>>, Problem> {
    caller.require(Permission::Admin)?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("`limit` must be between 1 and 1000"));
    }
    let rows = deadletter::list(&st.db, q.consumer.as_deref(), q.all, limit)
        .await
        .map_err(|e| Problem::unavailable(format!("store: {e}")))?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// One dead letter with its whole message.
#[utoipa::path(get, path = "/api/v1/dead-letters/{id}", tag = "dead letters",
    params(("id" = i64, Path, description = "Dead-letter id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterView),
        (status = 400, description = "Bad id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json")))]
async fn show(
    caller: Caller,
    State(st): State<AppState>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<DeadLetterView>, Problem> {
    caller.require(Permission::Admin)?;
    let Path(id) = id.map_err(|e| Problem::bad_request(e.body_text()))?;
    let d = deadletter::get(&st.db, id)
        .await
        .map_err(|e| Problem::unavailable(format!("store: {e}")))?
        .ok_or_else(|| Problem::not_found(format!("no dead letter with id {id}")))?;
    Ok(Json(d.into()))
}

/// Puts a dead letter back into its consumer's queue (audited as `dead_letter.replay`).
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/replay", tag = "dead letters",
    params(("id" = i64, Path, description = "Dead-letter id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Replayed", body = DeadLetterView),
        (status = 400, description = "Bad id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already replayed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Bus unavailable", body = Problem, content_type = "application/problem+json")))]
async fn replay(
    caller: Caller,
    State(st): State<AppState>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<DeadLetterView>, Problem> {
    caller.require(Permission::Admin)?;
    let Path(id) = id.map_err(|e| Problem::bad_request(e.body_text()))?;
    let store = |e: sqlx::Error| Problem::unavailable(format!("store: {e}"));
    let d = deadletter::get(&st.db, id)
        .await
        .map_err(store)?
        .ok_or_else(|| Problem::not_found(format!("no dead letter with id {id}")))?;
    if d.replayed_at.is_some() {
        return Err(Problem::conflict(format!(
            "dead letter {id} was already replayed"
        )));
    }
    st.bus
        .replay(&d)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let mut tx = st.db.begin().await.map_err(store)?;
    deadletter::mark_replayed_in(&mut tx, id)
        .await
        .map_err(store)?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor: &caller.actor(),
            action: "dead_letter.replay",
            object: &format!("dead_letter:{id}"),
            before: Some(serde_json::json!({ "replayed": false, "consumer": d.consumer, "reason": d.reason })),
            after: Some(serde_json::json!({ "replayed": true })),
        },
    )
    .await
    .map_err(store)?;
    tx.commit().await.map_err(store)?;
    let d = deadletter::get(&st.db, id)
        .await
        .map_err(store)?
        .ok_or_else(|| Problem::not_found("gone"))?;
    Ok(Json(d.into()))
}
