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

/// Writes the EXTF Buchungsstapel (one per fiscal year of the invoices' issue dates; a file is
/// one calendar month of issue dates) and the Debitoren into `dir`, plus `MANIFEST.sha256`.
pub fn write_datev_extf(
    s: &datev::ExtfSettings,
    invoices: &[Invoice],
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    use chrono::Datelike;
    let mut by_month: std::collections::BTreeMap<(i32, u32), Vec<Invoice>> = Default::default();
    for inv in invoices {
        by_month
            .entry((inv.issue_date.year(), inv.issue_date.month()))
            .or_default()
            .push(inv.clone());
    }
    let created = chrono::Utc::now().naive_utc();
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
    files.push(write_atomic(dir, "MANIFEST.sha256", manifest.as_bytes())?);
    Ok(files)
}
