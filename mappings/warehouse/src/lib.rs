//! Warehouse documents → canonical goods receipts.
//!
//! [`read`] picks the format (by content type, then by sniffing the first bytes), parses the
//! document into a [`canonical::goods::GoodsReceipt`] and runs the [`check`]s every receipt must
//! pass (serial count equals quantity, no duplicate serials, …). Formats:
//! - [`json`]: the hub's own JSON, one entry per physical unit (`docs/warehouse.md`);
//! - [`opentrans`]: openTRANS 2.1 DISPATCHNOTIFICATION and RECEIPTACKNOWLEDGEMENT, read
//!   leniently (namespaces or none, any prefix, declared encoding, compact dates);
//! - [`edifact`]: UN/EDIFACT D.96A DESADV and RECADV (serials in `GIN+BN`).
//!
//! Errors name the field (a document path) and what was expected. XML with a DTD or entity
//! declarations is refused outright (no entity expansion, no external fetches).

pub mod check;
pub mod dates;
pub mod edifact;
pub mod json;
pub mod opentrans;
pub mod xml;

use canonical::goods::GoodsReceipt;

/// Why a document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Not well-formed in its format (broken XML, bad JSON, unterminated EDIFACT).
    #[error("{field}: {message}")]
    Malformed { field: String, message: String },
    /// Refused for safety: DTDs, entity declarations, undeclared entities, too deep nesting.
    #[error("{field}: {message}")]
    Refused { field: String, message: String },
    /// Well-formed but not a valid goods receipt (missing id, wrong counts, duplicate serials).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The content is none of the supported formats.
    #[error("unsupported document: {0}")]
    Unsupported(String),
}

impl ReadError {
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReadError::Malformed {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn refused(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReadError::Refused {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReadError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ReadError::Malformed { field, .. }
            | ReadError::Refused { field, .. }
            | ReadError::Invalid { field, .. } => Some(field),
            ReadError::Unsupported(_) => None,
        }
    }
}

/// The wire formats [`read`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    Json,
    Xml,
    Edifact,
}

/// Chooses the format from the content type; `None` for a type that says nothing
/// (missing, `application/octet-stream`, `text/plain`).
pub fn format_from_content_type(
    content_type: Option<&str>,
) -> Result<Option<WireFormat>, ReadError> {
    let Some(ct) = content_type else {
        return Ok(None);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Ok(match essence.as_str() {
        "" | "application/octet-stream" | "text/plain" => None,
        "application/json" => Some(WireFormat::Json),
        e if e.ends_with("+json") => Some(WireFormat::Json),
        "application/xml" | "text/xml" => Some(WireFormat::Xml),
        e if e.ends_with("+xml") => Some(WireFormat::Xml),
        "application/edifact" | "application/edi-edifact" => Some(WireFormat::Edifact),
        "application/edi-x12" => {
            return Err(ReadError::Unsupported(
                "ANSI X12 is not supported; send UN/EDIFACT (application/EDIFACT)".into(),
            ))
        }
        other => {
            return Err(ReadError::Unsupported(format!(
                "content type {other:?}: expected application/json, application/xml or application/EDIFACT"
            )))
        }
    })
}

/// Guesses the format from the first bytes (after a BOM and white space).
pub fn sniff(body: &[u8]) -> Option<WireFormat> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &body[start..];
    match rest.first()? {
        b'{' => Some(WireFormat::Json),
        b'<' => Some(WireFormat::Xml),
        _ if rest.starts_with(b"UNA") || rest.starts_with(b"UNB") || rest.starts_with(b"UNH") => {
            Some(WireFormat::Edifact)
        }
        _ => None,
    }
}

/// Reads one goods receipt from a posted body and checks it.
pub fn read(body: &[u8], content_type: Option<&str>) -> Result<GoodsReceipt, ReadError> {
    let format = match format_from_content_type(content_type)? {
        Some(f) => f,
        None => sniff(body).ok_or_else(|| {
            ReadError::Unsupported(
                "the body is neither JSON, XML (openTRANS) nor EDIFACT".to_string(),
            )
        })?,
    };
    let receipt = match format {
        WireFormat::Json => json::parse(body)?,
        WireFormat::Xml => opentrans::parse(body)?,
        WireFormat::Edifact => edifact::parse(body)?,
    };
    check::check(&receipt)?;
    Ok(receipt)
}

/// The most units one line may expand to (a guard against `QUANTITY 1e9`).
pub const MAX_UNITS_PER_LINE: u32 = 10_000;

/// The units of a line: one per serial number when there are serials; else, when the document
/// says something per unit (a warranty end, a licence key or expiry: `template`), one per piece
/// for whole quantities; else none. Goods without serials or unit data (screws, cables) are
/// received and listed on the pick & pack ticket but do not become tracked assets.
pub fn units_for(
    quantity: &rust_decimal::Decimal,
    serials: Vec<String>,
    template: &canonical::goods::AssetUnit,
) -> Vec<canonical::goods::AssetUnit> {
    use rust_decimal::prelude::ToPrimitive;
    if !serials.is_empty() {
        return serials
            .into_iter()
            .map(|s| canonical::goods::AssetUnit {
                serial_number: Some(s),
                ..template.clone()
            })
            .collect();
    }
    if *template == canonical::goods::AssetUnit::default() {
        return Vec::new();
    }
    match quantity.to_u32() {
        Some(n) if quantity.fract().is_zero() && n <= MAX_UNITS_PER_LINE => {
            vec![template.clone(); n as usize]
        }
        _ => Vec::new(),
    }
}
