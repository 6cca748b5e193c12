//! DATEV XML-Schnittstelle online (Rechnungsdatenservice 1.0 / Belegtransfer): one ZIP per
//! invoice with `document.xml` v6.0 (the package index), the ledger file v6.0 (`LedgerImport`,
//! one `accountsReceivableLedger` per VAT rate and revenue account, gross amounts, negative for
//! credit notes) and the invoice document itself (the e-invoice XML; a PDF once PDFs exist).
//!
//! Flat ZIP (no folders), fixed entry times derived from the invoice, so a re-export is
//! byte-identical.

use crate::extf::{ExtfError, ExtfSettings};
use canonical::invoice::{Invoice, InvoiceKind};
use std::io::Write;

const LEDGER_NS: &str = "http://xml.datev.de/bedi/tps/ledger/v060";
const DOCUMENT_NS: &str = "http://xml.datev.de/bedi/tps/document/v06.0";
const XML_DATA: &str = "Kopie nur zur Verbuchung berechtigt nicht zum Vorsteuerabzug";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect::<String>().trim().to_string()
}

fn money(d: rust_decimal::Decimal) -> String {
    let mut r = canonical::invoice::cents(d);
    r.rescale(2);
    r.to_string()
}

/// The DATEV id of an invoice (`[A-Za-z0-9$%&*+-/]{1,36}`): other characters are dropped.
pub fn invoice_id(number: &str) -> String {
    number
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "$%&*+-/".contains(*c))
        .take(36)
        .collect()
}

/// The ledger file (`LedgerImport` v6.0) of one invoice or credit note.
pub fn ledger(s: &ExtfSettings, inv: &Invoice) -> Result<String, ExtfError> {
    let id = invoice_id(&inv.number);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<LedgerImport xmlns=\"{LEDGER_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"{LEDGER_NS} Belegverwaltung_online_ledger_import_v060.xsd\" version=\"6.0\" \
         generator_info=\"{}\" generating_system=\"drehkreuz\" xml_data=\"{XML_DATA}\">\n",
        esc(&cut(inv.seller.as_ref().map(|x| x.name.as_str()).unwrap_or("drehkreuz"), 40))
    ));
    x.push_str(&format!(
        "  <consolidate consolidatedAmount=\"{}\" consolidatedDate=\"{}\" consolidatedInvoiceId=\"{id}\" \
         consolidatedCurrencyCode=\"{}\" consolidatedDeliveryDate=\"{}\">\n",
        money(inv.totals.gross),
        inv.issue_date,
        esc(&inv.currency),
        inv.period_end
    ));
    let what = match inv.kind {
        InvoiceKind::Invoice => "Rechnung",
        InvoiceKind::CreditNote => "Gutschrift",
    };
    for v in &inv.vat {
        let account = s
            .chart
            .revenue_account(&v.category, v.rate)
            .ok_or_else(|| ExtfError::NoRevenueAccount {
                invoice: inv.number.clone(),
                category: v.category.clone(),
                rate: v.rate.to_string(),
                chart: s.chart,
            })?;
        let gross = v.base + v.amount;
        if gross.is_zero() {
            continue;
        }
        let mut rate = v.rate.normalize();
        rate.rescale(2);
        x.push_str("    <accountsReceivableLedger>\n");
        x.push_str(&format!("      <date>{}</date>\n", inv.issue_date));
        x.push_str(&format!("      <amount>{}</amount>\n", money(gross)));
        x.push_str(&format!("      <accountNo>{account}</accountNo>\n"));
        x.push_str(&format!("      <tax>{rate}</tax>\n"));
        x.push_str(&format!(
            "      <currencyCode>{}</currencyCode>\n",
            esc(&inv.currency)
        ));
        x.push_str(&format!("      <invoiceId>{id}</invoiceId>\n"));
        x.push_str(&format!(
            "      <bookingText>{}</bookingText>\n",
            esc(&cut(
                &format!("{what} {} {}", inv.number, inv.buyer.name),
                60
            ))
        ));
        x.push_str(&format!(
            "      <partyId>{}</partyId>\n",
            esc(&cut(&inv.buyer.debitor_number, 15))
        ));
        if let Some(v) = inv.buyer.vat_id.as_deref().filter(|v| !v.trim().is_empty()) {
            x.push_str(&format!("      <vatId>{}</vatId>\n", esc(&cut(v, 15))));
        }
        x.push_str(&format!("      <dueDate>{}</dueDate>\n", inv.due_date));
        x.push_str(&format!(
            "      <bpAccountNo>{}</bpAccountNo>\n",
            inv.buyer.datev_account
        ));
        x.push_str(&format!(
            "      <deliveryDate>{}</deliveryDate>\n",
            inv.period_end
        ));
        x.push_str(&format!(
            "      <customerName>{}</customerName>\n",
            esc(&cut(&inv.buyer.name, 50))
        ));
        x.push_str(&format!(
            "      <customerCity>{}</customerCity>\n",
            esc(&cut(&inv.buyer.address.city, 30))
        ));
        x.push_str("    </accountsReceivableLedger>\n");
    }
    x.push_str("  </consolidate>\n</LedgerImport>\n");
    if inv.buyer.datev_account < 10_000 {
        return Err(ExtfError::Invalid {
            invoice: inv.number.clone(),
            field: "buyer.datev_account".into(),
            reason: "bpAccountNo must be a Personenkonto ≥ 10000".into(),
        });
    }
    Ok(x)
}

/// `document.xml` v6.0 listing one ledger file and its receipt file(s) per invoice.
pub fn document(
    entries: &[(String, String, Vec<String>)],
    created: chrono::NaiveDateTime,
) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<archive xmlns=\"{DOCUMENT_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"{DOCUMENT_NS} Document_v060.xsd\" version=\"6.0\" generatingSystem=\"drehkreuz\">\n"
    ));
    x.push_str(&format!(
        "  <header>\n    <date>{}</date>\n  </header>\n  <content>\n",
        created.format("%Y-%m-%dT%H:%M:%S")
    ));
    for (ledger_file, period, files) in entries {
        x.push_str("    <document>\n");
        x.push_str(&format!(
            "      <extension xsi:type=\"accountsReceivableLedger\" datafile=\"{}\">\n        <property key=\"1\" value=\"{period}\"/>\n        <property key=\"3\" value=\"Ausgangsrechnungen\"/>\n      </extension>\n",
            esc(ledger_file)
        ));
        for f in files {
            x.push_str(&format!(
                "      <extension xsi:type=\"File\" name=\"{}\"/>\n",
                esc(f)
            ));
        }
        x.push_str("    </document>\n");
    }
    x.push_str("  </content>\n</archive>\n");
    x
}

/// The ZIP package of one invoice: `document.xml`, the ledger file and the receipt documents
/// (`(file name, bytes)`, e.g. the XRechnung XML).
pub fn package(
    s: &ExtfSettings,
    inv: &Invoice,
    receipts: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, ExtfError> {
    let id = invoice_id(&inv.number);
    let ledger_file = format!("{id}.xml").replace('/', "-");
    let ledger_xml = ledger(s, inv)?;
    let created = inv.issue_date.and_hms_opt(12, 0, 0).unwrap_or_default();
    let period = inv.issue_date.format("%Y-%m").to_string();
    let doc = document(
        &[(
            ledger_file.clone(),
            period,
            receipts.iter().map(|(n, _)| n.clone()).collect(),
        )],
        created,
    );
    let io = |e: std::io::Error| ExtfError::Invalid {
        invoice: inv.number.clone(),
        field: "zip".into(),
        reason: e.to_string(),
    };
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let time = zip::DateTime::from_date_and_time(
            created
                .date()
                .format("%Y")
                .to_string()
                .parse()
                .unwrap_or(2026),
            created.date().format("%m").to_string().parse().unwrap_or(1),
            created.date().format("%d").to_string().parse().unwrap_or(1),
            12,
            0,
            0,
        )
        .unwrap_or_default();
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(time)
            .unix_permissions(0o644);
        let mut add = |name: &str, bytes: &[u8]| -> Result<(), ExtfError> {
            zip.start_file(name, opts)
                .map_err(|e| io(std::io::Error::other(e)))?;
            zip.write_all(bytes).map_err(io)
        };
        add("document.xml", doc.as_bytes())?;
        add(&ledger_file, ledger_xml.as_bytes())?;
        for (n, b) in receipts {
            add(n, b)?;
        }
        zip.finish().map_err(|e| io(std::io::Error::other(e)))?;
    }
    Ok(buf.into_inner())
}
