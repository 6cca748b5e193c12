//! Storing goods receipts: idempotency, customer resolution and the `goods_receipt.received`
//! event, all in one transaction, so a 2xx means the receipt and its event are durable.
//!
//! - An `Idempotency-Key` repeat with the same body returns the first answer unchanged; with a
//!   different body it is refused (422).
//! - Without a key, the document number is the natural key per source: the same document again
//!   returns the stored result (200); different content under the same number is a conflict (409).
//! - The end customer is resolved from the customer id in the document, else from an order
//!   reference registered with `PUT /api/v1/purchase-orders/{order_id}`, else from a party id
//!   that is a customer id. An unknown customer id is an error; no match at all puts the receipt
//!   on the review list (stored, status `review`) until `…/assign` names the customer.

use crate::store::{audit, now_ms, outbox, review, Db, Tx};
use canonical::goods::{GoodsReceipt, ReceivedGoods};
use canonical::Envelope;
use serde::Serialize;
use sqlx::Row;

/// Event type of a stored, resolved receipt.
pub const RECEIVED: &str = "goods_receipt.received";

/// What the intake answers (and stores for replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReceiptSummary {
    /// The hub's id of the receipt: `<source>:<document number>`.
    pub id: String,
    pub receipt_id: String,
    pub format: String,
    /// `accepted` (customer known, assets follow) or `review` (waiting for a customer).
    pub status: String,
    pub customer_id: Option<String>,
    pub lines: usize,
    /// Units that become assets.
    pub units: usize,
    pub serials: usize,
    /// Why the receipt is on the review list, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_reason: Option<String>,
}

/// The answer to a posted receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub summary: ReceiptSummary,
    /// True when this repeats an earlier answer (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

/// Why a receipt was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("Idempotency-Key {0:?} was already used for a different request body")]
    KeyReused(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error("event: {0}")]
    Event(#[from] canonical::EnvelopeError),
}

/// The customer a receipt belongs to, or why none was found.
async fn resolve(
    tx: &mut Tx<'_>,
    r: &GoodsReceipt,
) -> Result<Result<String, String>, ReceiveError> {
    if let Some(id) = &r.customer_id {
        let found = crate::store::work::resolve_customer(tx, Some(id), None).await?;
        return match found {
            Some(c) => Ok(Ok(c)),
            None => Err(ReceiveError::Invalid {
                field: "/receipt/end_customer/customer_id".into(),
                message: format!("unknown customer {id:?} (not in the master data)"),
            }),
        };
    }
    let mut by_order: Vec<String> = Vec::new();
    for o in &r.order_refs {
        let c: Option<String> =
            sqlx::query_scalar("SELECT customer_id FROM purchase_orders WHERE order_id = $1")
                .bind(o)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(c) = c {
            if !by_order.contains(&c) {
                by_order.push(c);
            }
        }
    }
    match by_order.as_slice() {
        [one] => return Ok(Ok(one.clone())),
        [] => {}
        many => {
            return Ok(Err(format!(
                "the order references {:?} belong to different customers ({})",
                r.order_refs,
                many.join(", ")
            )))
        }
    }
    for p in &r.customer_party_ids {
        let found = crate::store::work::resolve_customer(tx, Some(p), None).await?;
        if let Some(c) = found {
            return Ok(Ok(c));
        }
    }
    Ok(Err(format!(
        "no customer found: no customer id in the document, no registered purchase order among {:?}, no customer party id among {:?}",
        r.order_refs, r.customer_party_ids
    )))
}

/// The summary of a stored receipt.
pub fn summary_of(id: &str, r: &GoodsReceipt, customer: &Result<String, String>) -> ReceiptSummary {
    ReceiptSummary {
        id: id.to_string(),
        receipt_id: r.receipt_id.clone(),
        format: r.format.as_str().to_string(),
        status: if customer.is_ok() {
            "accepted"
        } else {
            "review"
        }
        .into(),
        customer_id: customer.as_ref().ok().cloned(),
        lines: r.lines.len(),
        units: r.lines.iter().map(|l| l.units.len()).sum(),
        serials: r.serials().count(),
        review_reason: customer.as_ref().err().cloned(),
    }
}

/// The `goods_receipt.received` event of a stored receipt.
pub fn received_event(
    id: &str,
    source: &str,
    customer_id: &str,
    receipt: &GoodsReceipt,
) -> Result<Envelope, canonical::EnvelopeError> {
    Envelope::new(
        &format!("/warehouse/{source}"),
        RECEIVED,
        id,
        customer_id,
        chrono::Utc::now(),
        &ReceivedGoods {
            id: id.to_string(),
            source: source.to_string(),
            customer_id: customer_id.to_string(),
            receipt: receipt.clone(),
        },
    )
}

/// The receipt a `goods_receipt.received` event names, as the store holds it: the event says
/// *which* receipt (`data.id`), the store says *what* it is and whose (document and customer).
/// A receipt the store does not have, or one without a customer yet, is a permanent error, so
/// a forged event registers no assets and opens no ticket.
pub async fn stored_received(
    conn: &mut sqlx::AnyConnection,
    ev: &Envelope,
) -> Result<ReceivedGoods, crate::bus::HandlerError> {
    use crate::bus::HandlerError;
    let id = ev
        .data
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            HandlerError::Permanent(format!(
                "{RECEIVED} {}: the event names no receipt (`id`)",
                ev.id
            ))
        })?;
    let row = sqlx::query("SELECT source, customer_id, document FROM goods_receipts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let shown: String = id.chars().take(80).collect();
    let row = row.ok_or_else(|| {
        HandlerError::Permanent(format!("unknown goods receipt {shown:?}: not in the store"))
    })?;
    let customer_id: Option<String> = row.try_get("customer_id")?;
    let customer_id = customer_id.ok_or_else(|| {
        HandlerError::Permanent(format!("goods receipt {shown:?} has no customer yet"))
    })?;
    let doc: String = row.try_get("document")?;
    let receipt: GoodsReceipt = serde_json::from_str(&doc)
        .map_err(|e| HandlerError::Permanent(format!("stored goods receipt {shown:?}: {e}")))?;
    Ok(ReceivedGoods {
        id: id.to_string(),
        source: row.try_get("source")?,
        customer_id,
        receipt,
    })
}

/// Stores a checked receipt posted by `source` (see the module doc for the rules).
pub async fn receive(
    db: &Db,
    source: &str,
    receipt: &GoodsReceipt,
    body_sha256: &str,
    idempotency_key: Option<&str>,
) -> Result<Answer, ReceiveError> {
    // A concurrent identical post loses the race on the primary key: run once more and it
    // finds the winner's row.
    match receive_once(db, source, receipt, body_sha256, idempotency_key).await {
        Err(ReceiveError::Store(e)) if is_unique_violation(&e) => {
            receive_once(db, source, receipt, body_sha256, idempotency_key).await
        }
        other => other,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn receive_once(
    db: &Db,
    source: &str,
    receipt: &GoodsReceipt,
    body_sha256: &str,
    idempotency_key: Option<&str>,
) -> Result<Answer, ReceiveError> {
    let mut tx = db.begin_write().await?;
    if let Some(key) = idempotency_key {
        let row = sqlx::query(
            "SELECT request_sha256, status_code, response FROM idempotency_keys WHERE source = $1 AND idem_key = $2",
        )
        .bind(source)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let sha: String = row.try_get("request_sha256")?;
            if sha != body_sha256 {
                return Err(ReceiveError::KeyReused(key.to_string()));
            }
            let response: String = row.try_get("response")?;
            let summary: ReceiptSummary =
                serde_json::from_str(&response).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            return Ok(Answer {
                status: row.try_get::<i64, _>("status_code")? as u16,
                summary,
                replayed: true,
            });
        }
    }
    let id = format!("{source}:{}", receipt.receipt_id);
    let existing =
        sqlx::query("SELECT body_sha256, document, customer_id FROM goods_receipts WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(row) = existing {
        let sha: String = row.try_get("body_sha256")?;
        if sha != body_sha256 {
            return Err(ReceiveError::Conflict(format!(
                "receipt {:?} from {source} was already received with different content; \
                 send corrections under a new document number",
                receipt.receipt_id
            )));
        }
        let doc: String = row.try_get("document")?;
        let stored: GoodsReceipt =
            serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let customer: Option<String> = row.try_get("customer_id")?;
        let customer =
            customer.ok_or_else(|| "waiting on the review list for a customer".to_string());
        return Ok(Answer {
            status: 200,
            summary: summary_of(&id, &stored, &customer),
            replayed: true,
        });
    }
    let customer = resolve(&mut tx, receipt).await?;
    let document = serde_json::to_string(receipt).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO goods_receipts (id, source, receipt_id, format, customer_id, status, body_sha256, document, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(source)
    .bind(&receipt.receipt_id)
    .bind(receipt.format.as_str())
    .bind(customer.as_ref().ok())
    .bind(if customer.is_ok() { "accepted" } else { "review" })
    .bind(body_sha256)
    .bind(&document)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    match &customer {
        Ok(c) => outbox::enqueue(&mut tx, &received_event(&id, source, c, receipt)?).await?,
        Err(reason) => {
            let doc = serde_json::to_value(receipt).unwrap_or_default();
            review::add(
                &mut tx,
                "unresolved_goods_receipt",
                source,
                &id,
                reason,
                &doc,
            )
            .await?
        }
    }
    let s = summary_of(&id, receipt, &customer);
    if let Some(key) = idempotency_key {
        sqlx::query(
            "INSERT INTO idempotency_keys (source, idem_key, request_sha256, status_code, response, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(source)
        .bind(key)
        .bind(body_sha256)
        .bind(201_i64)
        .bind(serde_json::to_string(&s).unwrap_or_default())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Answer {
        status: 201,
        summary: s,
        replayed: false,
    })
}

/// Assigns a receipt on the review list to a customer and releases it to the bus.
pub async fn assign(
    db: &Db,
    id: &str,
    customer_id: &str,
    actor: &str,
) -> Result<Option<ReceiptSummary>, ReceiveError> {
    let mut tx = db.begin_write().await?;
    let row = sqlx::query("SELECT source, document, customer_id FROM goods_receipts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    if let Some(c) = row.try_get::<Option<String>, _>("customer_id")? {
        return Err(ReceiveError::Conflict(format!(
            "receipt {id:?} already belongs to customer {c:?}"
        )));
    }
    let known = crate::store::work::resolve_customer(&mut tx, Some(customer_id), None).await?;
    if known.is_none() {
        return Err(ReceiveError::Invalid {
            field: "/customer_id".into(),
            message: format!("unknown customer {customer_id:?}"),
        });
    }
    let source: String = row.try_get("source")?;
    let doc: String = row.try_get("document")?;
    let receipt: GoodsReceipt =
        serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    sqlx::query("UPDATE goods_receipts SET customer_id = $1, status = 'accepted' WHERE id = $2")
        .bind(customer_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE review_items SET resolved_at = $1 WHERE kind = 'unresolved_goods_receipt' AND record_id = $2 AND resolved_at IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(
        &mut tx,
        &received_event(id, &source, customer_id, &receipt)?,
    )
    .await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "goods_receipt.assign",
            object: id,
            before: None,
            after: Some(serde_json::json!({ "customer_id": customer_id })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Some(summary_of(id, &receipt, &Ok(customer_id.to_string()))))
}

/// Registers which customer a purchase (or customer) order is for.
pub async fn register_order(
    db: &Db,
    order_id: &str,
    customer_id: &str,
    actor: &str,
) -> Result<(), ReceiveError> {
    let mut tx = db.begin_write().await?;
    let known = crate::store::work::resolve_customer(&mut tx, Some(customer_id), None).await?;
    if known.is_none() {
        return Err(ReceiveError::Invalid {
            field: "/customer_id".into(),
            message: format!("unknown customer {customer_id:?}"),
        });
    }
    sqlx::query(
        "INSERT INTO purchase_orders (order_id, customer_id, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, updated_at = excluded.updated_at",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "purchase_order.register",
            object: order_id,
            before: None,
            after: Some(serde_json::json!({ "customer_id": customer_id })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
