//! The asset registry: the `asset-registry` consumer turns every unit of a received goods
//! receipt into one asset of the customer, and [`list`] answers
//! `GET /api/v1/customers/{id}/assets`.
//!
//! The warranty end is the document's when it carries one; otherwise it is derived from
//! `[warehouse] warranty_months` (by manufacturer article number, supplier article number, GTIN
//! or manufacturer name, first match) or `default_warranty_months`, counted from the day the
//! goods arrived. Asset ids are derived from the receipt, line and unit position, so a
//! redelivered event registers nothing twice. A serial number already registered for the same
//! article under another receipt goes on the review list (the rest of the receipt is registered).

use crate::bus::{Handler, HandlerError};
use crate::config::WarehouseSection;
use crate::store::{now_ms, review, Db, Tx};
use async_trait::async_trait;
use canonical::goods::{Asset, ReceiptLine, ReceivedGoods};
use canonical::Envelope;
use chrono::{Months, NaiveDate};
use sqlx::Row;

pub const CONSUMER: &str = "asset-registry";
pub const ROUTING_KEYS: &[&str] = &[super::receipts::RECEIVED];

/// The `asset-registry` handler.
pub struct AssetRegistry {
    pub settings: WarehouseSection,
}

/// The warranty end for a unit of `line` received on `received_on`, from configuration.
pub fn derived_warranty_end(
    settings: &WarehouseSection,
    line: &ReceiptLine,
    received_on: NaiveDate,
) -> Option<NaiveDate> {
    let months = [
        line.manufacturer_pid.as_deref(),
        line.supplier_pid.as_deref(),
        line.gtin.as_deref(),
        line.manufacturer.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find_map(|k| settings.warranty_months.get(k).copied())
    .or(settings.default_warranty_months)?;
    received_on.checked_add_months(Months::new(months))
}

fn asset_id(receipt: &str, line_id: &str, n: usize) -> String {
    canonical::event_id("asset", "asset", receipt, &format!("{line_id}#{n}"))
}

#[async_trait]
impl Handler for AssetRegistry {
    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        // The event names the receipt; the store says what it holds and whose it is.
        let g: ReceivedGoods = super::receipts::stored_received(tx, ev).await?;
        let received_on = g.receipt.received_on.unwrap_or_else(|| {
            ev.time
                .with_timezone(&chrono_tz::Europe::Berlin)
                .date_naive()
        });
        for line in &g.receipt.lines {
            for (n, unit) in line.units.iter().enumerate() {
                let id = asset_id(&g.id, &line.line_id, n);
                let article = line.article().map(str::to_string);
                if let Some(serial) = &unit.serial_number {
                    let other: Option<String> = sqlx::query_scalar(
                        "SELECT receipt FROM assets WHERE article = $1 AND serial_number = $2 AND id <> $3",
                    )
                    .bind(&article)
                    .bind(serial)
                    .bind(&id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if let Some(other) = other {
                        review::add(
                            tx,
                            "duplicate_serial",
                            &g.source,
                            &format!("{}:{}:{serial}", g.id, line.line_id),
                            &format!(
                                "serial number {serial:?} of article {:?} is already registered from receipt {other:?}",
                                article.as_deref().unwrap_or("-")
                            ),
                            &serde_json::to_value(line).unwrap_or_default(),
                        )
                        .await?;
                        continue;
                    }
                }
                let warranty_end = unit.warranty_end.or_else(|| {
                    unit.licence_key
                        .is_none()
                        .then(|| derived_warranty_end(&self.settings, line, received_on))
                        .flatten()
                });
                sqlx::query(
                    "INSERT INTO assets (id, customer_id, receipt, line_id, article, manufacturer_pid, gtin, description, \
                     serial_number, licence_key, warranty_end, licence_expiry, received_on, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&id)
                .bind(&g.customer_id)
                .bind(&g.id)
                .bind(&line.line_id)
                .bind(&article)
                .bind(&line.manufacturer_pid)
                .bind(&line.gtin)
                .bind(&line.description)
                .bind(&unit.serial_number)
                .bind(&unit.licence_key)
                .bind(warranty_end.map(|d| d.to_string()))
                .bind(unit.licence_expiry.map(|d| d.to_string()))
                .bind(received_on.to_string())
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}

fn date(v: Option<String>) -> Option<NaiveDate> {
    v.and_then(|s| s.parse().ok())
}

pub(crate) fn asset_of(r: &sqlx::any::AnyRow) -> Result<Asset, sqlx::Error> {
    Ok(Asset {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        receipt: r.try_get("receipt")?,
        line_id: r.try_get("line_id")?,
        article: r.try_get("article")?,
        manufacturer_pid: r.try_get("manufacturer_pid")?,
        gtin: r.try_get("gtin")?,
        description: r.try_get("description")?,
        serial_number: r.try_get("serial_number")?,
        licence_key: r.try_get("licence_key")?,
        warranty_end: date(r.try_get("warranty_end")?),
        licence_expiry: date(r.try_get("licence_expiry")?),
        received_on: date(r.try_get("received_on")?),
    })
}

pub(crate) const COLUMNS: &str =
    "id, customer_id, receipt, line_id, article, manufacturer_pid, gtin, description, \
     serial_number, licence_key, warranty_end, licence_expiry, received_on";

/// A customer's assets, in order of arrival.
pub async fn list(db: &Db, customer_id: &str) -> Result<Vec<Asset>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM assets WHERE customer_id = $1 ORDER BY received_on, receipt, line_id, id"
    ))
    .bind(customer_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(asset_of).collect()
}
