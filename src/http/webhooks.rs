//! `POST /webhooks/zammad`: Zammad's trigger webhook, treated as a signal.
//!
//! The raw body is verified against `X-Hub-Signature: sha1=<hex>` (HMAC-SHA1 with the
//! configured secret, compared in constant time; 401 otherwise), deduplicated by
//! `X-Zammad-Delivery`, and answered at once: the handler only stores a
//! `zammad.ticket_changed` event (and the delivery id) in one transaction. The `zammad-sync`
//! consumer then fetches the ticket and its time accountings through the API — webhook
//! payloads truncate accounted time, so they are never billed from.

use super::problem::Problem;
use super::AppState;
use crate::store::{now_ms, outbox};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use utoipa_axum::router::OpenApiRouter;

/// The webhook's settings.
#[derive(Clone)]
pub struct ZammadWebhook {
    pub secret: SecretString,
    pub source: String,
}

/// Body of `zammad.ticket_changed` (defined with the other ingress checks).
pub use crate::ingress::TicketChanged;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(zammad_webhook))
}

/// Checks `sha1=<hex>` against HMAC-SHA1(secret, body) in constant time.
pub fn signature_ok(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha1=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Receives a Zammad trigger webhook (signed with HMAC-SHA1).
#[utoipa::path(post, path = "/webhooks/zammad", tag = "ingress",
    request_body(content = Object, description = "Zammad's trigger payload ({ticket, article})", content_type = "application/json"),
    params(
        ("X-Hub-Signature" = String, Header, description = "sha1=<hex HMAC-SHA1 of the raw body>"),
        ("X-Zammad-Delivery" = Option<String>, Header, description = "delivery id (deduplication)")),
    responses(
        (status = 200, description = "Duplicate delivery, already accepted", body = Object),
        (status = 202, description = "Accepted; the ticket will be fetched", body = Object),
        (status = 401, description = "Missing or wrong signature", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The Zammad webhook is not configured", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No ticket id in the payload, or not a positive integer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn zammad_webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(cfg) = &st.zammad_webhook else {
        return Problem::not_found("the Zammad webhook is not configured (zammad.webhook_secret)")
            .into_response();
    };
    let sig = headers.get("x-hub-signature").and_then(|v| v.to_str().ok());
    if !signature_ok(cfg.secret.expose_secret(), &body, sig) {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong X-Hub-Signature",
        )
        .into_response();
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Problem::bad_request(format!("body is not JSON: {e}")).into_response(),
    };
    // The ticket id goes into Zammad API paths: a positive integer (JSON number or digits),
    // checked here, before anything is stored or any outside call is made.
    let ticket_id: zammad::ZammadId = match payload.pointer("/ticket/id") {
        None | Some(serde_json::Value::Null) => {
            return Problem::unprocessable("/ticket/id", "the payload names no ticket")
                .into_response()
        }
        Some(v) => match zammad::ZammadId::try_from(v.clone()) {
            Ok(id) => id,
            Err(e) => {
                return Problem::unprocessable("/ticket/id", format!("ticket id: {e}"))
                    .into_response()
            }
        },
    };
    let delivery = match headers.get("x-zammad-delivery").map(|v| v.to_str()) {
        None => None,
        Some(Ok(d))
            if !d.is_empty()
                && d.len() <= crate::ingress::MAX_EVENT_ID
                && d.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(d.to_string())
        }
        Some(_) => {
            let mut p = Problem::bad_request(format!(
                "X-Zammad-Delivery must be 1 to {} visible ASCII characters",
                crate::ingress::MAX_EVENT_ID
            ));
            p.field = Some("X-Zammad-Delivery".into());
            return p.into_response();
        }
    };
    let store = |e: sqlx::Error| Problem::unavailable(format!("store: {e}")).into_response();
    let mut tx = match st.db.begin().await {
        Ok(tx) => tx,
        Err(e) => return store(e),
    };
    if let Some(d) = &delivery {
        let fresh = sqlx::query(
            "INSERT INTO webhook_deliveries (source, delivery_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&cfg.source)
        .bind(d)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match fresh {
            Ok(r) if r.rows_affected() == 0 => {
                return (
                    StatusCode::OK,
                    Json(serde_json::json!({ "duplicate": true, "delivery": d })),
                )
                    .into_response()
            }
            Ok(_) => {}
            Err(e) => return store(e),
        }
    }
    let version = delivery.clone().unwrap_or_else(|| now_ms().to_string());
    let ev = match canonical::Envelope::new(
        &format!("/{}", cfg.source),
        "zammad.ticket_changed",
        &ticket_id.to_string(),
        &version,
        chrono::Utc::now(),
        &TicketChanged {
            ticket_id,
            delivery: delivery.clone(),
        },
    ) {
        Ok(ev) => ev,
        Err(e) => return Problem::internal(e.to_string()).into_response(),
    };
    if let Err(e) = outbox::enqueue(&mut tx, &ev).await {
        return store(e);
    }
    if let Err(e) = tx.commit().await {
        return store(e);
    }
    st.relay_wakeup.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": true, "ticket_id": ticket_id.to_string() })),
    )
        .into_response()
}
