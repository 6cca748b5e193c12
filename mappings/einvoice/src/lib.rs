//! Canonical invoices → German e-invoices.
//!
//! - [`ubl`]: XRechnung 3.0 in UBL 2.1 (`Invoice` 380, `CreditNote` 381);
//! - [`cii`]: UN/CEFACT CII D16B, as XRechnung 3.0 and as ZUGFeRD 2.3 (profiles EN16931 and
//!   XRECHNUNG: the same XML with another specification identifier, BT-24);
//! - [`check`]: the hub's own pre-export checks (EN 16931 sums and VAT, the BR-DE rules, no
//!   empty mandatory values), so an invoice that an official validator would reject never
//!   leaves the hub.
//!
//! Both writers read the same [`Document`], a view of a canonical [`Invoice`] with the signs,
//! references and electronic addresses resolved once. Nothing here does I/O.

pub mod check;
pub mod cii;
mod document;
pub mod ubl;
mod xml;

pub use check::{check, Violation};
pub use document::{Document, DocumentError};

use canonical::invoice::Invoice;

/// BT-24 of XRechnung 3.0 (also ZUGFeRD's XRECHNUNG profile).
pub const XRECHNUNG_3: &str =
    "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0";
/// BT-24 of plain EN 16931 (ZUGFeRD 2.3 / Factur-X profile EN16931).
pub const EN16931: &str = "urn:cen.eu:en16931:2017";
/// BT-23 (business process), required by XRechnung 3.0.
pub const PEPPOL_BILLING: &str = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0";

/// The e-invoice formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// XRechnung 3.0, UBL 2.1 syntax.
    XrechnungUbl,
    /// XRechnung 3.0, CII syntax.
    XrechnungCii,
    /// ZUGFeRD 2.3 XML, profile EN16931.
    ZugferdEn16931,
    /// ZUGFeRD 2.3 XML, profile XRECHNUNG.
    ZugferdXrechnung,
}

impl Format {
    /// The specification identifier (BT-24) this format writes.
    pub fn specification(self) -> &'static str {
        match self {
            Format::ZugferdEn16931 => EN16931,
            _ => XRECHNUNG_3,
        }
    }
    /// Whether the German CIUS rules (BR-DE-*) apply.
    pub fn is_xrechnung(self) -> bool {
        self.specification() == XRECHNUNG_3
    }
}

/// Why an invoice was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Document(#[from] DocumentError),
    #[error("the invoice fails {} rule(s): {}", .0.len(), .0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
    Rules(Vec<Violation>),
}

impl WriteError {
    /// The ids of the rules that failed (`BR-DE-15`, `BR-CO-10`, …).
    pub fn rule_ids(&self) -> Vec<&'static str> {
        match self {
            WriteError::Document(_) => vec!["BR-06"],
            WriteError::Rules(v) => v.iter().map(|x| x.rule).collect(),
        }
    }
}

/// Checks the invoice and writes it in `format` (UTF-8 XML).
pub fn write(invoice: &Invoice, format: Format) -> Result<String, WriteError> {
    let doc = Document::of(invoice, format)?;
    let violations = check::check_document(&doc);
    if !violations.is_empty() {
        return Err(WriteError::Rules(violations));
    }
    Ok(match format {
        Format::XrechnungUbl => ubl::write(&doc),
        _ => cii::write(&doc),
    })
}
