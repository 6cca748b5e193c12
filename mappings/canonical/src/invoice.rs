//! Invoices and what billing says about each piece of work.
//!
//! An invoice line is priced once (half-up to cents); VAT is computed per category and rate
//! from the sum of the line nets, rounded half-up once per category — the way EN 16931 checks
//! it. Every time entry of a period gets an [`EntryStatus`] for the service report.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What became of a time entry (or part of it) in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EntryStatus {
    /// Free initial diagnosis (Erstdiagnose).
    FreeDiagnosis,
    /// Drawn from the prepaid contingent.
    Contingent,
    /// On the invoice.
    Invoiced,
    /// Marked non-billable at the source, with its reason.
    NonBillable { reason: String },
    /// The ticket's classification is free under the contract (e.g. `base_bug`).
    FreeClassification { classification: String },
    /// Covered by a flat-rate contract.
    Covered,
    /// Written off by an approver, with the reason.
    WrittenOff { reason: String },
    /// Beyond a budget cap or an overdraft on hold: waits for the customer's approval.
    Held { reason: String },
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// Stable key within the run, e.g. `T:81001:2nd:remote`, `FEE`, `OVERDRAFT`.
    pub key: String,
    pub description: String,
    /// Invoiced quantity (BT-129). Worked time is in whole minutes (`MIN`), so it is exact.
    pub quantity: Decimal,
    /// EN 16931 / UN/ECE Rec 20 unit code: `HUR` hours, `C62` pieces, `MIN` minutes.
    pub unit: String,
    /// Net price (BT-146) per [`price_base_quantity`](Self::price_base_quantity) units.
    pub unit_price: Decimal,
    /// Price base quantity (BT-149, in the line's unit, BT-150): `60` for time (the price is
    /// per 60 minutes); absent = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_base_quantity: Option<Decimal>,
    /// quantity × unit price ÷ price base quantity, rounded half-up to cents once
    /// (EN 16931 BT-131 = BT-129 × (BT-146 ÷ BT-149)).
    pub net: Decimal,
    pub vat_category: String,
    pub vat_rate: Decimal,
    #[serde(default)]
    pub ticket_id: Option<String>,
    #[serde(default)]
    pub entry_ids: Vec<String>,
}

/// VAT of one category and rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VatBreakdown {
    pub category: String,
    pub rate: Decimal,
    pub base: Decimal,
    pub amount: Decimal,
}

/// Document totals.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub net: Decimal,
    pub vat: Decimal,
    pub gross: Decimal,
}

/// Invoice or credit note (EN 16931 type codes 380 / 381).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    Invoice,
    CreditNote,
}

/// A finalized invoice: everything an exporter needs, frozen at finalization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub number: String,
    pub kind: InvoiceKind,
    /// For a credit note: the invoice it corrects.
    #[serde(default)]
    pub original_number: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    pub number_range: String,
    pub issue_date: chrono::NaiveDate,
    pub due_date: chrono::NaiveDate,
    pub period: crate::work::Period,
    pub period_start: chrono::NaiveDate,
    pub period_end: chrono::NaiveDate,
    #[serde(default)]
    pub seller: Option<crate::customer::Seller>,
    pub buyer: crate::customer::Customer,
    #[serde(default)]
    pub buyer_reference: Option<String>,
    pub contract_id: String,
    pub lines: Vec<InvoiceLine>,
    pub vat: Vec<VatBreakdown>,
    pub totals: Totals,
    pub currency: String,
    pub payment_terms: String,
    #[serde(default)]
    pub service_report_id: Option<String>,
    /// Free text, e.g. the reason of a credit note.
    #[serde(default)]
    pub note: Option<String>,
}

/// Minutes per hour: the price base quantity of time lines (price per 60 minutes).
pub const MINUTES_PER_HOUR: Decimal = Decimal::from_parts(60, 0, 0, false, 0);

/// A line's net: quantity × price ÷ base quantity, rounded half-up to cents once.
pub fn line_net(quantity: Decimal, price: Decimal, base: Decimal) -> Decimal {
    if base.is_zero() {
        return cents(quantity * price);
    }
    cents(quantity * price / base)
}

impl InvoiceLine {
    /// The price base quantity (BT-149): 1 unless set.
    pub fn base_quantity(&self) -> Decimal {
        self.price_base_quantity.unwrap_or(Decimal::ONE)
    }

    /// A line for worked time: the quantity in whole minutes (`MIN`, UN/ECE Rec 20), the
    /// hourly rate as the price per 60 minutes (BT-149 = 60), the net to the cent — so
    /// quantity × price ÷ base = net holds exactly in every format. No ticket or entries.
    pub fn minutes(
        key: String,
        description: String,
        minutes: u32,
        hourly: Decimal,
        vat_category: String,
        vat_rate: Decimal,
    ) -> Self {
        let quantity = Decimal::from(minutes);
        InvoiceLine {
            key,
            description,
            net: line_net(quantity, hourly, MINUTES_PER_HOUR),
            quantity,
            unit: "MIN".into(),
            unit_price: hourly,
            price_base_quantity: Some(MINUTES_PER_HOUR),
            vat_category,
            vat_rate,
            ticket_id: None,
            entry_ids: Vec::new(),
        }
    }
}

/// Rounds an amount half-up (away from zero at .5) to cents.
pub fn cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// The VAT breakdown and totals of a set of lines.
pub fn vat_and_totals(lines: &[InvoiceLine]) -> (Vec<VatBreakdown>, Totals) {
    let mut groups: std::collections::BTreeMap<(String, Decimal), Decimal> = Default::default();
    for l in lines {
        *groups
            .entry((l.vat_category.clone(), l.vat_rate.normalize()))
            .or_default() += l.net;
    }
    let breakdown: Vec<VatBreakdown> = groups
        .into_iter()
        .map(|((category, rate), base)| VatBreakdown {
            amount: cents(base * rate / Decimal::from(100)),
            category,
            rate,
            base,
        })
        .collect();
    let net: Decimal = lines.iter().map(|l| l.net).sum();
    let vat: Decimal = breakdown.iter().map(|b| b.amount).sum();
    (
        breakdown,
        Totals {
            net,
            vat,
            gross: net + vat,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn line(net: Decimal, rate: Decimal) -> InvoiceLine {
        InvoiceLine {
            key: "k".into(),
            description: "d".into(),
            quantity: dec!(1),
            unit: "C62".into(),
            unit_price: net,
            price_base_quantity: None,
            net,
            vat_category: "S".into(),
            vat_rate: rate,
            ticket_id: None,
            entry_ids: vec![],
        }
    }

    #[test]
    fn vat_is_rounded_once_per_category() {
        // Per line: 0.19 × 0.05 = 0.0095 → 0.01 each, 0.03 in total; per category: 0.15 × 0.19 = 0.0285 → 0.03.
        // With 0.13 per line ×3: per line 0.0247 → 0.02 each = 0.06; per category 0.39 × 0.19 = 0.0741 → 0.07.
        let lines = vec![
            line(dec!(0.13), dec!(19)),
            line(dec!(0.13), dec!(19)),
            line(dec!(0.13), dec!(19)),
            line(dec!(10.00), dec!(7)),
        ];
        let (b, t) = vat_and_totals(&lines);
        assert_eq!(b.len(), 2);
        let s = b.iter().find(|x| x.rate == dec!(19)).unwrap();
        assert_eq!((s.base, s.amount), (dec!(0.39), dec!(0.07)));
        let r = b.iter().find(|x| x.rate == dec!(7)).unwrap();
        assert_eq!((r.base, r.amount), (dec!(10.00), dec!(0.70)));
        assert_eq!(
            t,
            Totals {
                net: dec!(10.39),
                vat: dec!(0.77),
                gross: dec!(11.16)
            }
        );
        assert_eq!(cents(dec!(2.345)), dec!(2.35));
        assert_eq!(cents(dec!(-2.345)), dec!(-2.35));
    }

    #[test]
    fn time_lines_are_minutes_priced_per_sixty() {
        // 50 min at 70 €/h: 50 × 70 / 60 = 58.333… → 58.33, with no rounded quantity.
        let l = InvoiceLine::minutes("k".into(), "d".into(), 50, dec!(70), "S".into(), dec!(19));
        assert_eq!(
            (l.quantity, l.unit.as_str(), l.base_quantity(), l.net),
            (dec!(50), "MIN", dec!(60), dec!(58.33))
        );
        // Half a cent rounds up: 1 min at 0.30 €/h = 0.005.
        let l = InvoiceLine::minutes("k".into(), "d".into(), 1, dec!(0.30), "S".into(), dec!(19));
        assert_eq!(l.net, dec!(0.01));
        // Old documents without the field read as base 1.
        let mut json = serde_json::to_value(line(dec!(5), dec!(19))).unwrap();
        assert!(json.get("price_base_quantity").is_none());
        json.as_object_mut().unwrap().remove("price_base_quantity");
        let back: InvoiceLine = serde_json::from_value(json).unwrap();
        assert_eq!(back.base_quantity(), dec!(1));
    }
}
