//! Canonical invoices → SAP IDoc-XML (SAP IDoc documentation: INVOIC02, ACC_DOCUMENT03).
//!
//! - [`invoic02`]: `INVOIC02` / message `INVOIC`, the invoice as a customer's SAP receives it
//!   (logistics invoice verification or FI): header `E1EDK01`, partners `E1EDKA1` (RS, AG, RE,
//!   RG), references `E1EDK02` (009 invoice, 001 contract), dates `E1EDK03` (012 document, 026
//!   billing, 027 service rendered, 028 due), taxes `E1EDK04` per rate, terms `E1EDK18`, items
//!   `E1EDP01` with `E1EDP19` (material), `E1EDP26` (net value), `E1EDP04` (tax), texts
//!   `E1EDPT1/2`, totals `E1EDS01` (010 net, 005 tax, 011 gross).
//! - [`acc_document03`]: `ACC_DOCUMENT03` / message `ACC_DOCUMENT` (BAPI_ACC_DOCUMENT_POST), the
//!   receivable posted into the provider's own SAP: header `E1BPACHE09`, revenue lines
//!   `E1BPACGL09` per VAT rate, the customer line `E1BPACAR09`, tax lines `E1BPACTX09`, amounts
//!   `E1BPACCR09` (+ debit / − credit; the document balances to zero).
//!
//! All fields are CHAR: dates `YYYYMMDD`, decimals with `.`, keys with leading zeros, no
//! namespace, `SEGMENT="1"` on every segment, empty fields omitted. Values longer than the
//! field are an error (naming segment and field), never silently cut, except free texts which
//! are cut to their length. The control record comes from `[sap]` in config.

use canonical::invoice::{cents, Invoice, InvoiceKind};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The control record and FI settings (from config `[sap]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SapSettings {
    /// Client (MANDT, 3).
    #[serde(default)]
    pub client: Option<String>,
    /// Sender port / partner type / partner number (SNDPOR 10, SNDPRT 2, SNDPRN 10).
    pub sender_port: String,
    #[serde(default = "ls")]
    pub sender_partner_type: String,
    pub sender_partner: String,
    /// Receiver port / partner type / partner number (RCVPOR 10, RCVPRT 2, RCVPRN 10).
    pub receiver_port: String,
    #[serde(default = "ls")]
    pub receiver_partner_type: String,
    pub receiver_partner: String,
    /// The provider's partner number as invoicing party (RS) in INVOIC02.
    #[serde(default)]
    pub own_partner_number: Option<String>,
    /// Payment terms key (ZTERM 17 / PMNTTRMS 4).
    #[serde(default)]
    pub payment_terms_key: Option<String>,
    /// ACC_DOCUMENT03: company code (4), document type (2, e.g. `DR`), user name (12).
    #[serde(default = "company_code")]
    pub company_code: String,
    #[serde(default = "dr")]
    pub document_type: String,
    #[serde(default = "username")]
    pub username: String,
    /// Revenue G/L account per VAT rate (`"19" = "8400"`), tax code per rate (`"19" = "A1"`).
    #[serde(default)]
    pub revenue_accounts: BTreeMap<String, String>,
    #[serde(default)]
    pub tax_codes: BTreeMap<String, String>,
}

fn ls() -> String {
    "LS".into()
}
fn company_code() -> String {
    "1000".into()
}
fn dr() -> String {
    "DR".into()
}
fn username() -> String {
    "DREHKREUZ".into()
}

/// Why an IDoc could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdocError {
    #[error("invoice {invoice}: {segment}-{field} takes at most {max} characters, got {value:?}")]
    TooLong {
        invoice: String,
        segment: &'static str,
        field: &'static str,
        max: usize,
        value: String,
    },
    #[error("invoice {invoice}: no {what} configured for VAT rate {rate} % (`[sap] {key}`)")]
    Missing {
        invoice: String,
        what: &'static str,
        key: &'static str,
        rate: String,
    },
    #[error("invoice {0} has no seller (master data `[seller]`)")]
    NoSeller(String),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect::<String>().trim_end().to_string()
}

fn amount(d: Decimal) -> String {
    let mut r = cents(d);
    r.rescale(2);
    r.to_string()
}

fn rate(d: Decimal, scale: u32) -> String {
    let mut r = d.normalize();
    r.rescale(scale);
    r.to_string()
}

/// A quantity with at least three decimals (`50.000`), never rounded: more decimals stay.
fn quantity(d: Decimal) -> String {
    let mut r = d.normalize();
    if r.scale() < 3 {
        r.rescale(3);
    }
    r.to_string()
}

/// MENGE, MENEE and PEINH of a line. Invoices stored before time was billed in minutes carry
/// hours as a 28-digit fraction (`0.8333…` HUR): those are written as the whole minutes they
/// are, priced per 60 × the base, so they fit MENGE and still multiply out.
fn item_quantity(l: &canonical::invoice::InvoiceLine) -> (Decimal, String, Decimal) {
    let base = l.base_quantity();
    if l.unit == "HUR" && l.quantity.normalize().scale() > 3 {
        let minutes = l.quantity * Decimal::from(60);
        let whole = minutes.round();
        if (minutes - whole).abs() < Decimal::new(1, 20) {
            return (whole, "MIN".into(), base * Decimal::from(60));
        }
    }
    (l.quantity, l.unit.clone(), base)
}

/// A price unit (PEINH): an integer as such (`60`).
fn quantity_plain(d: Decimal) -> String {
    d.normalize().to_string()
}

fn key(rate: Decimal) -> String {
    rate.normalize().to_string()
}

fn zeros(s: &str, n: usize) -> String {
    if s.chars().all(|c| c.is_ascii_digit()) && s.len() < n {
        format!("{s:0>n$}")
    } else {
        s.to_string()
    }
}

/// A segment under construction.
struct Idoc<'a> {
    out: String,
    invoice: &'a str,
    depth: usize,
    stack: Vec<&'static str>,
}

impl<'a> Idoc<'a> {
    fn new(root: &'static str, invoice: &'a str) -> Self {
        let mut s = Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            invoice,
            depth: 0,
            stack: Vec::new(),
        };
        s.out.push_str(&format!("<{root}>\n  <IDOC BEGIN=\"1\">\n"));
        s.depth = 2;
        s
    }
    fn open(&mut self, seg: &'static str) {
        self.out.push_str(&format!(
            "{}<{seg} SEGMENT=\"1\">\n",
            "  ".repeat(self.depth)
        ));
        self.stack.push(seg);
        self.depth += 1;
    }
    fn close(&mut self) {
        if let Some(seg) = self.stack.pop() {
            self.depth -= 1;
            self.out
                .push_str(&format!("{}</{seg}>\n", "  ".repeat(self.depth)));
        }
    }
    /// A field with a hard length limit.
    fn field(&mut self, name: &'static str, max: usize, value: &str) -> Result<(), IdocError> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(());
        }
        if v.chars().count() > max {
            return Err(IdocError::TooLong {
                invoice: self.invoice.to_string(),
                segment: self.stack.last().copied().unwrap_or("IDOC"),
                field: name,
                max,
                value: v.to_string(),
            });
        }
        self.out.push_str(&format!(
            "{}<{name}>{}</{name}>\n",
            "  ".repeat(self.depth),
            esc(v)
        ));
        Ok(())
    }
    /// A free-text field, cut to its length.
    fn text(&mut self, name: &'static str, max: usize, value: &str) -> Result<(), IdocError> {
        self.field(name, max, &cut(value, max))
    }
    fn finish(mut self, root: &'static str) -> String {
        while !self.stack.is_empty() {
            self.close();
        }
        self.out.push_str(&format!("  </IDOC>\n</{root}>\n"));
        self.out
    }
}

/// The IDoc number (DOCNUM, 16 digits) derived from the invoice number: stable, so a re-export
/// carries the same number (the receiver deduplicates; SAP renumbers on inbound anyway).
pub fn docnum(invoice_number: &str) -> String {
    // FNV-1a over the number, reduced to 16 decimal digits.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in invoice_number.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:016}", h % 10_000_000_000_000_000)
}

fn control(
    x: &mut Idoc<'_>,
    s: &SapSettings,
    idoctyp: &str,
    mestyp: &str,
    inv: &Invoice,
) -> Result<(), IdocError> {
    x.open("EDI_DC40");
    x.field("TABNAM", 10, "EDI_DC40")?;
    if let Some(m) = &s.client {
        x.field("MANDT", 3, m)?;
    }
    x.field("DOCNUM", 16, &docnum(&inv.number))?;
    x.field("DIRECT", 1, "2")?;
    x.field("IDOCTYP", 30, idoctyp)?;
    x.field("MESTYP", 30, mestyp)?;
    x.field("SNDPOR", 10, &s.sender_port)?;
    x.field("SNDPRT", 2, &s.sender_partner_type)?;
    x.field("SNDPRN", 10, &s.sender_partner)?;
    x.field("RCVPOR", 10, &s.receiver_port)?;
    x.field("RCVPRT", 2, &s.receiver_partner_type)?;
    x.field("RCVPRN", 10, &s.receiver_partner)?;
    x.field("CREDAT", 8, &inv.issue_date.format("%Y%m%d").to_string())?;
    x.field("CRETIM", 6, "120000")?;
    x.field("ARCKEY", 70, &format!("drehkreuz:{}", inv.number))?;
    x.close();
    Ok(())
}

/// `INVOIC02`: the invoice (or credit note, `BSART` `CRME`) for the customer's SAP. Amounts are
/// positive; a credit note says so by its document type.
pub fn invoic02(s: &SapSettings, inv: &Invoice) -> Result<String, IdocError> {
    let seller = inv
        .seller
        .as_ref()
        .ok_or_else(|| IdocError::NoSeller(inv.number.clone()))?;
    let sign = if inv.kind == InvoiceKind::CreditNote {
        Decimal::NEGATIVE_ONE
    } else {
        Decimal::ONE
    };
    let d = |date: chrono::NaiveDate| date.format("%Y%m%d").to_string();
    let mut x = Idoc::new("INVOIC02", &inv.number);
    control(&mut x, s, "INVOIC02", "INVOIC", inv)?;
    x.open("E1EDK01");
    x.field("CURCY", 3, &inv.currency)?;
    x.field("HWAER", 3, &inv.currency)?;
    x.field("WKURS", 12, "1.00000")?;
    if let Some(z) = &s.payment_terms_key {
        x.field("ZTERM", 17, z)?;
    }
    x.field("KUNDEUINR", 20, inv.buyer.vat_id.as_deref().unwrap_or(""))?;
    x.field("EIGENUINR", 20, &seller.vat_id)?;
    x.field(
        "BSART",
        4,
        if inv.kind == InvoiceKind::CreditNote {
            "CRME"
        } else {
            "INVO"
        },
    )?;
    x.field("BELNR", 35, &inv.number)?;
    x.close();
    // Partners: invoicing party (us), sold-to, bill-to, payer.
    x.open("E1EDKA1");
    x.field("PARVW", 3, "RS")?;
    x.field("PARTN", 17, s.own_partner_number.as_deref().unwrap_or(""))?;
    x.text("NAME1", 35, &seller.name)?;
    x.text("STRAS", 35, &seller.address.street)?;
    x.text("ORT01", 35, &seller.address.city)?;
    x.field("PSTLZ", 9, &seller.address.postcode)?;
    x.field("LAND1", 3, &seller.address.country)?;
    x.close();
    let partn = zeros(
        inv.buyer
            .debitor_number
            .trim_start_matches(|c: char| c.is_ascii_alphabetic()),
        10,
    );
    for parvw in ["AG", "RE", "RG"] {
        x.open("E1EDKA1");
        x.field("PARVW", 3, parvw)?;
        x.field("PARTN", 17, &partn)?;
        x.text("NAME1", 35, &inv.buyer.name)?;
        if parvw != "RG" {
            x.text("STRAS", 35, &inv.buyer.address.street)?;
            x.text("ORT01", 35, &inv.buyer.address.city)?;
            x.field("PSTLZ", 9, &inv.buyer.address.postcode)?;
            x.field("LAND1", 3, &inv.buyer.address.country)?;
        }
        if parvw == "AG" {
            x.text(
                "IHREZ",
                30,
                inv.buyer_reference
                    .as_deref()
                    .or(inv.buyer.buyer_reference.as_deref())
                    .unwrap_or(""),
            )?;
        }
        x.close();
    }
    x.open("E1EDK02");
    x.field("QUALF", 3, "009")?;
    x.field("BELNR", 35, &inv.number)?;
    x.field("DATUM", 8, &d(inv.issue_date))?;
    x.close();
    x.open("E1EDK02");
    x.field("QUALF", 3, "001")?;
    x.field("BELNR", 35, &inv.contract_id)?;
    x.close();
    if let Some(orig) = &inv.original_number {
        x.open("E1EDK02");
        x.field("QUALF", 3, "031")?;
        x.field("BELNR", 35, orig)?;
        x.close();
    }
    for (q, date) in [
        ("012", inv.issue_date),
        ("026", inv.issue_date),
        ("027", inv.period_end),
        ("028", inv.due_date),
    ] {
        x.open("E1EDK03");
        x.field("IDDAT", 3, q)?;
        x.field("DATUM", 8, &d(date))?;
        x.close();
    }
    for v in &inv.vat {
        x.open("E1EDK04");
        x.field("MWSKZ", 7, "VAT")?;
        x.field("MSATZ", 17, &rate(v.rate, 2))?;
        x.field("MWSBT", 18, &amount(v.amount * sign))?;
        x.close();
    }
    x.open("E1EDK18");
    x.field("QUALF", 3, "001")?;
    x.field(
        "TAGE",
        8,
        &(inv.due_date - inv.issue_date).num_days().to_string(),
    )?;
    x.field("PRZNT", 8, "0.000")?;
    x.text("ZTERM_TXT", 70, &inv.payment_terms)?;
    x.close();
    for (i, l) in inv.lines.iter().enumerate() {
        x.open("E1EDP01");
        x.field("POSEX", 6, &format!("{:06}", (i + 1) * 10))?;
        // Time is in whole minutes (MENEE MIN) with the price per 60 (PEINH), so
        // MENGE × VPREI ÷ PEINH = NETWR to the cent; MENGE keeps every decimal it has.
        let (menge, menee, peinh) = item_quantity(l);
        x.field("MENGE", 15, &quantity(menge * sign))?;
        x.field("MENEE", 3, &menee)?;
        x.field("VPREI", 15, &amount(l.unit_price))?;
        x.field("PEINH", 9, &quantity_plain(peinh))?;
        x.field("NETWR", 18, &amount(l.net * sign))?;
        x.field("CURCY", 3, &inv.currency)?;
        x.open("E1EDP19");
        x.field("QUALF", 3, "002")?;
        x.text("IDTNR", 35, &l.key)?;
        x.text("KTEXT", 70, &l.description)?;
        x.close();
        x.open("E1EDP26");
        x.field("QUALF", 3, "003")?;
        x.field("BETRG", 18, &amount(l.net * sign))?;
        x.close();
        x.open("E1EDP04");
        x.field("MWSKZ", 7, "VAT")?;
        x.field("MSATZ", 17, &rate(l.vat_rate, 2))?;
        x.close();
        if l.description.chars().count() > 70 {
            x.open("E1EDPT1");
            x.field("TDID", 4, "0001")?;
            x.field("TSSPRAS_ISO", 2, "DE")?;
            let chars: Vec<char> = l.description.chars().collect();
            for chunk in chars.chunks(70) {
                x.open("E1EDPT2");
                x.field("TDLINE", 70, &chunk.iter().collect::<String>())?;
                x.field("TDFORMAT", 2, "*")?;
                x.close();
            }
            x.close();
        }
        x.close();
    }
    for (id, v) in [
        ("010", inv.totals.net),
        ("005", inv.totals.vat),
        ("011", inv.totals.gross),
    ] {
        x.open("E1EDS01");
        x.field("SUMID", 3, id)?;
        x.field("SUMME", 18, &amount(v * sign))?;
        x.field("WAERQ", 3, &inv.currency)?;
        x.close();
    }
    x.open("E1EDS01");
    x.field("SUMID", 3, "001")?;
    x.field("SUMME", 18, &inv.lines.len().to_string())?;
    x.close();
    Ok(x.finish("INVOIC02"))
}

/// `ACC_DOCUMENT03`: the receivable posting (customer debit, revenue and output tax credits;
/// reversed for a credit note). Balances to zero.
pub fn acc_document03(s: &SapSettings, inv: &Invoice) -> Result<String, IdocError> {
    let d = |date: chrono::NaiveDate| date.format("%Y%m%d").to_string();
    let mut x = Idoc::new("ACC_DOCUMENT03", &inv.number);
    control(&mut x, s, "ACC_DOCUMENT03", "ACC_DOCUMENT", inv)?;
    let missing = |what, key, r: Decimal| IdocError::Missing {
        invoice: inv.number.clone(),
        what,
        key,
        rate: key_str(r),
    };
    fn key_str(r: Decimal) -> String {
        key(r)
    }
    x.open("E1BPACHE09");
    x.field("BUS_ACT", 4, "RFBU")?;
    x.field("USERNAME", 12, &s.username)?;
    x.text("HEADER_TXT", 25, &format!("drehkreuz {}", inv.number))?;
    x.field("COMP_CODE", 4, &s.company_code)?;
    x.field("DOC_DATE", 8, &d(inv.issue_date))?;
    x.field("PSTNG_DATE", 8, &d(inv.issue_date))?;
    x.field("DOC_TYPE", 2, &s.document_type)?;
    x.field("REF_DOC_NO", 16, &inv.number)?;
    x.close();
    // Item numbers: 1 = customer, then one revenue line per rate, then one tax line per rate.
    let n = inv.vat.len();
    for (i, v) in inv.vat.iter().enumerate() {
        let gl = s
            .revenue_accounts
            .get(&key(v.rate))
            .ok_or_else(|| missing("revenue account", "revenue_accounts", v.rate))?;
        let tc = s
            .tax_codes
            .get(&key(v.rate))
            .ok_or_else(|| missing("tax code", "tax_codes", v.rate))?;
        x.open("E1BPACGL09");
        x.field("ITEMNO_ACC", 10, &format!("{:010}", i + 2))?;
        x.field("GL_ACCOUNT", 10, &zeros(gl, 10))?;
        x.text(
            "ITEM_TEXT",
            50,
            &format!("Erlöse {} % {}", key(v.rate), inv.number),
        )?;
        x.field("TAX_CODE", 2, tc)?;
        x.close();
    }
    x.open("E1BPACAR09");
    x.field("ITEMNO_ACC", 10, &format!("{:010}", 1))?;
    x.field(
        "CUSTOMER",
        10,
        &zeros(&inv.buyer.datev_account.to_string(), 10),
    )?;
    x.field("BLINE_DATE", 8, &d(inv.issue_date))?;
    if let Some(z) = &s.payment_terms_key {
        x.field("PMNTTRMS", 4, z)?;
    }
    x.field("ALLOC_NMBR", 18, &inv.number)?;
    x.text(
        "ITEM_TEXT",
        50,
        &format!(
            "{} {}",
            if inv.kind == InvoiceKind::CreditNote {
                "Gutschrift"
            } else {
                "Rechnung"
            },
            inv.number
        ),
    )?;
    x.close();
    for (i, v) in inv.vat.iter().enumerate() {
        let tc = s
            .tax_codes
            .get(&key(v.rate))
            .ok_or_else(|| missing("tax code", "tax_codes", v.rate))?;
        x.open("E1BPACTX09");
        x.field("ITEMNO_ACC", 10, &format!("{:010}", i + 2 + n))?;
        x.field("TAX_CODE", 2, tc)?;
        x.field("ACCT_KEY", 3, "MWS")?;
        x.field("COND_KEY", 4, "MWAS")?;
        x.field("TAX_RATE", 8, &rate(v.rate, 3))?;
        x.close();
    }
    let cur = |x: &mut Idoc<'_>,
               item: usize,
               amt: Decimal,
               base: Option<Decimal>|
     -> Result<(), IdocError> {
        x.open("E1BPACCR09");
        x.field("ITEMNO_ACC", 10, &format!("{item:010}"))?;
        x.field("CURR_TYPE", 2, "00")?;
        x.field("CURRENCY", 5, &inv.currency)?;
        x.field("AMT_DOCCUR", 23, &amount(amt))?;
        if let Some(b) = base {
            x.field("AMT_BASE", 23, &amount(b))?;
        }
        x.close();
        Ok(())
    };
    // Canonical credit notes carry negative amounts already: the signs follow.
    cur(&mut x, 1, inv.totals.gross, None)?;
    for (i, v) in inv.vat.iter().enumerate() {
        cur(&mut x, i + 2, -v.base, None)?;
    }
    for (i, v) in inv.vat.iter().enumerate() {
        cur(&mut x, i + 2 + n, -v.amount, Some(-v.base))?;
    }
    Ok(x.finish("ACC_DOCUMENT03"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_hour_fractions_become_minutes_per_sixty() {
        let mut l = canonical::invoice::InvoiceLine::minutes(
            "k".into(),
            "d".into(),
            50,
            Decimal::new(70, 0),
            "S".into(),
            Decimal::new(19, 0),
        );
        assert_eq!(
            item_quantity(&l),
            (Decimal::from(50), "MIN".to_string(), Decimal::from(60))
        );
        // As stored before: 50/60 h with 28 digits, base 1.
        l.quantity = Decimal::from(50) / Decimal::from(60);
        l.unit = "HUR".into();
        l.price_base_quantity = None;
        let (q, u, b) = item_quantity(&l);
        assert_eq!(
            (q, u.as_str(), b),
            (Decimal::from(50), "MIN", Decimal::from(60))
        );
        assert_eq!(cents(q * l.unit_price / b), l.net);
        // A short hour fraction stays as it is.
        l.quantity = Decimal::new(125, 2);
        assert_eq!(item_quantity(&l).1, "HUR");
    }
}
