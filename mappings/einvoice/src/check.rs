//! The hub's pre-export checks: what the official validation (XSD → CEN EN 16931 rules →
//! XRechnung rules) would reject, checked before anything is written. Each violation names the
//! rule id (`BR-CO-10`, `BR-DE-15`, `PEPPOL-EN16931-R010`, …), so a refused invoice can be
//! dead-lettered with the ids and fixed in the master data.
//!
//! Implemented: document basics (BR-02…BR-07, BR-CL-04), addresses (BR-08…BR-11, BR-DE-3/4/8/9),
//! seller contact (BR-DE-2/5/6/7, BR-DE-27/28 as errors), electronic addresses
//! (PEPPOL-EN16931-R010/R020), seller tax identifiers (BR-DE-16, BR-CO-09), buyer reference
//! (BR-DE-15), reverse charge VAT ids (BR-AE-02), payment (BR-DE-1, BR-DE-23-a, BR-DE-19 IBAN checksum), payment terms or due
//! date (BR-CO-25), lines (BR-16, BR-21…BR-27), VAT categories and rates (BR-S-05, BR-Z-05,
//! BR-E-05, BR-AE-05, BR-E-10), sums and VAT per EN 16931 (BR-CO-10, -13, -14, -15, -16,
//! BR-CO-17, BR-S-08, BR-45…BR-48), at most two decimals on amounts (BR-DEC-*), the
//! invoicing period (BR-29), and the hub's own `DK-LINE-NET`: every line's quantity × price ÷
//! price base quantity (BT-129 × BT-146 ÷ BT-149) is its net (BT-131) to the cent.

use crate::document::Document;
use crate::Format;
use canonical::invoice::{cents, Invoice};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    /// The business term (`BT-10`) or group it is about.
    pub term: &'static str,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.term, self.message)
    }
}

/// Checks an invoice for a format.
pub fn check(invoice: &Invoice, format: Format) -> Vec<Violation> {
    match Document::of(invoice, format) {
        Ok(d) => check_document(&d),
        Err(e) => vec![Violation {
            rule: "BR-06",
            term: "BT-27",
            message: e.to_string(),
        }],
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn iban_ok(iban: &str) -> bool {
    let s: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() < 15 || s.len() > 34 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        for d in v.to_string().chars() {
            rem = (rem * 10 + d.to_digit(10).unwrap_or(0)) % 97;
        }
    }
    rem == 1
}

fn two_decimals(d: Decimal) -> bool {
    d.normalize().scale() <= 2
}

/// Checks a document view.
pub fn check_document(d: &Document) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut fail = |rule: &'static str, term: &'static str, message: String| {
        v.push(Violation {
            rule,
            term,
            message,
        })
    };
    let xr = d.format.is_xrechnung();
    if blank(&d.number) {
        fail("BR-02", "BT-1", "the invoice number is empty".into());
    }
    if d.currency.len() != 3 || !d.currency.chars().all(|c| c.is_ascii_uppercase()) {
        fail(
            "BR-CL-04",
            "BT-5",
            format!("currency {:?} is not an ISO 4217 code", d.currency),
        );
    }
    for (who, p, name_rule, addr_rules) in [
        (
            "seller",
            &d.seller,
            "BR-06",
            ("BR-DE-3", "BR-DE-4", "BR-09"),
        ),
        ("buyer", &d.buyer, "BR-07", ("BR-DE-8", "BR-DE-9", "BR-11")),
    ] {
        if blank(&p.name) {
            fail(
                name_rule,
                if who == "seller" { "BT-27" } else { "BT-44" },
                format!("the {who}'s name is empty"),
            );
        }
        if blank(&p.city) {
            fail(
                if xr { addr_rules.0 } else { "BR-08" },
                if who == "seller" { "BT-37" } else { "BT-52" },
                format!("the {who}'s city is empty"),
            );
        }
        if blank(&p.postcode) {
            fail(
                if xr { addr_rules.1 } else { "BR-08" },
                if who == "seller" { "BT-38" } else { "BT-53" },
                format!("the {who}'s post code is empty"),
            );
        }
        if p.country.len() != 2 || !p.country.chars().all(|c| c.is_ascii_uppercase()) {
            fail(
                addr_rules.2,
                if who == "seller" { "BT-40" } else { "BT-55" },
                format!(
                    "the {who}'s country {:?} is not an ISO 3166-1 alpha-2 code",
                    p.country
                ),
            );
        }
        if p.endpoint.is_none() {
            fail(
                if who == "seller" {
                    "PEPPOL-EN16931-R020"
                } else {
                    "PEPPOL-EN16931-R010"
                },
                if who == "seller" { "BT-34" } else { "BT-49" },
                format!(
                    "the {who} has no electronic address (e-mail: {})",
                    if who == "seller" {
                        "seller contact e-mail"
                    } else {
                        "customer invoice_email or report recipient"
                    }
                ),
            );
        }
    }
    if xr {
        if d.seller.contact_name.is_none() {
            fail("BR-DE-5", "BT-41", "the seller contact has no name".into());
        }
        match &d.seller.contact_phone {
            None => fail(
                "BR-DE-6",
                "BT-42",
                "the seller contact has no telephone number (seller `phone`)".into(),
            ),
            Some(p) if p.chars().filter(|c| c.is_ascii_digit()).count() < 3 => fail(
                "BR-DE-27",
                "BT-42",
                format!("telephone {p:?} has fewer than three digits"),
            ),
            _ => {}
        }
        match &d.seller.contact_email {
            None => fail(
                "BR-DE-7",
                "BT-43",
                "the seller contact has no e-mail".into(),
            ),
            Some(e) if e.matches('@').count() != 1 || e.starts_with('@') || e.ends_with('@') => {
                fail(
                    "BR-DE-28",
                    "BT-43",
                    format!("e-mail {e:?} is not an address"),
                )
            }
            _ => {}
        }
        if blank(&d.buyer_reference) {
            fail(
                "BR-DE-15",
                "BT-10",
                "the buyer reference (Leitweg-ID or agreed reference) is empty".into(),
            );
        }
    }
    let taxed = d.vat.iter().any(|x| {
        matches!(
            x.category.as_str(),
            "S" | "Z" | "E" | "AE" | "K" | "G" | "L" | "M"
        )
    });
    if taxed && d.seller.vat_id.is_none() && d.seller.tax_number.is_none() {
        fail(
            if xr { "BR-DE-16" } else { "BR-S-02" },
            "BT-31",
            "the seller has neither a VAT id nor a tax number".into(),
        );
    }
    if d.vat.iter().any(|x| x.category == "AE") {
        if d.seller.vat_id.is_none() {
            fail(
                "BR-AE-02",
                "BT-31",
                "reverse charge (AE) needs the seller's VAT id".into(),
            );
        }
        if d.buyer.vat_id.is_none() {
            fail(
                "BR-AE-02",
                "BT-48",
                "reverse charge (AE) needs the buyer's VAT id".into(),
            );
        }
    }
    if let Some(id) = &d.seller.vat_id {
        if id.chars().count() < 3 || !id.chars().take(2).all(|c| c.is_ascii_uppercase()) {
            fail(
                "BR-CO-09",
                "BT-31",
                format!("VAT id {id:?} must start with a country prefix"),
            );
        }
    }
    if blank(&d.iban) {
        fail(
            if xr { "BR-DE-23-a" } else { "BR-50" },
            "BT-84",
            "SEPA credit transfer (58) needs the seller's IBAN".into(),
        );
    } else if !iban_ok(&d.iban) {
        fail(
            "BR-DE-19",
            "BT-84",
            format!("IBAN {:?} fails the checksum", d.iban),
        );
    }
    if d.payable > Decimal::ZERO && blank(&d.payment_terms) {
        // The due date (BT-9) is always written for invoices; credit notes carry terms.
        if d.credit_note {
            fail(
                "BR-CO-25",
                "BT-20",
                "an amount is due but there are no payment terms".into(),
            );
        }
    }
    if d.period_end < d.period_start {
        fail(
            "BR-29",
            "BG-14",
            "the invoicing period ends before it starts".into(),
        );
    }
    if d.lines.is_empty() {
        fail("BR-16", "BG-25", "the invoice has no lines".into());
    }
    let mut by_group: BTreeMap<(String, Decimal), Decimal> = BTreeMap::new();
    for l in &d.lines {
        if blank(&l.name) {
            fail(
                "BR-25",
                "BT-153",
                format!("line {}: the item name is empty", l.id),
            );
        }
        if blank(&l.unit) {
            fail(
                "BR-23",
                "BT-130",
                format!("line {}: no unit of measure", l.id),
            );
        }
        if l.price < Decimal::ZERO {
            fail(
                "BR-27",
                "BT-146",
                format!("line {}: negative net price {}", l.id, l.price),
            );
        }
        // EN 16931 BT-131 = BT-129 × (BT-146 ÷ BT-149), to the cent (the hub's own rule:
        // the CEN rules leave the line calculation to the seller).
        let base = l.base.unwrap_or(Decimal::ONE);
        if !base.is_zero() && cents(l.quantity * l.price / base) != l.net {
            fail(
                "DK-LINE-NET",
                "BT-131",
                format!(
                    "line {}: {} × {} ÷ {} ≠ net {}",
                    l.id, l.quantity, l.price, base, l.net
                ),
            );
        }
        if base <= Decimal::ZERO {
            fail(
                "DK-LINE-NET",
                "BT-149",
                format!("line {}: price base quantity {base} is not positive", l.id),
            );
        }
        if !two_decimals(l.net) {
            fail(
                "BR-DEC-23",
                "BT-131",
                format!(
                    "line {}: net amount {} has more than two decimals",
                    l.id, l.net
                ),
            );
        }
        match l.category.as_str() {
            "S" if l.rate <= Decimal::ZERO => fail(
                "BR-S-05",
                "BT-152",
                format!("line {}: standard rate must be above 0", l.id),
            ),
            "Z" | "E" | "AE" | "K" | "G" | "O" if !l.rate.is_zero() => fail(
                match l.category.as_str() {
                    "Z" => "BR-Z-05",
                    "E" => "BR-E-05",
                    "AE" => "BR-AE-05",
                    "K" => "BR-IC-05",
                    "G" => "BR-G-05",
                    _ => "BR-O-05",
                },
                "BT-152",
                format!("line {}: category {} must have rate 0", l.id, l.category),
            ),
            "S" | "Z" | "E" | "AE" | "K" | "G" | "O" | "L" | "M" => {}
            other => fail(
                "BR-CL-18",
                "BT-151",
                format!("line {}: unknown VAT category {other:?}", l.id),
            ),
        }
        *by_group
            .entry((l.category.clone(), l.rate.normalize()))
            .or_default() += l.net;
    }
    let line_sum: Decimal = d.lines.iter().map(|l| l.net).sum();
    if line_sum != d.net {
        fail(
            "BR-CO-10",
            "BT-106",
            format!("sum of line nets {line_sum} ≠ line total {}", d.net),
        );
    }
    let mut vat_sum = Decimal::ZERO;
    for b in &d.vat {
        vat_sum += b.amount;
        let key = (b.category.clone(), b.rate.normalize());
        match by_group.get(&key) {
            Some(base) if *base == b.base => {}
            Some(base) => fail(
                "BR-S-08",
                "BT-116",
                format!(
                    "VAT base {} for {} {} % ≠ sum of its lines {base}",
                    b.base, b.category, b.rate
                ),
            ),
            None => fail(
                "BR-48",
                "BG-23",
                format!("VAT breakdown {} {} % has no lines", b.category, b.rate),
            ),
        }
        let expect = cents(b.base * b.rate / Decimal::from(100));
        if b.amount != expect {
            fail(
                "BR-CO-17",
                "BT-117",
                format!(
                    "VAT {} for base {} at {} % should be {expect}",
                    b.amount, b.base, b.rate
                ),
            );
        }
        if !two_decimals(b.base) || !two_decimals(b.amount) {
            fail(
                "BR-DEC-19",
                "BT-116",
                "VAT base and amount take at most two decimals".into(),
            );
        }
        if b.category == "E" && b.exemption_reason.is_none() {
            fail(
                "BR-E-10",
                "BT-120",
                "an exempt (E) VAT breakdown needs an exemption reason".into(),
            );
        }
    }
    for (g, _) in by_group.iter().filter(|(g, _)| {
        !d.vat
            .iter()
            .any(|b| (b.category.clone(), b.rate.normalize()) == **g)
    }) {
        fail(
            "BR-CO-18",
            "BG-23",
            format!("lines of {} {} % have no VAT breakdown", g.0, g.1),
        );
    }
    if vat_sum != d.tax {
        fail(
            "BR-CO-14",
            "BT-110",
            format!("sum of VAT breakdowns {vat_sum} ≠ VAT total {}", d.tax),
        );
    }
    if d.net + d.tax != d.gross {
        fail(
            "BR-CO-15",
            "BT-112",
            format!("{} + {} ≠ {}", d.net, d.tax, d.gross),
        );
    }
    if d.gross != d.payable {
        fail(
            "BR-CO-16",
            "BT-115",
            format!(
                "amount due {} ≠ total {} (no prepayment or rounding)",
                d.payable, d.gross
            ),
        );
    }
    for (t, a) in [
        ("BT-106", d.net),
        ("BT-110", d.tax),
        ("BT-112", d.gross),
        ("BT-115", d.payable),
    ] {
        if !two_decimals(a) {
            fail("BR-DEC-09", t, format!("{a} has more than two decimals"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::iban_ok;

    #[test]
    fn iban_checksum() {
        assert!(iban_ok("DE02120300000000202051"));
        assert!(iban_ok("DE75 5121 0800 1245 1261 99"));
        assert!(!iban_ok("DE02120300000000202052"));
        assert!(!iban_ok("DE0"));
    }
}
