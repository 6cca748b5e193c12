//! openTRANS 2.1 DISPATCHNOTIFICATION (Lieferavis) and RECEIPTACKNOWLEDGEMENT
//! (Wareneingangsbestätigung) → [`GoodsReceipt`].
//!
//! Read by local names (any namespace prefix or none), tolerant of the deviations seen in the
//! field (`docs/warehouse.md`): missing `LINE_ITEM_ID` (numbered by position), compact dates,
//! unknown elements (ignored). Serial numbers come from `PRODUCT_ID/SERIAL_NUMBER`; openTRANS has
//! no warranty or licence element, so `ITEM_UDX` children named `UDX.<org>.WARRANTY_END`,
//! `…LICENCE_EXPIRY` (or `LICENSE_EXPIRY`) and `…LICENCE_KEY` are read when present; otherwise
//! the hub derives warranty ends from configured warranty months.

use crate::xml::{self, Element};
use crate::{dates, ReadError};
use canonical::goods::{AssetUnit, GoodsReceipt, Party, ReceiptFormat, ReceiptLine};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Parses an openTRANS document.
pub fn parse(bytes: &[u8]) -> Result<GoodsReceipt, ReadError> {
    let root = xml::parse(bytes)?;
    let (format, prefix) = match root.name.as_str() {
        "DISPATCHNOTIFICATION" => (ReceiptFormat::OpentransDispatchNotification, "DISPATCHNOTIFICATION"),
        "RECEIPTACKNOWLEDGEMENT" => (ReceiptFormat::OpentransReceiptAcknowledgement, "RECEIPTACKNOWLEDGEMENT"),
        other => {
            return Err(ReadError::Unsupported(format!(
                "XML root element {other:?}: expected an openTRANS DISPATCHNOTIFICATION or RECEIPTACKNOWLEDGEMENT"
            )))
        }
    };
    let header_name = format!("{prefix}_HEADER");
    let info_name = format!("{prefix}_INFO");
    let info_path = format!("/{prefix}/{header_name}/{info_name}");
    let info = root
        .at(&[&header_name, &info_name])
        .ok_or_else(|| ReadError::invalid(&info_path, "required header element is missing"))?;
    let id_name = format!("{prefix}_ID");
    let receipt_id = info.text_at(&[&id_name]).ok_or_else(|| {
        ReadError::invalid(
            format!("{info_path}/{id_name}"),
            "the document number is missing or empty",
        )
    })?;
    let date = |name: &str| -> Result<Option<chrono::NaiveDate>, ReadError> {
        match info.text_at(&[name]) {
            None => Ok(None),
            Some(t) => dates::parse(&t)
                .map(Some)
                .map_err(|m| ReadError::invalid(format!("{info_path}/{name}"), m)),
        }
    };
    let document_date = date(&format!("{prefix}_DATE"))?;
    let received_on = match format {
        ReceiptFormat::OpentransReceiptAcknowledgement => date("RECEIPT_DATE")?,
        _ => match info
            .at(&["DELIVERY_DATE", "DELIVERY_END_DATE"])
            .and_then(Element::value)
        {
            Some(t) => Some(dates::parse(&t).map_err(|m| {
                ReadError::invalid(format!("{info_path}/DELIVERY_DATE/DELIVERY_END_DATE"), m)
            })?),
            None => None,
        },
    }
    .or(document_date);

    // Parties: the supplier, and who the goods are finally for.
    let supplier_ref = info.text_at(&["SUPPLIER_IDREF"]);
    let mut supplier = Party {
        id: supplier_ref.clone(),
        ..Default::default()
    };
    let mut customer_party_ids = Vec::new();
    if let Some(parties) = info.child("PARTIES") {
        for party in parties.children("PARTY") {
            let roles: Vec<String> = party
                .children("PARTY_ROLE")
                .filter_map(Element::value)
                .collect();
            let ids: Vec<(Option<&str>, String)> = party
                .children("PARTY_ID")
                .filter_map(|p| p.value().map(|v| (p.attr("type"), v)))
                .collect();
            let name = party.text_at(&["ADDRESS", "NAME"]);
            let is_supplier = roles.iter().any(|r| r == "supplier")
                || (supplier_ref.is_some()
                    && ids.iter().any(|(_, v)| Some(v) == supplier_ref.as_ref()));
            if is_supplier {
                supplier.name = supplier.name.or(name.clone());
                if supplier.id.is_none() {
                    supplier.id = ids.first().map(|(_, v)| v.clone());
                }
                if let Some((_, gln)) = ids.iter().find(|(t, _)| *t == Some("gln")) {
                    supplier.gln = Some(gln.clone());
                }
            }
            if roles
                .iter()
                .any(|r| r == "final_delivery" || r == "customer")
            {
                for (_, v) in &ids {
                    if !customer_party_ids.contains(v) {
                        customer_party_ids.push(v.clone());
                    }
                }
            }
        }
    }
    if let Some(final_ref) = info.text_at(&["SHIPMENT_PARTIES_REFERENCE", "FINAL_DELIVERY_IDREF"]) {
        if !customer_party_ids.contains(&final_ref) {
            customer_party_ids.push(final_ref);
        }
    }

    let list_name = format!("{prefix}_ITEM_LIST");
    let item_name = format!("{prefix}_ITEM");
    let list = root.child(&list_name).ok_or_else(|| {
        ReadError::invalid(format!("/{prefix}/{list_name}"), "the item list is missing")
    })?;
    let mut lines = Vec::new();
    let mut order_refs: Vec<String> = Vec::new();
    for (i, item) in list.children(&item_name).enumerate() {
        let at = format!("/{prefix}/{list_name}/{item_name}[{}]", i + 1);
        let line = item_line(item, i, &at)?;
        for r in [
            line.order_id.clone(),
            item.text_at(&["CUSTOMER_ORDER_REFERENCE", "CUSTOMER_ORDER_ID"]),
        ]
        .into_iter()
        .flatten()
        {
            if !order_refs.contains(&r) {
                order_refs.push(r);
            }
        }
        lines.push(line);
    }
    let purchase_order_id = lines.iter().find_map(|l| l.order_id.clone());
    let dispatch_notification_id = match format {
        ReceiptFormat::OpentransDispatchNotification => Some(receipt_id.clone()),
        _ => list
            .children(&item_name)
            .find_map(|i| i.text_at(&["DELIVERY_REFERENCE", "DELIVERYNOTE_ID"])),
    };
    Ok(GoodsReceipt {
        receipt_id,
        format,
        document_date,
        received_on,
        supplier,
        dispatch_notification_id,
        purchase_order_id,
        shipment_id: info.text_at(&["SHIPMENT_ID"]),
        warehouse_id: None,
        customer_id: None,
        order_refs,
        customer_party_ids,
        lines,
    })
}

fn item_line(item: &Element, index: usize, at: &str) -> Result<ReceiptLine, ReadError> {
    let product = item.child("PRODUCT_ID");
    let ptext = |name: &str| product.and_then(|p| p.text_at(&[name]));
    let qty_text = item
        .text_at(&["QUANTITY"])
        .ok_or_else(|| ReadError::invalid(format!("{at}/QUANTITY"), "the quantity is missing"))?;
    let quantity = Decimal::from_str(&qty_text).map_err(|_| {
        ReadError::invalid(
            format!("{at}/QUANTITY"),
            format!("expected a decimal number, got {qty_text:?}"),
        )
    })?;
    let serials: Vec<String> = product
        .map(|p| {
            p.children("SERIAL_NUMBER")
                .filter_map(Element::value)
                .collect()
        })
        .unwrap_or_default();
    let gtin = product.and_then(|p| {
        p.children("INTERNATIONAL_PID")
            .find(|e| {
                e.attr("type")
                    .map(|t| t.eq_ignore_ascii_case("gtin") || t.eq_ignore_ascii_case("ean"))
                    .unwrap_or(true)
            })
            .and_then(Element::value)
    });
    // Warranty and licence data a partner may send in ITEM_UDX (`UDX.<org>.<NAME>`).
    let udx = |suffixes: &[&str]| -> Option<(String, String)> {
        item.child("ITEM_UDX").and_then(|u| {
            u.children.iter().find_map(|c| {
                let upper = c.name.to_ascii_uppercase();
                suffixes
                    .iter()
                    .any(|s| upper.ends_with(s))
                    .then(|| c.value().map(|v| (c.name.clone(), v)))
                    .flatten()
            })
        })
    };
    let udx_date = |suffixes: &[&str]| -> Result<Option<chrono::NaiveDate>, ReadError> {
        match udx(suffixes) {
            None => Ok(None),
            Some((name, v)) => dates::parse(&v)
                .map(Some)
                .map_err(|m| ReadError::invalid(format!("{at}/ITEM_UDX/{name}"), m)),
        }
    };
    let warranty_end = udx_date(&["WARRANTY_END"])?;
    let licence_expiry = udx_date(&["LICENCE_EXPIRY", "LICENSE_EXPIRY"])?;
    let licence_key = udx(&["LICENCE_KEY", "LICENSE_KEY"]).map(|(_, v)| v);
    let template = AssetUnit {
        serial_number: None,
        licence_key,
        warranty_end,
        licence_expiry,
    };
    let units = crate::units_for(&quantity, serials, &template);
    Ok(ReceiptLine {
        line_id: item
            .text_at(&["LINE_ITEM_ID"])
            .unwrap_or_else(|| (index + 1).to_string()),
        order_id: item.text_at(&["ORDER_REFERENCE", "ORDER_ID"]),
        order_line_id: item.text_at(&["ORDER_REFERENCE", "LINE_ITEM_ID"]),
        supplier_pid: ptext("SUPPLIER_PID"),
        manufacturer_pid: product
            .and_then(|p| p.text_at(&["MANUFACTURER_INFO", "MANUFACTURER_PID"])),
        manufacturer: product.and_then(|p| p.text_at(&["MANUFACTURER_INFO", "MANUFACTURER_IDREF"])),
        gtin,
        description: ptext("DESCRIPTION_SHORT"),
        quantity,
        unit: item.text_at(&["ORDER_UNIT"]),
        units,
    })
}
