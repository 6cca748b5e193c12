//! The checks every goods receipt must pass before the hub stores it, whatever its format:
//! a document number, at least one line, positive quantities, serial count equals quantity
//! (when a line carries serials at all), serial numbers of at most 80 characters (openTRANS'
//! limit), and no serial number twice in one receipt. Fields are named as canonical paths
//! (`lines/1/units`), with the line's own id in the message.

use crate::ReadError;
use canonical::goods::GoodsReceipt;
use rust_decimal::Decimal;
use std::collections::HashMap;

/// `Ok` if the receipt may be stored.
pub fn check(r: &GoodsReceipt) -> Result<(), ReadError> {
    if r.receipt_id.trim().is_empty() {
        return Err(ReadError::invalid(
            "receipt_id",
            "the document number is empty",
        ));
    }
    if r.receipt_id.chars().count() > 250 {
        return Err(ReadError::invalid(
            "receipt_id",
            "the document number is longer than 250 characters",
        ));
    }
    if r.lines.is_empty() {
        return Err(ReadError::invalid("lines", "the receipt has no lines"));
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (i, l) in r.lines.iter().enumerate() {
        let at = format!("lines/{i}");
        if l.quantity <= Decimal::ZERO {
            return Err(ReadError::invalid(
                format!("{at}/quantity"),
                format!(
                    "line {}: quantity must be positive, got {}",
                    l.line_id, l.quantity
                ),
            ));
        }
        let serials: Vec<&str> = l
            .units
            .iter()
            .filter_map(|u| u.serial_number.as_deref())
            .collect();
        if !serials.is_empty() && Decimal::from(serials.len()) != l.quantity {
            return Err(ReadError::invalid(
                format!("{at}/units"),
                format!(
                    "line {}: {} serial number(s) for quantity {} (every unit needs its serial number)",
                    l.line_id,
                    serials.len(),
                    l.quantity.normalize()
                ),
            ));
        }
        for s in serials {
            if s.chars().count() > 80 {
                return Err(ReadError::invalid(
                    format!("{at}/units"),
                    format!(
                        "line {}: serial number {s:?} is longer than 80 characters",
                        l.line_id
                    ),
                ));
            }
            if let Some(first) = seen.insert(s, &l.line_id) {
                return Err(ReadError::invalid(
                    format!("{at}/units"),
                    format!(
                        "serial number {s:?} appears twice (lines {first} and {})",
                        l.line_id
                    ),
                ));
            }
        }
    }
    Ok(())
}
