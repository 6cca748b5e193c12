//! The hub's own goods-receipt JSON (schema in `docs/warehouse.md`).
//!
//! One entry per physical unit in `units`, so the hub can hold the sender to "serial count equals
//! quantity". The envelope fields (`event_id`, `event_type`, `occurred_at`) are optional; the
//! receipt is under `receipt`. Unknown fields are refused so that a typo does not silently drop
//! data; errors carry the JSON pointer of the bad field.

use crate::{dates, ReadError};
use canonical::goods::{AssetUnit, GoodsReceipt, Party, ReceiptFormat, ReceiptLine};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::str::FromStr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    #[allow(dead_code)]
    event_id: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    warehouse_id: Option<String>,
    receipt: Receipt,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Receipt {
    receipt_id: String,
    #[serde(default)]
    received_on: Option<String>,
    #[serde(default)]
    supplier: Option<Supplier>,
    #[serde(default)]
    dispatch_notification_id: Option<String>,
    #[serde(default)]
    purchase_order_id: Option<String>,
    #[serde(default)]
    shipment_id: Option<String>,
    #[serde(default)]
    end_customer: Option<EndCustomer>,
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Supplier {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    gln: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndCustomer {
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    order_ref: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    line_id: String,
    #[serde(default)]
    po_line_id: Option<String>,
    #[serde(default)]
    supplier_pid: Option<String>,
    #[serde(default)]
    manufacturer_pid: Option<String>,
    #[serde(default)]
    manufacturer: Option<String>,
    #[serde(default)]
    gtin: Option<String>,
    #[serde(default)]
    description: Option<String>,
    quantity: serde_json::Value,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    units: Vec<Unit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unit {
    #[serde(default)]
    serial_number: Option<String>,
    #[serde(default)]
    licence_key: Option<String>,
    #[serde(default)]
    warranty_end: Option<String>,
    #[serde(default)]
    licence_expiry: Option<String>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn date(v: Option<String>, at: &str) -> Result<Option<chrono::NaiveDate>, ReadError> {
    match nonempty(v) {
        None => Ok(None),
        Some(t) => dates::parse(&t)
            .map(Some)
            .map_err(|m| ReadError::invalid(at, m)),
    }
}

/// Parses the hub JSON.
pub fn parse(bytes: &[u8]) -> Result<GoodsReceipt, ReadError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let body: Body = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let pointer = if path == "." {
            "/".to_string()
        } else {
            format!("/{}", path.replace(['.', '['], "/").replace(']', ""))
        };
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ReadError::malformed(pointer, format!("not valid JSON: {inner}"))
        } else {
            ReadError::invalid(pointer, inner.to_string())
        }
    })?;
    if let Some(t) = &body.event_type {
        if t != "goods_receipt.completed" {
            return Err(ReadError::invalid(
                "/event_type",
                format!("expected \"goods_receipt.completed\", got {t:?}"),
            ));
        }
    }
    let r = body.receipt;
    let receipt_id = nonempty(Some(r.receipt_id))
        .ok_or_else(|| ReadError::invalid("/receipt/receipt_id", "must not be empty"))?;
    let end = r.end_customer.unwrap_or(EndCustomer {
        customer_id: None,
        order_ref: None,
    });
    let purchase_order_id = nonempty(r.purchase_order_id);
    let mut order_refs: Vec<String> = Vec::new();
    for v in [nonempty(end.order_ref), purchase_order_id.clone()]
        .into_iter()
        .flatten()
    {
        if !order_refs.contains(&v) {
            order_refs.push(v);
        }
    }
    let mut lines = Vec::with_capacity(r.lines.len());
    for (i, l) in r.lines.into_iter().enumerate() {
        let at = format!("/receipt/lines/{i}");
        let quantity = match &l.quantity {
            serde_json::Value::Number(n) => Decimal::from_str(&n.to_string())
                .or_else(|_| Decimal::from_scientific(&n.to_string())),
            serde_json::Value::String(s) => Decimal::from_str(s.trim()),
            _ => Decimal::from_str("x"),
        }
        .map_err(|_| {
            ReadError::invalid(
                format!("{at}/quantity"),
                format!("expected a decimal number, got {}", l.quantity),
            )
        })?;
        let mut units: Vec<AssetUnit> = Vec::with_capacity(l.units.len());
        for (j, u) in l.units.into_iter().enumerate() {
            let uat = format!("{at}/units/{j}");
            units.push(AssetUnit {
                serial_number: nonempty(u.serial_number),
                licence_key: nonempty(u.licence_key),
                warranty_end: date(u.warranty_end, &format!("{uat}/warranty_end"))?,
                licence_expiry: date(u.licence_expiry, &format!("{uat}/licence_expiry"))?,
            });
        }
        if !units.is_empty() && Decimal::from(units.len()) != quantity {
            return Err(ReadError::invalid(
                format!("{at}/units"),
                format!(
                    "one entry per physical unit: {} units listed for quantity {quantity}",
                    units.len()
                ),
            ));
        }
        lines.push(ReceiptLine {
            line_id: l.line_id,
            order_id: purchase_order_id.clone(),
            order_line_id: nonempty(l.po_line_id),
            supplier_pid: nonempty(l.supplier_pid),
            manufacturer_pid: nonempty(l.manufacturer_pid),
            manufacturer: nonempty(l.manufacturer),
            gtin: nonempty(l.gtin),
            description: nonempty(l.description),
            quantity,
            unit: nonempty(l.unit),
            units,
        });
    }
    let supplier = r
        .supplier
        .map(|s| Party {
            id: nonempty(s.id),
            name: nonempty(s.name),
            gln: nonempty(s.gln),
        })
        .unwrap_or_default();
    Ok(GoodsReceipt {
        receipt_id,
        format: ReceiptFormat::HubJson,
        document_date: None,
        received_on: date(r.received_on, "/receipt/received_on")?
            .or(date(body.occurred_at, "/occurred_at")?),
        supplier,
        dispatch_notification_id: nonempty(r.dispatch_notification_id),
        purchase_order_id,
        shipment_id: nonempty(r.shipment_id),
        warehouse_id: nonempty(body.warehouse_id),
        customer_id: nonempty(end.customer_id),
        order_refs,
        customer_party_ids: Vec::new(),
        lines,
    })
}
