//! The warehouse endpoints:
//! - `POST /api/v1/goods-receipts`: a goods receipt as hub JSON, openTRANS 2.1 or EDIFACT D.96A
//!   (by content type, then by sniffing). Bearer token `intake:<source>` (the source system);
//!   when `[warehouse.sources.<source>] hmac_secret` is set, `X-Hub-Signature-256:
//!   sha256=<hex>` over the raw body is required too. `Idempotency-Key` makes repeats safe.
//!   The body is limited (`[warehouse] body_limit_bytes`, 413). `201` only after the receipt
//!   and its event are committed; a repeat answers as the first time.
//! - `GET /api/v1/goods-receipts/{id}`, `POST /api/v1/goods-receipts/{id}/assign` (review list).
//! - `PUT /api/v1/purchase-orders/{order_id}`: which customer an order is for.
//! - `GET /api/v1/customers/{id}/assets`: the customer's asset registry (`viewer:<customer>`).

use super::problem::Problem;
use super::AppState;
use crate::access::{Caller, Permission};
use crate::warehouse::receipts::{self, ReceiptSummary, ReceiveError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(post_receipt))
        .routes(utoipa_axum::routes!(get_receipt))
        .routes(utoipa_axum::routes!(assign_receipt))
        .routes(utoipa_axum::routes!(put_purchase_order))
        .routes(utoipa_axum::routes!(get_assets))
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, body) in constant time.
pub fn signature_ok(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn read_problem(e: warehouse::ReadError) -> Problem {
    use warehouse::ReadError as E;
    match e {
        E::Malformed { field, message } => {
            let mut p = Problem::bad_request(message);
            p.field = Some(field);
            p
        }
        E::Refused { field, message } => {
            let mut p = Problem::bad_request(format!("refused: {message}"));
            p.field = Some(field);
            p
        }
        E::Invalid { field, message } => Problem::unprocessable(&field, message),
        E::Unsupported(m) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            m,
        ),
    }
}

fn receive_problem(e: ReceiveError) -> Problem {
    match e {
        ReceiveError::Invalid { field, message } => Problem::unprocessable(&field, message),
        ReceiveError::Conflict(m) => Problem::conflict(m),
        e @ ReceiveError::KeyReused(_) => Problem::unprocessable("Idempotency-Key", e.to_string()),
        ReceiveError::Store(e) => {
            tracing::error!(error = %e, "Storing a goods receipt failed.");
            Problem::unavailable(
                "the receipt could not be stored; nothing was accepted, retry later",
            )
        }
        ReceiveError::Event(e) => Problem::internal(format!("event: {e}")),
    }
}

/// Accepts a goods receipt (hub JSON, openTRANS 2.1 DISPATCHNOTIFICATION or
/// RECEIPTACKNOWLEDGEMENT, EDIFACT D.96A DESADV or RECADV).
#[utoipa::path(post, path = "/api/v1/goods-receipts", tag = "warehouse",
    request_body(description = "The document: hub JSON (docs/warehouse.md), openTRANS 2.1 XML or UN/EDIFACT D.96A",
        content((Object = "application/json"), (String = "application/xml"), (String = "application/EDIFACT"))),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a repeat return the first answer"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "sha256=<hex HMAC-SHA256 of the body>; required when the source has a secret")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored durably (status `accepted`, or `review` when no customer could be found)", body = ReceiptSummary),
        (status = 200, description = "The same document was received before; the stored result", body = ReceiptSummary),
        (status = 400, description = "Not well-formed, or refused (DTD, entities)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad token, or bad signature", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not post goods receipts", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same document number, different content", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a supported format", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid receipt; `field` names the problem", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable; nothing accepted", body = Problem, content_type = "application/problem+json")))]
async fn post_receipt(
    caller: Caller,
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(caller, st, headers, body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn accept(
    caller: Caller,
    st: AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.require(Permission::PostDocuments)?;
    let source = caller.posting_source()?.to_string();
    let limit = st.warehouse.body_limit_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Content Too Large",
            format!("the body exceeds {limit} bytes"),
        )
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secret) = st
        .warehouse
        .sources
        .get(&source)
        .and_then(|s| s.hmac_secret.as_ref())
    {
        if !signature_ok(secret.expose_secret(), &body, header("x-hub-signature-256")) {
            let mut p = Problem::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "missing or wrong X-Hub-Signature-256 (expected sha256=<hex HMAC-SHA256 of the raw body>)",
            );
            p.field = Some("X-Hub-Signature-256".into());
            return Err(p);
        }
    }
    // A key that is present but not visible ASCII (e.g. UTF-8 bytes) is refused, never
    // treated as absent: two bodies under one key must not both be accepted.
    let key = match headers.get("idempotency-key").map(|v| v.as_bytes()) {
        None => None,
        Some(k) if !k.is_empty() && k.len() <= 255 && k.iter().all(u8::is_ascii_graphic) => {
            Some(String::from_utf8_lossy(k).into_owned())
        }
        Some(_) => {
            let mut p =
                Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters");
            p.field = Some("Idempotency-Key".into());
            return Err(p);
        }
    };
    let receipt = warehouse::read(&body, header("content-type")).map_err(read_problem)?;
    let sha = hex::encode(Sha256::digest(&body));
    let answer = receipts::receive(&st.db, &source, &receipt, &sha, key.as_deref())
        .await
        .map_err(receive_problem)?;
    if !answer.replayed {
        st.relay_wakeup.notify_one();
    }
    metrics::counter!("drehkreuz_goods_receipts_total", "format" => answer.summary.format.clone(), "status" => answer.summary.status.clone())
        .increment(u64::from(!answer.replayed));
    let mut resp = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        Json(&answer.summary),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/goods-receipts/{}", answer.summary.id)) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    if answer.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// A stored receipt: its summary and the canonical document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoredReceipt {
    pub summary: ReceiptSummary,
    #[schema(value_type = Object)]
    pub receipt: canonical::goods::GoodsReceipt,
}

/// One stored goods receipt.
#[utoipa::path(get, path = "/api/v1/goods-receipts/{id}", tag = "warehouse",
    params(("id" = String, Path, description = "`<source>:<document number>`")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The receipt", body = StoredReceipt),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not this caller's receipt", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such receipt", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn get_receipt(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StoredReceipt>, Problem> {
    caller.require(Permission::ReadReceipt(&id))?;
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT document, customer_id FROM goods_receipts WHERE id = $1")
            .bind(&id)
            .fetch_optional(&st.db.pool)
            .await
            .map_err(|e| Problem::unavailable(format!("store: {e}")))?;
    let (doc, customer) =
        row.ok_or_else(|| Problem::not_found(format!("no goods receipt {id}")))?;
    let receipt: canonical::goods::GoodsReceipt = serde_json::from_str(&doc)
        .map_err(|e| Problem::internal(format!("stored receipt: {e}")))?;
    let customer = customer.ok_or_else(|| "waiting on the review list for a customer".to_string());
    Ok(Json(StoredReceipt {
        summary: receipts::summary_of(&id, &receipt, &customer),
        receipt,
    }))
}

/// Names the customer of a receipt on the review list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AssignCustomer {
    pub customer_id: String,
}

/// Assigns a receipt waiting on the review list to a customer; its assets and ticket follow.
#[utoipa::path(post, path = "/api/v1/goods-receipts/{id}/assign", tag = "warehouse",
    params(("id" = String, Path, description = "`<source>:<document number>`")), security(("bearer" = [])),
    request_body = AssignCustomer,
    responses(
        (status = 200, description = "Assigned", body = ReceiptSummary),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admins only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such receipt", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The receipt already has a customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown customer or bad body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn assign_receipt(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ReceiptSummary>, Problem> {
    caller.require(Permission::Admin)?;
    let req: AssignCustomer = serde_json::from_slice(&body).map_err(|e| {
        Problem::unprocessable(
            "/customer_id",
            format!("expected {{\"customer_id\": \"…\"}}: {e}"),
        )
    })?;
    let s = receipts::assign(&st.db, &id, &req.customer_id, &caller.actor())
        .await
        .map_err(receive_problem)?
        .ok_or_else(|| Problem::not_found(format!("no goods receipt {id}")))?;
    st.relay_wakeup.notify_one();
    Ok(Json(s))
}

/// Which customer an order is for.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurchaseOrder {
    pub customer_id: String,
}

/// Registers the customer of a purchase (or customer) order, so receipts that name only the
/// order find their customer.
#[utoipa::path(put, path = "/api/v1/purchase-orders/{order_id}", tag = "warehouse",
    params(("order_id" = String, Path, description = "Order number as it appears in receipts")), security(("bearer" = [])),
    request_body = PurchaseOrder,
    responses(
        (status = 200, description = "Registered", body = PurchaseOrder),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin or an intake token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown customer or bad body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn put_purchase_order(
    caller: Caller,
    State(st): State<AppState>,
    Path(order_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PurchaseOrder>, Problem> {
    caller.require(Permission::PostDocuments)?;
    let req: PurchaseOrder = serde_json::from_slice(&body).map_err(|e| {
        Problem::unprocessable(
            "/customer_id",
            format!("expected {{\"customer_id\": \"…\"}}: {e}"),
        )
    })?;
    if order_id.trim().is_empty() || order_id.len() > 250 {
        return Err(Problem::unprocessable("order_id", "1 to 250 characters"));
    }
    receipts::register_order(&st.db, &order_id, &req.customer_id, &caller.actor())
        .await
        .map_err(receive_problem)?;
    Ok(Json(req))
}

/// A customer's assets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssetList {
    pub customer_id: String,
    /// One per delivered unit: serial, article, receipt, warranty end, licence expiry.
    #[schema(value_type = Vec<Object>)]
    pub assets: Vec<canonical::goods::Asset>,
}

/// The customer's asset registry.
#[utoipa::path(get, path = "/api/v1/customers/{id}/assets", tag = "warehouse",
    params(("id" = String, Path, description = "Customer id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The assets", body = AssetList),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn get_assets(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AssetList>, Problem> {
    caller.require(Permission::ViewCustomer(&id))?;
    let store = |e: sqlx::Error| Problem::unavailable(format!("store: {e}"));
    if crate::masterdata::customer(&st.db, &id)
        .await
        .map_err(store)?
        .is_none()
    {
        return Err(Problem::not_found(format!("no customer {id}")));
    }
    let assets = crate::warehouse::assets::list(&st.db, &id)
        .await
        .map_err(store)?;
    Ok(Json(AssetList {
        customer_id: id,
        assets,
    }))
}
