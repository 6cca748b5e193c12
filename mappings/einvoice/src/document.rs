//! The view both writers read: a canonical invoice with signs, references and addresses
//! resolved once.
//!
//! Choices (see `docs/exports.md`): a credit note (381) carries positive amounts (the canonical
//! credit note stores the reversed, negative lines); BT-10 is the customer's buyer reference
//! (Leitweg-ID for public customers) and otherwise the customer number; the buyer's electronic
//! address (BT-49) is the invoice e-mail, else the report recipient's; the seller's (BT-34) is
//! the seller contact's e-mail; payment is SEPA credit transfer (58) to the seller's IBAN, with
//! the invoice number as remittance information (BT-83).

use crate::Format;
use canonical::invoice::{Invoice, InvoiceKind};
use chrono::NaiveDate;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: Option<String>,
    pub name: String,
    pub street: String,
    pub postcode: String,
    pub city: String,
    pub country: String,
    pub vat_id: Option<String>,
    pub tax_number: Option<String>,
    /// Electronic address (scheme `EM`: e-mail).
    pub endpoint: Option<String>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub contact_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub id: String,
    pub name: String,
    pub quantity: Decimal,
    pub unit: String,
    pub price: Decimal,
    /// BT-149 price base quantity (in the line's unit, BT-150); `None` = 1, not written.
    pub base: Option<Decimal>,
    pub net: Decimal,
    pub category: String,
    pub rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vat {
    pub category: String,
    pub rate: Decimal,
    pub base: Decimal,
    pub amount: Decimal,
    pub exemption_reason: Option<String>,
}

/// An invoice ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub format: Format,
    pub specification: &'static str,
    pub number: String,
    pub credit_note: bool,
    /// BT-3: 380 or 381.
    pub type_code: &'static str,
    pub issue_date: NaiveDate,
    pub due_date: NaiveDate,
    pub currency: String,
    pub buyer_reference: String,
    pub notes: Vec<String>,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub contract_id: String,
    /// BT-25: the invoice a credit note corrects.
    pub preceding: Option<String>,
    pub seller: Party,
    pub buyer: Party,
    pub iban: String,
    pub bic: Option<String>,
    pub payment_terms: String,
    pub lines: Vec<Line>,
    pub vat: Vec<Vat>,
    pub net: Decimal,
    pub tax: Decimal,
    pub gross: Decimal,
    pub payable: Decimal,
}

/// Why a document view could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("invoice {0} has no seller (master data `[seller]`): BR-06 cannot be met")]
    NoSeller(String),
}

fn some(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The exemption reason (BT-120) written for categories that need one, where the category
/// itself says why.
fn default_exemption(category: &str) -> Option<String> {
    match category {
        "AE" => Some(
            "Steuerschuldnerschaft des Leistungsempfängers (Reverse Charge, § 13b UStG)".into(),
        ),
        "K" => Some("Steuerfreie innergemeinschaftliche Leistung".into()),
        "G" => Some("Steuerfreie Ausfuhrlieferung".into()),
        "O" => Some("Nicht im Inland steuerbare Leistung".into()),
        _ => None,
    }
}

impl Document {
    pub fn of(inv: &Invoice, format: Format) -> Result<Self, DocumentError> {
        let seller = inv
            .seller
            .as_ref()
            .ok_or_else(|| DocumentError::NoSeller(inv.number.clone()))?;
        let credit_note = inv.kind == InvoiceKind::CreditNote;
        let sign = if credit_note {
            Decimal::NEGATIVE_ONE
        } else {
            Decimal::ONE
        };
        let b = &inv.buyer;
        let buyer_reference = inv
            .buyer_reference
            .clone()
            .or(b.buyer_reference.clone())
            .and_then(|r| some(&r))
            .unwrap_or_else(|| b.id.clone());
        let mut notes = Vec::new();
        if let Some(n) = inv.note.as_deref().and_then(some) {
            notes.push(n);
        }
        if let Some(r) = &inv.service_report_id {
            notes.push(format!(
                "Leistungsnachweis {r} (Leistungszeitraum {} bis {})",
                inv.period_start.format("%d.%m.%Y"),
                inv.period_end.format("%d.%m.%Y")
            ));
        }
        Ok(Document {
            format,
            specification: format.specification(),
            number: inv.number.clone(),
            credit_note,
            type_code: if credit_note { "381" } else { "380" },
            issue_date: inv.issue_date,
            due_date: inv.due_date,
            currency: inv.currency.clone(),
            buyer_reference,
            notes,
            period_start: inv.period_start,
            period_end: inv.period_end,
            contract_id: inv.contract_id.clone(),
            preceding: inv.original_number.clone(),
            seller: Party {
                id: None,
                name: seller.name.clone(),
                street: seller.address.street.clone(),
                postcode: seller.address.postcode.clone(),
                city: seller.address.city.clone(),
                country: seller.address.country.clone(),
                vat_id: some(&seller.vat_id),
                tax_number: seller.tax_number.as_deref().and_then(some),
                endpoint: some(&seller.contact.email),
                contact_name: some(&seller.contact.name),
                contact_phone: seller.phone.as_deref().and_then(some),
                contact_email: some(&seller.contact.email),
            },
            buyer: Party {
                id: Some(b.id.clone()),
                name: b.name.clone(),
                street: b.address.street.clone(),
                postcode: b.address.postcode.clone(),
                city: b.address.city.clone(),
                country: b.address.country.clone(),
                vat_id: b.vat_id.as_deref().and_then(some),
                tax_number: None,
                endpoint: b
                    .invoice_email
                    .as_deref()
                    .and_then(some)
                    .or_else(|| b.report_recipient.as_ref().and_then(|c| some(&c.email))),
                contact_name: None,
                contact_phone: None,
                contact_email: None,
            },
            iban: seller.iban.split_whitespace().collect(),
            bic: seller.bic.as_deref().and_then(some),
            payment_terms: inv.payment_terms.clone(),
            lines: inv
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| Line {
                    id: (i + 1).to_string(),
                    name: l.description.clone(),
                    quantity: l.quantity * sign,
                    unit: l.unit.clone(),
                    price: l.unit_price,
                    base: l.price_base_quantity.filter(|b| *b != Decimal::ONE),
                    net: l.net * sign,
                    category: l.vat_category.clone(),
                    rate: l.vat_rate,
                })
                .collect(),
            vat: inv
                .vat
                .iter()
                .map(|v| Vat {
                    category: v.category.clone(),
                    rate: v.rate,
                    base: v.base * sign,
                    amount: v.amount * sign,
                    exemption_reason: default_exemption(&v.category),
                })
                .collect(),
            net: inv.totals.net * sign,
            tax: inv.totals.vat * sign,
            gross: inv.totals.gross * sign,
            payable: inv.totals.gross * sign,
        })
    }
}
