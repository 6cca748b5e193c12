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
    pub quantity: Decimal,
    /// EN 16931 / UN/ECE Rec 20 unit code: `HUR` hours, `C62` pieces, `MIN` minutes.
    pub unit: String,
    pub unit_price: Decimal,
    /// quantity × unit price, rounded half-up to cents once.
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
}
