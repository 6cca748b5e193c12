//! Export of finalized invoices: accounting formats and e-invoices, by hand
//! (`drehkreuz export FORMAT`) and by the consumers of `invoice.finalized` ([`sink`]).
//!
//! Writers are the pure mapping crates (`mappings/datev`, `mappings/sap`, `mappings/einvoice`);
//! this module knows the [`ExportFormat`]s, applies the settings from config ([`ExportSettings`])
//! and turns an invoice into named files ([`render`]). Delivery ([`delivery`]) drops them into a
//! directory atomically (temp file + rename, `MANIFEST.sha256`) or POSTs them to an HTTP
//! endpoint with retries.

pub mod delivery;
pub mod preflight;
pub mod sink;

#[cfg(test)]
mod quantity_tests;
#[cfg(test)]
#[path = "../../tests/fixtures/invoices.rs"]
mod test_fixtures;

pub use preflight::{preflight, preflight_target, Blocker};
pub use sink::ExportSink;

use crate::config::Config;
use crate::store::Db;
use canonical::invoice::Invoice;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The `[datev]` settings as the writer needs them.
pub fn datev_settings(cfg: &Config) -> anyhow::Result<datev::ExtfSettings> {
    let d = cfg
        .datev
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("`[datev]` is not configured (consultant_number, client_number, …; see docs/configuration.md)"))?;
    let (m, day) = d
        .fiscal_year_start
        .split_once('-')
        .and_then(|(m, dd)| Some((m.parse::<u32>().ok()?, dd.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`datev.fiscal_year_start`: expected MM-DD, got {:?}",
                d.fiscal_year_start
            )
        })?;
    Ok(datev::ExtfSettings {
        consultant_number: d.consultant_number,
        client_number: d.client_number,
        fiscal_year_start: chrono::NaiveDate::from_ymd_opt(2000, m, day)
            .ok_or_else(|| anyhow::anyhow!("`datev.fiscal_year_start`: not a date"))?,
        account_length: d.account_length,
        chart: d.chart,
        exported_by: "drehkreuz".into(),
    })
}

/// The invoices of a finalized run.
pub async fn run_invoices(db: &Db, run_id: &str) -> anyhow::Result<Vec<Invoice>> {
    let run = crate::billing::run::load(db, run_id).await?;
    let mut out = Vec::new();
    for t in &run.targets {
        if let Some(n) = &t.invoice_number {
            if let Some(inv) = crate::billing::run::invoice(db, n).await? {
                out.push(inv);
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("run {run_id} has no finalized invoices");
    }
    Ok(out)
}

/// Writes `bytes` to `dir/name` atomically.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

/// The EXTF Buchungsstapel (a file per calendar month of issue dates, inside its fiscal year)
/// and the Debitoren of those months, in memory. `created` goes into the file headers (pass a
/// value derived from the invoices for byte-identical re-exports).
pub fn datev_extf_files(
    s: &datev::ExtfSettings,
    invoices: &[Invoice],
    created: chrono::NaiveDateTime,
) -> anyhow::Result<Vec<ExportFile>> {
    use chrono::Datelike;
    let mut by_month: std::collections::BTreeMap<(i32, u32), Vec<Invoice>> = Default::default();
    for inv in invoices {
        by_month
            .entry((inv.issue_date.year(), inv.issue_date.month()))
            .or_default()
            .push(inv.clone());
    }
    let mut files = Vec::new();
    for ((y, m), invs) in by_month {
        let from =
            chrono::NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(|| anyhow::anyhow!("bad month"))?;
        let to = canonical::work::Period { year: y, month: m }.last_day();
        let mut settings = s.clone();
        // The fiscal year containing this month.
        let fy = if (m, 1) >= (s.fiscal_year_start.month(), s.fiscal_year_start.day()) {
            y
        } else {
            y - 1
        };
        settings.fiscal_year_start = chrono::NaiveDate::from_ymd_opt(
            fy,
            s.fiscal_year_start.month(),
            s.fiscal_year_start.day(),
        )
        .ok_or_else(|| anyhow::anyhow!("bad fiscal year start"))?;
        files.push(ExportFile {
            name: format!("EXTF_Buchungsstapel_{y:04}-{m:02}.csv"),
            bytes: datev::buchungsstapel(&settings, &invs, from, to, created)?,
            content_type: "text/csv; charset=windows-1252",
        });
        let mut customers: Vec<_> = invs.iter().map(|i| i.buyer.clone()).collect();
        customers.sort_by_key(|c| c.datev_account);
        customers.dedup_by_key(|c| c.datev_account);
        files.push(ExportFile {
            name: format!("EXTF_Debitoren_{y:04}-{m:02}.csv"),
            bytes: datev::debitoren(&settings, &customers, created)?,
            content_type: "text/csv; charset=windows-1252",
        });
    }
    Ok(files)
}

/// Writes files into `dir` atomically and merges them into its `MANIFEST.sha256`.
pub fn write_files(dir: &Path, files: &[ExportFile]) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut manifest = String::new();
    for f in files {
        written.push(write_atomic(dir, &f.name, &f.bytes)?);
        manifest.push_str(&format!(
            "{}  {}\n",
            hex::encode(Sha256::digest(&f.bytes)),
            f.name
        ));
    }
    written.push(write_atomic(
        dir,
        "MANIFEST.sha256",
        &merge_manifest(dir, &manifest)?,
    )?);
    Ok(written)
}

/// Writes the EXTF files of `invoices` into `dir` (see [`datev_extf_files`]).
pub fn write_datev_extf(
    s: &datev::ExtfSettings,
    invoices: &[Invoice],
    dir: &Path,
    created: chrono::NaiveDateTime,
) -> anyhow::Result<Vec<PathBuf>> {
    Ok(write_files(dir, &datev_extf_files(s, invoices, created)?)?)
}

/// Merges new manifest lines into the directory's manifest (one line per file, sorted).
pub(crate) fn merge_manifest(dir: &Path, new: &str) -> std::io::Result<Vec<u8>> {
    let mut lines: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    if let Ok(old) = std::fs::read_to_string(dir.join("MANIFEST.sha256")) {
        for l in old.lines() {
            if let Some((h, f)) = l.split_once("  ") {
                lines.insert(f.to_string(), h.to_string());
            }
        }
    }
    for l in new.lines() {
        if let Some((h, f)) = l.split_once("  ") {
            lines.insert(f.to_string(), h.to_string());
        }
    }
    Ok(lines
        .into_iter()
        .map(|(f, h)| format!("{h}  {f}\n"))
        .collect::<String>()
        .into_bytes())
}

/// The export formats, by their names in config and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    /// DATEV EXTF Buchungsstapel + Debitoren (one file per month; needs `[datev]`).
    DatevExtf,
    /// DATEV XML-Schnittstelle online: a ZIP per invoice (needs `[datev]`).
    DatevXml,
    /// SAP IDoc INVOIC02 for the customer's SAP (needs `[sap]`).
    SapInvoic02,
    /// SAP IDoc ACC_DOCUMENT03 for the provider's own SAP (needs `[sap]`).
    SapAccDocument,
    /// XRechnung 3.0, UBL.
    XrechnungUbl,
    /// XRechnung 3.0, CII.
    XrechnungCii,
    /// ZUGFeRD 2.3 XML (profile from the target, default EN16931).
    Zugferd,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 7] = [
        ExportFormat::DatevExtf,
        ExportFormat::DatevXml,
        ExportFormat::SapInvoic02,
        ExportFormat::SapAccDocument,
        ExportFormat::XrechnungUbl,
        ExportFormat::XrechnungCii,
        ExportFormat::Zugferd,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::DatevExtf => "datev-extf",
            ExportFormat::DatevXml => "datev-xml",
            ExportFormat::SapInvoic02 => "sap-invoic02",
            ExportFormat::SapAccDocument => "sap-acc-document",
            ExportFormat::XrechnungUbl => "xrechnung-ubl",
            ExportFormat::XrechnungCii => "xrechnung-cii",
            ExportFormat::Zugferd => "zugferd",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ExportFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown export format {s:?} (available: {})",
                    ExportFormat::ALL.map(|f| f.name()).join(", ")
                )
            })
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the writers need from config.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub datev: Option<datev::ExtfSettings>,
    pub sap: Option<sap::SapSettings>,
    /// The ZUGFeRD profile (`ZugferdEn16931` or `ZugferdXrechnung`).
    pub zugferd: einvoice::Format,
}

impl ExportSettings {
    pub fn from_config(cfg: &Config, zugferd_profile: &str) -> Self {
        Self {
            datev: datev_settings(cfg).ok(),
            sap: cfg.sap.clone(),
            zugferd: if zugferd_profile == "xrechnung" {
                einvoice::Format::ZugferdXrechnung
            } else {
                einvoice::Format::ZugferdEn16931
            },
        }
    }
}

/// One file to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Why an invoice was not exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The e-invoice checks failed: the invoice is not exported; the rule ids say why.
    #[error("invoice {invoice} not exported: {detail}")]
    Rules {
        invoice: String,
        rules: Vec<String>,
        detail: String,
    },
    #[error("{0}")]
    Settings(String),
    #[error("invoice {invoice}: {reason}")]
    Writer { invoice: String, reason: String },
}

/// A file name part from an invoice number.
pub fn file_stem(number: &str) -> String {
    number
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn e_invoice(inv: &Invoice, format: einvoice::Format) -> Result<String, ExportError> {
    einvoice::write(inv, format).map_err(|e| ExportError::Rules {
        invoice: inv.number.clone(),
        rules: e.rule_ids().into_iter().map(str::to_string).collect(),
        detail: e.to_string(),
    })
}

/// Renders one invoice in a per-invoice format (everything but `datev-extf`).
pub fn render(
    format: ExportFormat,
    inv: &Invoice,
    s: &ExportSettings,
) -> Result<ExportFile, ExportError> {
    let stem = file_stem(&inv.number);
    let writer = |e: &dyn std::fmt::Display| ExportError::Writer {
        invoice: inv.number.clone(),
        reason: e.to_string(),
    };
    Ok(match format {
        ExportFormat::XrechnungUbl => ExportFile {
            name: format!("{stem}_xrechnung-ubl.xml"),
            bytes: e_invoice(inv, einvoice::Format::XrechnungUbl)?.into_bytes(),
            content_type: "application/xml",
        },
        ExportFormat::XrechnungCii => ExportFile {
            name: format!("{stem}_xrechnung-cii.xml"),
            bytes: e_invoice(inv, einvoice::Format::XrechnungCii)?.into_bytes(),
            content_type: "application/xml",
        },
        ExportFormat::Zugferd => ExportFile {
            name: format!("{stem}_zugferd.xml"),
            bytes: e_invoice(inv, s.zugferd)?.into_bytes(),
            content_type: "application/xml",
        },
        ExportFormat::DatevXml => {
            let d = s.datev.as_ref().ok_or_else(|| {
                ExportError::Settings("datev-xml needs the `[datev]` section".into())
            })?;
            // A booking format: the XRechnung goes into the package when it passes its
            // checks; otherwise the package carries the ledger only (the e-invoice failure is
            // the e-invoice format's, never the booking's).
            let receipts: Vec<(String, Vec<u8>)> =
                match einvoice::write(inv, einvoice::Format::XrechnungUbl) {
                    Ok(xr) => vec![(format!("{stem}_xrechnung.xml"), xr.into_bytes())],
                    Err(_) => Vec::new(),
                };
            let zip = datev::xml::package(d, inv, &receipts).map_err(|e| writer(&e))?;
            ExportFile {
                name: format!("{stem}_datev.zip"),
                bytes: zip,
                content_type: "application/zip",
            }
        }
        ExportFormat::SapInvoic02 | ExportFormat::SapAccDocument => {
            let sp = s.sap.as_ref().ok_or_else(|| {
                ExportError::Settings(format!("{format} needs the `[sap]` section"))
            })?;
            let (name, xml) = if format == ExportFormat::SapInvoic02 {
                ("INVOIC02", sap::invoic02(sp, inv))
            } else {
                ("ACC_DOCUMENT03", sap::acc_document03(sp, inv))
            };
            ExportFile {
                name: format!("{stem}_{name}.xml"),
                bytes: xml.map_err(|e| writer(&e))?.into_bytes(),
                content_type: "application/xml",
            }
        }
        ExportFormat::DatevExtf => {
            return Err(ExportError::Settings(
                "datev-extf is written per month, not per invoice".into(),
            ))
        }
    })
}
