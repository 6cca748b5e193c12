//! `POST /api/v1/events`: the ingress for systems that already speak the canonical vocabulary.
//!
//! Accepts one CloudEvents 1.0 event in structured JSON mode, or a JSON array of them (a
//! batch is all-or-nothing). Each event is checked (required attributes, `specversion` 1.0,
//! `datacontenttype` JSON) and written to the outbox; `202 Accepted` means it is durably
//! stored and will be published. Malformed input gets a 4xx problem naming the field.
//!
//! Before anything is written, every event of the batch must pass: [`crate::access`] (which
//! types the role may post from which source: `intake:<name>` its own work and signals from
//! `/<name>` or below, `admin` from any source, nobody the types only the hub produces → 403;
//! an unknown type or a malformed source → 422), a consumer of this hub binding the type
//! (else 422: it would never be delivered), and [`crate::ingress::check`], the checks the
//! consumer applies (→ 422 naming the field, e.g. `/data/level`).

use super::problem::Problem;
use super::AppState;
use crate::access::{Caller, Permission};
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
        (status = 403, description = "The token may not post this type or for this source", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An event is invalid, of an unknown type or one no consumer takes; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; nothing accepted", body = Problem, content_type = "application/problem+json")))]
async fn accept(caller: Caller, State(st): State<AppState>, body: Bytes) -> Response {
    match accept_events(&caller, &st, &body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

/// Parses, authorizes and checks every event, then stores all of them or none.
async fn accept_events(caller: &Caller, st: &AppState, body: &[u8]) -> Result<Response, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("body is not JSON: {e}")))?;
    let (events, batch) = match &value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(parse_event(item, &format!("/{i}"))?);
            }
            (out, true)
        }
        other => (vec![parse_event(other, "")?], false),
    };
    if events.is_empty() {
        return Err(Problem::unprocessable("", "the batch is empty"));
    }
    for (i, e) in events.iter().enumerate() {
        let at = if batch {
            format!("/{i}")
        } else {
            String::new()
        };
        // Access decides who may post which type from which source (403, or 422 for an
        // unknown type or a malformed source)…
        caller
            .require(Permission::PostEvent {
                event_type: &e.event_type,
                source: &e.source,
            })
            .map_err(|err| {
                let mut p = Problem::from(err);
                if let Some(f) = &p.field {
                    p.field = Some(format!("{at}/{f}"));
                }
                p
            })?;
        // …a type no consumer of this hub binds would never be delivered…
        if !st.binds(&e.event_type) {
            return Err(Problem::unprocessable(
                &format!("{at}/type"),
                format!(
                    "no consumer of this hub takes {:?} events (is its connector configured?)",
                    e.event_type
                ),
            ));
        }
        // …and the data gets the same checks its consumer applies.
        crate::ingress::check(e)
            .map_err(|inv| Problem::unprocessable(&format!("{at}{}", inv.field), inv.message))?;
    }
    if let Err(e) = outbox::enqueue_all(&st.db, &events).await {
        tracing::error!(error = %e, "Storing ingress events failed.");
        return Err(Problem::unavailable(
            "the events could not be stored; nothing was accepted, retry later",
        ));
    }
    st.relay_wakeup.notify_one();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": ids.len(), "ids": ids })),
    )
        .into_response())
}
