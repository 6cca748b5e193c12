//! DATEV-Format (EXTF) CSV: one Buchungsstapel per period and client, and the Debitoren of the
//! customers in it.
//!
//! Per invoice, one booking per VAT rate: **gross** amount, `S` (invoice) or `H` (credit note)
//! on the customer's debitor account, the revenue account of the rate as Gegenkonto (SKR03:
//! 8400 for 19 %, 8300 for 7 %; SKR04: 4400 / 4300 — automatic accounts, so no BU key),
//! Belegdatum = issue date (TTMM), Belegfeld 1 = the invoice number (sanitized to DATEV's
//! charset), Leistungsdatum with Datum Zuord. Steuerperiode = the period's last day, and
//! Festschreibung written explicitly (0). Text is mapped to Windows-1252 before encoding;
//! characters it lacks become `?` — no silent loss of `€`, umlauts or typographic quotes.

use crate::columns::{BUCHUNGSSTAPEL_V13, DEBITOREN_KREDITOREN_V5};
use canonical::customer::Customer;
use canonical::invoice::{Invoice, InvoiceKind};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The client's chart of accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chart {
    Skr03,
    Skr04,
}

impl Chart {
    fn code(self) -> &'static str {
        match self {
            Chart::Skr03 => "03",
            Chart::Skr04 => "04",
        }
    }
    /// The automatic revenue account for a VAT category and rate.
    pub fn revenue_account(self, category: &str, rate: Decimal) -> Option<u32> {
        let r = rate.normalize();
        match (self, category, r.to_string().as_str()) {
            (Chart::Skr03, "S", "19") => Some(8400),
            (Chart::Skr03, "S", "7") | (Chart::Skr03, "AA", "7") => Some(8300),
            (Chart::Skr03, "AE", _) => Some(8336),
            (Chart::Skr03, "O", _) => Some(8338),
            (Chart::Skr04, "S", "19") => Some(4400),
            (Chart::Skr04, "S", "7") | (Chart::Skr04, "AA", "7") => Some(4300),
            (Chart::Skr04, "AE", _) => Some(4336),
            (Chart::Skr04, "O", _) => Some(4338),
            _ => None,
        }
    }
}

/// What the tax advisor gives us (from config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtfSettings {
    pub consultant_number: u32,
    pub client_number: u32,
    /// First day of the fiscal year (e.g. 1 January).
    pub fiscal_year_start: NaiveDate,
    /// Sachkontenlänge (4 for SKR03/04 standard clients).
    pub account_length: u8,
    pub chart: Chart,
    /// `Exportiert von` (word characters only).
    pub exported_by: String,
}

/// Why a file could not be written; names the invoice and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtfError {
    #[error("invoice {invoice}: no revenue account for VAT category {category} rate {rate} in {chart:?}")]
    NoRevenueAccount {
        invoice: String,
        category: String,
        rate: String,
        chart: Chart,
    },
    #[error("invoice {invoice}: debitor account {account} is not a personal account for account length {length}")]
    BadDebitor {
        invoice: String,
        account: u32,
        length: u8,
    },
    #[error(
        "invoice {invoice}: issue date {date} is outside the batch {from}–{to} or the fiscal year"
    )]
    DateOutOfBatch {
        invoice: String,
        date: NaiveDate,
        from: NaiveDate,
        to: NaiveDate,
    },
    #[error("settings: {0}")]
    Settings(String),
    #[error("invoice {invoice}: `{field}`: {reason}")]
    Invalid {
        invoice: String,
        field: String,
        reason: String,
    },
}

fn text(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    format!("\"{}\"", clean.replace('"', "\"\""))
}

fn amount(d: Decimal) -> String {
    format!("{:.2}", d.abs().round_dp(2)).replace('.', ",")
}

/// Belegfeld 1: DATEV admits `A-Za-z0-9$&%*+-/`, at most 36.
pub fn belegfeld(number: &str) -> String {
    number
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "$&%*+-/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(36)
        .collect()
}

fn cp1252(s: &str) -> Vec<u8> {
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(s);
    bytes.into_owned()
}

fn header(
    s: &ExtfSettings,
    category: u8,
    name: &str,
    version: u8,
    created: NaiveDateTime,
    span: Option<(NaiveDate, NaiveDate)>,
    label: &str,
) -> String {
    let ymd = |d: NaiveDate| d.format("%Y%m%d").to_string();
    let (from, to) = span.map(|(a, b)| (ymd(a), ymd(b))).unwrap_or_default();
    let booking = category == 21;
    let fields: Vec<String> = vec![
        "\"EXTF\"".into(),
        "700".into(),
        category.to_string(),
        format!("\"{name}\""),
        version.to_string(),
        created.format("%Y%m%d%H%M%S%3f").to_string(),
        String::new(),
        "\"RE\"".into(),
        format!(
            "\"{}\"",
            s.exported_by
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '_')
                .take(25)
                .collect::<String>()
        ),
        "\"\"".into(),
        s.consultant_number.to_string(),
        s.client_number.to_string(),
        ymd(s.fiscal_year_start),
        s.account_length.to_string(),
        from,
        to,
        if booking {
            text(label, 30)
        } else {
            "\"\"".into()
        },
        "\"\"".into(),
        if booking { "1".into() } else { String::new() },
        if booking { "0".into() } else { String::new() },
        if booking { "0".into() } else { String::new() },
        if booking {
            "\"EUR\"".into()
        } else {
            "\"\"".into()
        },
        String::new(),
        "\"\"".into(),
        String::new(),
        String::new(),
        format!("\"{}\"", s.chart.code()),
        String::new(),
        String::new(),
        "\"\"".into(),
        "\"drehkreuz\"".into(),
    ];
    fields.join(";")
}

fn check_settings(s: &ExtfSettings) -> Result<(), ExtfError> {
    if !(1001..=9_999_999).contains(&s.consultant_number) {
        return Err(ExtfError::Settings(
            "consultant_number must be 1001–9999999".into(),
        ));
    }
    if !(1..=99_999).contains(&s.client_number) {
        return Err(ExtfError::Settings("client_number must be 1–99999".into()));
    }
    if !(4..=8).contains(&s.account_length) {
        return Err(ExtfError::Settings("account_length must be 4–8".into()));
    }
    Ok(())
}

/// The Buchungsstapel of `invoices` for the period `from..=to` (one calendar year, inside the
/// fiscal year). `created` is the file's creation time (part of the header).
pub fn buchungsstapel(
    s: &ExtfSettings,
    invoices: &[Invoice],
    from: NaiveDate,
    to: NaiveDate,
    created: NaiveDateTime,
) -> Result<Vec<u8>, ExtfError> {
    check_settings(s)?;
    let label = format!("Rechnungen {}", from.format("%m/%Y"));
    let mut out = String::new();
    out.push_str(&header(
        s,
        21,
        "Buchungsstapel",
        13,
        created,
        Some((from, to)),
        &label,
    ));
    out.push_str("\r\n");
    out.push_str(&BUCHUNGSSTAPEL_V13.join(";"));
    out.push_str("\r\n");
    let fy_end = NaiveDate::from_ymd_opt(
        s.fiscal_year_start.year() + 1,
        s.fiscal_year_start.month(),
        s.fiscal_year_start.day(),
    )
    .and_then(|d| d.pred_opt())
    .unwrap_or(to);
    let (lo, hi) = (
        10u32.pow(u32::from(s.account_length)),
        7 * 10u32.pow(u32::from(s.account_length)) - 1,
    );
    for inv in invoices {
        let date = inv.issue_date;
        if date < from || date > to || date < s.fiscal_year_start || date > fy_end {
            return Err(ExtfError::DateOutOfBatch {
                invoice: inv.number.clone(),
                date,
                from,
                to,
            });
        }
        let debitor = inv.buyer.datev_account;
        if !(lo..=hi).contains(&debitor) {
            return Err(ExtfError::BadDebitor {
                invoice: inv.number.clone(),
                account: debitor,
                length: s.account_length,
            });
        }
        // One booking per VAT category and rate: gross = base + VAT of that group.
        let mut groups: BTreeMap<(String, String), Decimal> = BTreeMap::new();
        for v in &inv.vat {
            *groups
                .entry((v.category.clone(), v.rate.normalize().to_string()))
                .or_default() += v.base + v.amount;
        }
        for ((category, rate), gross) in groups {
            if gross.is_zero() {
                continue;
            }
            let rate_d: Decimal = rate.parse().unwrap_or_default();
            let account = s.chart.revenue_account(&category, rate_d).ok_or_else(|| {
                ExtfError::NoRevenueAccount {
                    invoice: inv.number.clone(),
                    category: category.clone(),
                    rate: rate.clone(),
                    chart: s.chart,
                }
            })?;
            // A credit note (or a negative total) is booked on the credit side.
            let credit = inv.kind == InvoiceKind::CreditNote || gross.is_sign_negative();
            let mut row = vec![String::new(); BUCHUNGSSTAPEL_V13.len()];
            row[0] = amount(gross);
            row[1] = if credit {
                "\"H\"".into()
            } else {
                "\"S\"".into()
            };
            row[2] = "\"EUR\"".into();
            row[6] = debitor.to_string();
            row[7] = account.to_string();
            row[8] = "\"\"".into();
            row[9] = date.format("%d%m").to_string();
            row[10] = text(&belegfeld(&inv.number), 36);
            row[13] = text(
                &format!(
                    "{} {} {}",
                    if inv.kind == InvoiceKind::CreditNote {
                        "Gutschrift"
                    } else {
                        "Rechnung"
                    },
                    inv.number,
                    inv.buyer.name
                ),
                60,
            );
            if let Some(cc) = inv
                .note
                .as_deref()
                .and_then(|n| n.strip_prefix("Kostenstelle "))
            {
                row[36] = text(cc, 36);
            }
            row[113] = "0".into();
            row[114] = inv.period_end.format("%d%m%Y").to_string();
            row[115] = inv.period_end.format("%d%m%Y").to_string();
            row[116] = inv.due_date.format("%d%m%Y").to_string();
            out.push_str(&row.join(";"));
            out.push_str("\r\n");
        }
    }
    Ok(cp1252(&out))
}

/// Debitoren/Kreditoren rows for the customers (one per debitor account).
pub fn debitoren(
    s: &ExtfSettings,
    customers: &[Customer],
    created: NaiveDateTime,
) -> Result<Vec<u8>, ExtfError> {
    check_settings(s)?;
    let mut out = String::new();
    out.push_str(&header(s, 16, "Debitoren/Kreditoren", 5, created, None, ""));
    out.push_str("\r\n");
    out.push_str(&DEBITOREN_KREDITOREN_V5.join(";"));
    out.push_str("\r\n");
    let mut seen = std::collections::BTreeSet::new();
    for c in customers {
        if !seen.insert(c.datev_account) {
            continue;
        }
        let mut row = vec![String::new(); DEBITOREN_KREDITOREN_V5.len()];
        row[0] = c.datev_account.to_string();
        row[1] = text(&c.name, 50);
        row[6] = "\"2\"".into();
        row[7] = text(&c.name, 15);
        if let Some(v) = &c.vat_id {
            let (country, number) = v.split_at(2.min(v.len()));
            row[8] = text(country, 2);
            row[9] = text(number, 13);
        }
        row[14] = "\"STR\"".into();
        row[15] = text(&c.address.street, 36);
        row[17] = text(&c.address.postcode, 10);
        row[18] = text(&c.address.city, 30);
        row[19] = text(&c.address.country, 2);
        if let Some(e) = &c.invoice_email {
            row[32] = text(e, 60);
        }
        row[99] = text(&c.debitor_number, 15);
        row[219] = text(&c.id, 15);
        out.push_str(&row.join(";"));
        out.push_str("\r\n");
    }
    Ok(cp1252(&out))
}
