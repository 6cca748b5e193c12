//! `POST /api/v1/events`: the ingress for systems that already speak the canonical vocabulary.
//!
//! Accepts one CloudEvents 1.0 event in structured JSON mode, or a JSON array of them (a
//! batch is all-or-nothing). Each event is checked (required attributes, `specversion` 1.0,
//! `datacontenttype` JSON) and written to the outbox; `202 Accepted` means it is durably
//! stored and will be published. Malformed input gets a 4xx problem naming the field.
//! Role `intake:<name>` may post events whose `source` is `/<name>` or below it; `admin` any.

use super::problem::Problem;
use super::AppState;
use crate::access::{Caller, Permission, Role};
use crate::store::outbox;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use canonical::Envelope;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(accept))
}

/// A CloudEvents 1.0 event in structured JSON mode (schema for the API document).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CloudEvent {
    /// Must be "1.0".
    #[schema(example = "1.0")]
    specversion: String,
    /// Unique per source; a repeat with the same id is applied once.
    id: String,
    /// URI-reference of the producing system, e.g. `/warehouse/lager-1`.
    source: String,
    /// Event type and routing key, e.g. `time_entry.created`.
    #[serde(rename = "type")]
    event_type: String,
    subject: Option<String>,
    /// RFC 3339; default: now.
    time: Option<chrono::DateTime<chrono::Utc>>,
    /// `application/json` (default) or `…+json`.
    datacontenttype: Option<String>,
    /// The canonical record.
    #[schema(value_type = Object)]
    data: Value,
}

/// One event or a batch.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EventsBody {
    One(CloudEvent),
    Batch(Vec<CloudEvent>),
}

/// What was accepted.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub accepted: usize,
    pub ids: Vec<String>,
}

/// May this caller post an event from `source`?
fn may_post(caller: &Caller, source: &str) -> bool {
    match &caller.role {
        Role::Admin => true,
        Role::Intake(name) => {
            let own = format!("/{name}");
            (source == own || source.starts_with(&format!("{own}/")))
                && caller.role.allows(&Permission::Intake(name))
        }
        _ => false,
    }
}

/// Parses and checks one structured-mode CloudEvent; `at` is its JSON pointer prefix.
pub fn parse_event(v: &Value, at: &str) -> Result<Envelope, Problem> {
    let obj = v
        .as_object()
        .ok_or_else(|| Problem::unprocessable(at, "expected a JSON object (a CloudEvent)"))?;
    let text = |name: &str| -> Result<String, Problem> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(_) => Err(Problem::unprocessable(
                &format!("{at}/{name}"),
                format!("`{name}` must be a non-empty string"),
            )),
            None => Err(Problem::unprocessable(
                &format!("{at}/{name}"),
                format!("required CloudEvents attribute `{name}` is missing"),
            )),
        }
    };
    let spec = text("specversion")?;
    if spec != "1.0" {
        return Err(Problem::unprocessable(
            &format!("{at}/specversion"),
            format!("expected \"1.0\", got {spec:?}"),
        ));
    }
    let id = text("id")?;
    let source = text("source")?;
    let event_type = text("type")?;
    let time = match obj.get("time") {
        None => chrono::Utc::now(),
        Some(Value::String(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| {
                Problem::unprocessable(
                    &format!("{at}/time"),
                    format!("expected an RFC 3339 timestamp: {e}"),
                )
            })?
            .with_timezone(&chrono::Utc),
        Some(_) => {
            return Err(Problem::unprocessable(
                &format!("{at}/time"),
                "expected an RFC 3339 timestamp string",
            ))
        }
    };
    let datacontenttype = match obj.get("datacontenttype") {
        None => "application/json".to_string(),
        Some(Value::String(ct)) if ct == "application/json" || ct.ends_with("+json") => ct.clone(),
        Some(_) => {
            return Err(Problem::unprocessable(
                &format!("{at}/datacontenttype"),
                "expected application/json (the hub carries JSON data only)",
            ))
        }
    };
    let data = obj.get("data").cloned().ok_or_else(|| {
        Problem::unprocessable(&format!("{at}/data"), "required `data` is missing")
    })?;
    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(Problem::unprocessable(
                &format!("{at}/subject"),
                "expected a string",
            ))
        }
    };
    let mut extensions = std::collections::BTreeMap::new();
    for (k, v) in obj {
        if matches!(
            k.as_str(),
            "specversion"
                | "id"
                | "source"
                | "type"
                | "time"
                | "datacontenttype"
                | "data"
                | "subject"
        ) {
            continue;
        }
        let valid_name = !k.is_empty()
            && k.len() <= 20
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        match v {
            Value::String(s) if valid_name => {
                extensions.insert(k.clone(), s.clone());
            }
            _ => {
                return Err(Problem::unprocessable(
                    &format!("{at}/{k}"),
                    "extension attributes must have lower-case alphanumeric names (≤ 20) and string values",
                ))
            }
        }
    }
    Ok(Envelope {
        id,
        source,
        event_type,
        subject,
        time,
        datacontenttype,
        extensions,
        data,
    })
}

/// Accepts canonical events (one or a batch) into the outbox.
#[utoipa::path(post, path = "/api/v1/events", tag = "ingress",
    request_body(content = EventsBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Stored durably; will be published", body = Accepted),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not post for this source", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large"),
        (status = 422, description = "An event is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; nothing accepted", body = Problem, content_type = "application/problem+json")))]
async fn accept(caller: Caller, State(st): State<AppState>, body: Bytes) -> Response {
    if !matches!(caller.role, Role::Admin | Role::Intake(_)) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("role `{}` may not post events", caller.role),
        )
        .into_response();
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Problem::bad_request(format!("body is not JSON: {e}")).into_response(),
    };
    let events = match &value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match parse_event(item, &format!("/{i}")) {
                    Ok(e) => out.push(e),
                    Err(p) => return p.into_response(),
                }
            }
            out
        }
        other => match parse_event(other, "") {
            Ok(e) => vec![e],
            Err(p) => return p.into_response(),
        },
    };
    if events.is_empty() {
        return Problem::unprocessable("", "the batch is empty").into_response();
    }
    if let Some(e) = events.iter().find(|e| !may_post(&caller, &e.source)) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "role `{}` may not post events from source {:?}",
                caller.role, e.source
            ),
        )
        .into_response();
    }
    if let Err(e) = outbox::enqueue_all(&st.db, &events).await {
        tracing::error!(error = %e, "Storing ingress events failed.");
        return Problem::unavailable(
            "the events could not be stored; nothing was accepted, retry later",
        )
        .into_response();
    }
    st.relay_wakeup.notify_one();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": ids.len(), "ids": ids })),
    )
        .into_response()
}
