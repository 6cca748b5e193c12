//! Export of finalized invoices to files for accounting (manual and, later, by consumers of
//! `invoice.finalized`). Writers are the pure mapping crates (`mappings/datev`); this module
//! picks the invoices, applies the settings from config, and writes files atomically
//! (temp file + rename) with a `MANIFEST.sha256`.

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

/// Writes the EXTF Buchungsstapel (a file per calendar month of issue dates, inside its fiscal
/// year) and the Debitoren into `dir`, and updates `MANIFEST.sha256`. `created` goes into the
/// file headers (pass a value derived from the invoices for byte-identical re-exports).
pub fn write_datev_extf(
    s: &datev::ExtfSettings,
    invoices: &[Invoice],
    dir: &Path,
    created: chrono::NaiveDateTime,
) -> anyhow::Result<Vec<PathBuf>> {
    use chrono::Datelike;
    let mut by_month: std::collections::BTreeMap<(i32, u32), Vec<Invoice>> = Default::default();
    for inv in invoices {
        by_month
            .entry((inv.issue_date.year(), inv.issue_date.month()))
            .or_default()
            .push(inv.clone());
    }
    let mut files = Vec::new();
    let mut manifest = String::new();
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
        let bytes = datev::buchungsstapel(&settings, &invs, from, to, created)?;
        let name = format!("EXTF_Buchungsstapel_{y:04}-{m:02}.csv");
        files.push(write_atomic(dir, &name, &bytes)?);
        manifest.push_str(&format!(
            "{}  {name}\n",
            hex::encode(Sha256::digest(&bytes))
        ));
        let mut customers: Vec<_> = invs.iter().map(|i| i.buyer.clone()).collect();
        customers.sort_by_key(|c| c.datev_account);
        let deb = datev::debitoren(&settings, &customers, created)?;
        let dname = format!("EXTF_Debitoren_{y:04}-{m:02}.csv");
        files.push(write_atomic(dir, &dname, &deb)?);
        manifest.push_str(&format!("{}  {dname}\n", hex::encode(Sha256::digest(&deb))));
    }
    files.push(write_atomic(
        dir,
        "MANIFEST.sha256",
        &merge_manifest(dir, &manifest)?,
    )?);
    Ok(files)
}

/// The consumer that delivers finalized invoices to one export target (`export-<name>`).
///
/// For `datev-extf` it records the invoice in the export ledger and rewrites the target's
/// Buchungsstapel file of the invoice's month from every invoice recorded for that month —
/// deterministically (sorted by number; the header's creation time is the newest invoice's
/// issue day), so a re-export is byte-identical — plus the Debitoren file and
/// `MANIFEST.sha256`. A redelivered event is recognised by the ledger and the inbox.
pub struct ExportSink {
    pub db: Db,
    pub target: crate::config::ExportTarget,
    pub datev: Option<datev::ExtfSettings>,
}

#[async_trait::async_trait]
impl crate::bus::Handler for ExportSink {
    async fn handle(
        &self,
        ev: &canonical::Envelope,
        tx: &mut crate::store::Tx<'_>,
    ) -> Result<(), crate::bus::HandlerError> {
        use crate::bus::HandlerError;
        use chrono::Datelike;
        let inv: Invoice = ev
            .decode()
            .map_err(|e| HandlerError::Permanent(format!("invoice.finalized {}: {e}", ev.id)))?;
        for format in &self.target.formats {
            let Some(settings) = &self.datev else {
                return Err(HandlerError::Permanent(
                    "datev-extf export without [datev] settings".into(),
                ));
            };
            let month = format!("{:04}-{:02}", inv.issue_date.year(), inv.issue_date.month());
            let known: Option<String> = sqlx::query_scalar(
                "SELECT file FROM export_ledger WHERE target = $1 AND format = $2 AND invoice_number = $3",
            )
            .bind(&self.target.name)
            .bind(format)
            .bind(&inv.number)
            .fetch_optional(&mut **tx)
            .await?;
            if known.is_some() {
                continue;
            }
            let mut numbers: Vec<String> = sqlx::query_scalar(
                "SELECT invoice_number FROM export_ledger WHERE target = $1 AND format = $2 AND period = $3",
            )
            .bind(&self.target.name)
            .bind(format)
            .bind(&month)
            .fetch_all(&mut **tx)
            .await?;
            numbers.push(inv.number.clone());
            numbers.sort();
            let mut invoices = Vec::with_capacity(numbers.len());
            for n in &numbers {
                if *n == inv.number {
                    invoices.push(inv.clone());
                    continue;
                }
                let doc: Option<String> =
                    sqlx::query_scalar("SELECT document FROM invoices WHERE number = $1")
                        .bind(n)
                        .fetch_optional(&mut **tx)
                        .await?;
                if let Some(d) = doc {
                    invoices.push(
                        serde_json::from_str(&d)
                            .map_err(|e| HandlerError::Permanent(format!("invoice {n}: {e}")))?,
                    );
                }
            }
            let dir = self.target.dir.clone();
            let files = write_datev_extf(settings, &invoices, &dir, deterministic_time(&invoices))
                .map_err(|e| HandlerError::Permanent(format!("invoice {}: {e:#}", inv.number)))?;
            let file = files
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            let sha = std::fs::read(&file)
                .map(|b| hex::encode(Sha256::digest(&b)))
                .map_err(|e| HandlerError::Transient(format!("reading back {file}: {e}")))?;
            sqlx::query(
                "INSERT INTO export_ledger (target, format, invoice_number, period, file, sha256, exported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&self.target.name)
            .bind(format)
            .bind(&inv.number)
            .bind(&month)
            .bind(&file)
            .bind(sha)
            .bind(crate::store::now_ms())
            .execute(&mut **tx)
            .await?;
            crate::store::audit::record(
                tx,
                &crate::store::audit::AuditRecord {
                    actor: &format!("consumer:export-{}", self.target.name),
                    action: "export.datev_extf",
                    object: &format!("invoice:{}", inv.number),
                    before: None,
                    after: Some(serde_json::json!({ "file": file, "target": self.target.name })),
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// The file header's creation time derived from the invoices (latest issue day, midday).
fn deterministic_time(invoices: &[Invoice]) -> chrono::NaiveDateTime {
    invoices
        .iter()
        .map(|i| i.issue_date)
        .max()
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .unwrap_or_default()
}

/// Merges new manifest lines into the directory's manifest (one line per file, sorted).
fn merge_manifest(dir: &Path, new: &str) -> std::io::Result<Vec<u8>> {
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
