//! UN/EDIFACT D.96A DESADV (despatch advice) and RECADV (receiving advice) → [`GoodsReceipt`].
//!
//! A small tokenizer honours the `UNA` service string advice (or the defaults `:+.? '`), the
//! release character and line breaks between segments. One message per interchange. Read:
//! `BGM` (document number), `DTM` 137/11/17/50 (dates), header `RFF` ON (purchase order),
//! DQ/AAK (delivery note), CO (customer order), `NAD` SU (supplier), UC/DP (end customer /
//! delivery party), and per `LIN`: the GTIN (`:EN`), `PIA` SA/MF/SN (supplier and manufacturer
//! article numbers, serials), `IMD` (description), `QTY` 12 despatched / 194 received and
//! accepted, `RFF+ON` (order and line), `GIN+BN` (serial numbers, ranges `first:last` with a
//! numeric tail are expanded), `DTM+36` (expiry: licence expiry for units without serial,
//! warranty end otherwise). The `UNT` segment count must match (a truncated message is refused).

use crate::{dates, ReadError};
use canonical::goods::{AssetUnit, GoodsReceipt, Party, ReceiptFormat, ReceiptLine};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Most segments one message may have.
pub const MAX_SEGMENTS: usize = 200_000;

/// A segment: its tag and data elements, each a list of components (release characters removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub tag: String,
    pub elements: Vec<Vec<String>>,
    /// 1-based position in the interchange, for error messages.
    pub position: usize,
}

impl Segment {
    /// Component `c` of element `e` (elements counted after the tag, from 1), if not empty.
    pub fn get(&self, e: usize, c: usize) -> Option<&str> {
        self.elements
            .get(e.checked_sub(1)?)
            .and_then(|el| el.get(c))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    fn at(&self) -> String {
        format!("segment {} ({})", self.position, self.tag)
    }
}

/// Splits an interchange into segments.
pub fn segments(text: &str) -> Result<Vec<Segment>, ReadError> {
    let mut comp = ':';
    let mut data = '+';
    let mut release = Some('?');
    let mut term = '\'';
    let mut body = text.trim_start_matches('\u{feff}').trim_start();
    if let Some(rest) = body.strip_prefix("UNA") {
        let chars: Vec<char> = rest.chars().take(6).collect();
        if chars.len() < 6 {
            return Err(ReadError::malformed(
                "UNA",
                "the service string advice must have six characters",
            ));
        }
        comp = chars[0];
        data = chars[1];
        release = (chars[3] != ' ').then_some(chars[3]);
        term = chars[5];
        let skip: usize = chars.iter().map(|c| c.len_utf8()).sum();
        body = rest[skip..].trim_start();
    }
    let mut out = Vec::new();
    let mut elements: Vec<Vec<String>> = Vec::new();
    let mut element: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    let mut any = false;
    for ch in body.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
            any = true;
            continue;
        }
        if Some(ch) == release {
            escaped = true;
            continue;
        }
        if ch == term {
            element.push(std::mem::take(&mut cur));
            elements.push(std::mem::take(&mut element));
            let mut els = std::mem::take(&mut elements);
            let tag = els.remove(0).join("");
            let tag = tag.trim().to_string();
            if tag.len() != 3
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            {
                return Err(ReadError::malformed(
                    format!("segment {}", out.len() + 1),
                    format!("expected a three-letter segment tag, got {tag:?}"),
                ));
            }
            out.push(Segment {
                tag,
                elements: els,
                position: out.len() + 1,
            });
            if out.len() > MAX_SEGMENTS {
                return Err(ReadError::refused(
                    "/",
                    format!("more than {MAX_SEGMENTS} segments"),
                ));
            }
            any = false;
            continue;
        }
        if (ch == '\n' || ch == '\r')
            && !any
            && cur.is_empty()
            && element.is_empty()
            && elements.is_empty()
        {
            continue;
        }
        any = true;
        if ch == data {
            element.push(std::mem::take(&mut cur));
            elements.push(std::mem::take(&mut element));
        } else if ch == comp {
            element.push(std::mem::take(&mut cur));
        } else if ch != '\n' && ch != '\r' {
            cur.push(ch);
        }
    }
    if escaped || any || !cur.trim().is_empty() {
        return Err(ReadError::malformed(
            format!("segment {}", out.len() + 1),
            format!("the interchange ends inside a segment (missing terminator {term:?})"),
        ));
    }
    Ok(out)
}

fn expand_range(first: &str, last: &str, at: &str) -> Result<Vec<String>, ReadError> {
    let split = |s: &str| {
        let digits = s.chars().rev().take_while(|c| c.is_ascii_digit()).count();
        let (p, n) = s.split_at(s.len() - digits);
        (p.to_string(), n.to_string())
    };
    let (p1, n1) = split(first);
    let (p2, n2) = split(last);
    let bad = || {
        ReadError::invalid(
            at,
            format!("serial number range {first}:{last} cannot be expanded (expected the same prefix and a numeric tail)"),
        )
    };
    if p1 != p2 || n1.is_empty() || n1.len() != n2.len() {
        return Err(bad());
    }
    let a: u64 = n1.parse().map_err(|_| bad())?;
    let b: u64 = n2.parse().map_err(|_| bad())?;
    if b < a || b - a >= u64::from(crate::MAX_UNITS_PER_LINE) {
        return Err(bad());
    }
    Ok((a..=b)
        .map(|n| format!("{p1}{n:0width$}", width = n1.len()))
        .collect())
}

struct LineDraft {
    line: ReceiptLine,
    despatched: Option<Decimal>,
    accepted: Option<Decimal>,
    serials: Vec<String>,
    expiry: Option<chrono::NaiveDate>,
    at: String,
}

/// Parses a DESADV or RECADV interchange.
pub fn parse(bytes: &[u8]) -> Result<GoodsReceipt, ReadError> {
    // UNOC (ISO-8859-1) is the common character set for German partners; UTF-8 is accepted too.
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
    };
    let segs = segments(&text)?;
    let unh: Vec<&Segment> = segs.iter().filter(|s| s.tag == "UNH").collect();
    let unh = match unh.as_slice() {
        [one] => *one,
        [] => return Err(ReadError::malformed("UNH", "no message header (UNH) found")),
        _ => {
            return Err(ReadError::invalid(
                "UNH",
                "one message per interchange, please (found several UNH)",
            ))
        }
    };
    let format = match unh.get(2, 0) {
        Some("DESADV") => ReceiptFormat::EdifactDesadv,
        Some("RECADV") => ReceiptFormat::EdifactRecadv,
        other => {
            return Err(ReadError::Unsupported(format!(
                "EDIFACT message type {:?}: expected DESADV or RECADV",
                other.unwrap_or("")
            )))
        }
    };
    let start = unh.position - 1;
    let unt_index = segs[start..]
        .iter()
        .position(|s| s.tag == "UNT")
        .map(|i| i + start)
        .ok_or_else(|| ReadError::malformed("UNT", "the message trailer (UNT) is missing"))?;
    let count = unt_index - start + 1;
    let declared = segs[unt_index].get(1, 0).unwrap_or("");
    if declared.parse::<usize>().ok() != Some(count) {
        return Err(ReadError::malformed(
            segs[unt_index].at(),
            format!("UNT says {declared:?} segments, the message has {count}"),
        ));
    }
    let msg = &segs[start + 1..unt_index];

    let mut receipt_id = None;
    let mut document_date = None;
    let mut despatch_date = None;
    let mut delivery_date = None;
    let mut receipt_date = None;
    let mut purchase_order_id = None;
    let mut delivery_note = None;
    let mut order_refs: Vec<String> = Vec::new();
    let mut supplier = Party::default();
    let mut customer_party_ids = Vec::new();
    let mut drafts: Vec<LineDraft> = Vec::new();
    let date_of = |s: &Segment| -> Result<chrono::NaiveDate, ReadError> {
        let v = s.get(1, 1).unwrap_or("");
        dates::parse(v).map_err(|m| ReadError::invalid(s.at(), m))
    };
    for s in msg {
        let in_line = !drafts.is_empty();
        match s.tag.as_str() {
            "BGM" => receipt_id = s.get(2, 0).map(str::to_string),
            "DTM" => match (s.get(1, 0), in_line) {
                (Some("137"), false) => document_date = Some(date_of(s)?),
                (Some("11"), false) => despatch_date = Some(date_of(s)?),
                (Some("17"), false) => delivery_date = Some(date_of(s)?),
                (Some("50"), false) => receipt_date = Some(date_of(s)?),
                (Some("36"), true) => {
                    let d = date_of(s)?;
                    if let Some(l) = drafts.last_mut() {
                        l.expiry = Some(d);
                    }
                }
                _ => {}
            },
            "RFF" => {
                let (q, v) = (s.get(1, 0), s.get(1, 1).map(str::to_string));
                match (q, in_line) {
                    (Some("ON"), false) => purchase_order_id = purchase_order_id.or(v.clone()),
                    (Some("DQ") | Some("AAK"), false) => {
                        delivery_note = delivery_note.or(v.clone())
                    }
                    (Some("ON"), true) => {
                        if let Some(l) = drafts.last_mut() {
                            l.line.order_id = l.line.order_id.clone().or(v.clone());
                            if l.line.order_line_id.is_none() {
                                l.line.order_line_id = s.get(1, 2).map(str::to_string);
                            }
                        }
                    }
                    _ => {}
                }
                if matches!(q, Some("ON") | Some("CO")) {
                    if let Some(v) = v {
                        if !order_refs.contains(&v) {
                            order_refs.push(v);
                        }
                    }
                }
            }
            "NAD" => {
                let id = s.get(2, 0).map(str::to_string);
                let gln = (s.get(2, 2) == Some("9")).then(|| id.clone()).flatten();
                match s.get(1, 0) {
                    Some("SU") => {
                        supplier = Party {
                            id: id.clone(),
                            name: s.get(4, 0).map(str::to_string),
                            gln,
                        }
                    }
                    Some("UC") | Some("DP") | Some("ST") => {
                        let name = s.get(4, 0).map(str::to_string);
                        for v in [id, name].into_iter().flatten() {
                            if !customer_party_ids.contains(&v) {
                                customer_party_ids.push(v);
                            }
                        }
                    }
                    _ => {}
                }
            }
            "LIN" => {
                let line_id = s
                    .get(1, 0)
                    .map(|v| v.trim_start_matches('0').to_string())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| (drafts.len() + 1).to_string());
                let gtin = match (s.get(3, 0), s.get(3, 1)) {
                    (Some(v), Some("EN") | Some("SRV")) => Some(v.to_string()),
                    _ => None,
                };
                drafts.push(LineDraft {
                    line: ReceiptLine {
                        line_id,
                        order_id: None,
                        order_line_id: None,
                        supplier_pid: None,
                        manufacturer_pid: None,
                        manufacturer: None,
                        gtin,
                        description: None,
                        quantity: Decimal::ZERO,
                        unit: None,
                        units: Vec::new(),
                    },
                    despatched: None,
                    accepted: None,
                    serials: Vec::new(),
                    expiry: None,
                    at: s.at(),
                });
            }
            "PIA" if in_line => {
                if let Some(l) = drafts.last_mut() {
                    for e in 2..=s.elements.len() {
                        let Some(code) = s.get(e, 0) else { continue };
                        match s.get(e, 1) {
                            Some("SA") => l.line.supplier_pid = Some(code.to_string()),
                            Some("MF") => l.line.manufacturer_pid = Some(code.to_string()),
                            Some("SN") => l.serials.push(code.to_string()),
                            None if l.line.supplier_pid.is_none() => {
                                l.line.supplier_pid = Some(code.to_string())
                            }
                            _ => {}
                        }
                    }
                }
            }
            "IMD" if in_line => {
                if let Some(l) = drafts.last_mut() {
                    if let Some(d) = s.get(3, 3) {
                        l.line.description = Some(d.to_string());
                    }
                }
            }
            "QTY" if in_line => {
                if let Some(l) = drafts.last_mut() {
                    let q = s.get(1, 1).unwrap_or("");
                    let qty = Decimal::from_str(q).map_err(|_| {
                        ReadError::invalid(s.at(), format!("expected a quantity, got {q:?}"))
                    })?;
                    match s.get(1, 0) {
                        Some("12") => l.despatched = Some(qty),
                        Some("194") => l.accepted = Some(qty),
                        _ => {}
                    }
                    if let Some(u) = s.get(1, 2) {
                        l.line.unit = Some(u.to_string());
                    }
                }
            }
            "GIN" => {
                if s.get(1, 0) != Some("BN") {
                    continue;
                }
                let Some(l) = drafts.last_mut() else {
                    return Err(ReadError::invalid(
                        s.at(),
                        "serial numbers (GIN+BN) before the first line item (LIN)",
                    ));
                };
                for e in 2..=s.elements.len() {
                    match (s.get(e, 0), s.get(e, 1)) {
                        (Some(first), None) => l.serials.push(first.to_string()),
                        (Some(first), Some(last)) => {
                            l.serials.extend(expand_range(first, last, &s.at())?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let receipt_id = receipt_id.ok_or_else(|| {
        ReadError::invalid("BGM", "the document number (BGM, element 2) is missing")
    })?;
    let mut lines = Vec::with_capacity(drafts.len());
    for d in drafts {
        let mut line = d.line;
        line.quantity = match format {
            ReceiptFormat::EdifactRecadv => d.accepted.or(d.despatched),
            _ => d.despatched,
        }
        .ok_or_else(|| ReadError::invalid(&d.at, "the line has no quantity (QTY+12 or QTY+194)"))?;
        if line.order_id.is_none() {
            line.order_id = purchase_order_id.clone();
        }
        let template = AssetUnit {
            serial_number: None,
            licence_key: None,
            warranty_end: d.expiry.filter(|_| !d.serials.is_empty()),
            licence_expiry: d.expiry.filter(|_| d.serials.is_empty()),
        };
        line.units = crate::units_for(&line.quantity, d.serials, &template);
        lines.push(line);
    }
    Ok(GoodsReceipt {
        receipt_id: receipt_id.clone(),
        format,
        document_date,
        received_on: receipt_date
            .or(delivery_date)
            .or(despatch_date)
            .or(document_date),
        supplier,
        dispatch_notification_id: match format {
            ReceiptFormat::EdifactDesadv => Some(receipt_id.clone()),
            _ => delivery_note,
        },
        purchase_order_id,
        shipment_id: None,
        warehouse_id: None,
        customer_id: None,
        order_refs,
        customer_party_ids,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_honours_una_and_release() {
        let segs = segments("UNA:+.? 'UNH+1+DESADV:D:96A:UN'IMD+F++:::A?+B?'C'UNT+3+1'").unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[1].get(3, 3), Some("A+B'C"));
        let custom = segments("UNA|*.? !UNH*1*DESADV|D!").unwrap();
        assert_eq!(custom[0].get(2, 0), Some("DESADV"));
        assert!(segments("UNH+1+DESADV:D:96A:UN'BGM+351").is_err());
    }

    #[test]
    fn ranges_expand_only_when_numeric() {
        assert_eq!(
            expand_range("SN0098", "SN0101", "x").unwrap(),
            ["SN0098", "SN0099", "SN0100", "SN0101"]
        );
        assert!(expand_range("AB1", "CD2", "x").is_err());
        assert!(expand_range("A5", "A1", "x").is_err());
    }
}
