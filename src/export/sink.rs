//! The consumer that delivers finalized invoices to one export target (`export-<name>`).
//!
//! The `invoice.finalized` event only names the invoice (`data.number`); what is exported is
//! the invoice as the store holds it. An event for an invoice the store does not have (e.g. one
//! forged onto the bus) exports nothing and goes to the dead letters as "unknown invoice".
//!
//! For every format of the target: an invoice already in the export ledger for (target,
//! format) is skipped (a redelivered event exports nothing twice); otherwise the files are
//! rendered and delivered, and the ledger row (file, SHA-256) and an audit record are written
//! in the handler's transaction. `datev-extf` rewrites the month's Buchungsstapel from every
//! invoice recorded for that month — deterministically (sorted by number; the header's creation
//! time is the newest invoice's issue day), so a re-export is byte-identical.
//!
//! Each format is rendered and delivered on its own: an invoice that fails one format (an
//! e-invoice rule, missing settings, a writer error, a permanent delivery refusal) still lands
//! in the target's other formats — the DATEV Buchungsstapel and SAP never wait on an e-invoice.
//! The failed formats are dead-lettered with the rule ids (recorded by the sink in the
//! handler's transaction when others landed; by the bus when none did), and the invoice run
//! lists them under `export_problems`. A replay exports only what is still missing.

use super::delivery::{Delivery, DeliveryError};
use super::{render, ExportError, ExportFile, ExportFormat, ExportSettings};
use crate::bus::{Handler, HandlerError};
use crate::store::Tx;
use canonical::invoice::Invoice;
use sha2::{Digest, Sha256};

/// The `export-<name>` handler.
pub struct ExportSink {
    pub target: crate::config::ExportTarget,
    pub settings: ExportSettings,
    pub delivery: Delivery,
}

impl ExportSink {
    pub fn new(target: &crate::config::ExportTarget, cfg: &crate::config::Config) -> Self {
        Self {
            settings: ExportSettings::from_config(cfg, &target.zugferd_profile),
            delivery: Delivery::of(target),
            target: target.clone(),
        }
    }

    /// The month's EXTF files from every invoice of that month recorded for this target.
    async fn extf_month(
        &self,
        inv: &Invoice,
        month: &str,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Vec<ExportFile>, HandlerError> {
        let Some(settings) = &self.settings.datev else {
            return Err(HandlerError::Permanent(
                "datev-extf export without [datev] settings".into(),
            ));
        };
        let mut numbers: Vec<String> = sqlx::query_scalar(
            "SELECT invoice_number FROM export_ledger WHERE target = $1 AND format = $2 AND period = $3",
        )
        .bind(&self.target.name)
        .bind(ExportFormat::DatevExtf.name())
        .bind(month)
        .fetch_all(&mut *conn)
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
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(d) = doc {
                invoices.push(
                    serde_json::from_str(&d)
                        .map_err(|e| HandlerError::Permanent(format!("invoice {n}: {e}")))?,
                );
            }
        }
        super::datev_extf_files(settings, &invoices, deterministic_time(&invoices))
            .map_err(|e| HandlerError::Permanent(format!("invoice {}: {e:#}", inv.number)))
    }
}

/// What phase 1 of an export produced: the rendered, delivered formats and the failed ones.
struct Exported {
    number: String,
    month: String,
    delivered: Vec<(ExportFormat, String, Vec<String>)>,
    failed: Vec<(ExportFormat, String)>,
}

impl ExportSink {
    /// Reads (ledger, stored invoice, the month's invoices for EXTF) and renders what is
    /// still missing; touches nothing outside.
    async fn render_pending(
        &self,
        ev: &canonical::Envelope,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<
        (
            Invoice,
            String,
            Vec<(ExportFormat, Vec<ExportFile>)>,
            Vec<(ExportFormat, String)>,
        ),
        HandlerError,
    > {
        use chrono::Datelike;
        // The event says *which* invoice; the store says *what* it is. An invoice the store
        // does not have is not exported, whatever the event carries.
        let number = ev
            .data
            .get("number")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                HandlerError::Permanent(format!(
                    "invoice.finalized {}: the event names no invoice (`number`)",
                    ev.id
                ))
            })?;
        let inv = stored_invoice_in(conn, number).await?.ok_or_else(|| {
            HandlerError::Permanent(format!(
                "unknown invoice {:?}: not in the store, nothing exported",
                number.chars().take(80).collect::<String>()
            ))
        })?;
        let month = format!("{:04}-{:02}", inv.issue_date.year(), inv.issue_date.month());
        // Every format on its own: a format the invoice fails (e-invoice rules, settings,
        // writer, a permanent delivery refusal) is recorded and the others still land, so the
        // booking formats never wait on an e-invoice format.
        let mut failed: Vec<(ExportFormat, String)> = Vec::new();
        let mut pending: Vec<(ExportFormat, Vec<ExportFile>)> = Vec::new();
        for name in &self.target.formats {
            let format: ExportFormat = name.parse().map_err(HandlerError::Permanent)?;
            let known: Option<String> = sqlx::query_scalar(
                "SELECT file FROM export_ledger WHERE target = $1 AND format = $2 AND invoice_number = $3",
            )
            .bind(&self.target.name)
            .bind(format.name())
            .bind(&inv.number)
            .fetch_optional(&mut *conn)
            .await?;
            if known.is_some() {
                continue;
            }
            let files = match format {
                ExportFormat::DatevExtf => match self.extf_month(&inv, &month, conn).await {
                    Ok(files) => files,
                    Err(HandlerError::Permanent(m)) => {
                        failed.push((format, m));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                _ => match render(format, &inv, &self.settings) {
                    Ok(f) => vec![f],
                    Err(
                        e @ (ExportError::Rules { .. }
                        | ExportError::Settings(_)
                        | ExportError::Writer { .. }),
                    ) => {
                        failed.push((format, e.to_string()));
                        continue;
                    }
                },
            };
            pending.push((format, files));
        }
        Ok((inv, month, pending, failed))
    }

    /// Delivers the rendered files (the outside call: no transaction may be open here).
    async fn deliver_pending(
        &self,
        inv: &Invoice,
        month: String,
        pending: Vec<(ExportFormat, Vec<ExportFile>)>,
        mut failed: Vec<(ExportFormat, String)>,
    ) -> Result<Exported, HandlerError> {
        let mut delivered = Vec::new();
        for (format, files) in pending {
            let places = match self
                .delivery
                .deliver(&self.target.name, format.name(), &inv.number, &files)
                .await
            {
                Ok(p) => p,
                Err(DeliveryError::Transient(m)) => return Err(HandlerError::Transient(m)),
                Err(DeliveryError::Permanent(m)) => {
                    failed.push((format, m));
                    continue;
                }
            };
            let sha = files
                .first()
                .map(|f| hex::encode(Sha256::digest(&f.bytes)))
                .unwrap_or_default();
            delivered.push((format, sha, places));
        }
        Ok(Exported {
            number: inv.number.clone(),
            month,
            delivered,
            failed,
        })
    }

    /// Records the deliveries (ledger, audit) and the failed formats in the transaction.
    async fn record(
        &self,
        ev: &canonical::Envelope,
        e: &Exported,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        let failed = &e.failed;
        let month = &e.month;
        let mut landed: Vec<ExportFormat> = Vec::new();
        for (format, sha, places) in &e.delivered {
            let format = *format;
            landed.push(format);
            let file = places.first().cloned().unwrap_or_default();
            sqlx::query(
                "INSERT INTO export_ledger (target, format, invoice_number, period, file, sha256, exported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&self.target.name)
            .bind(format.name())
            .bind(&e.number)
            .bind(month)
            .bind(&file)
            .bind(sha)
            .bind(crate::store::now_ms())
            .execute(&mut **tx)
            .await?;
            crate::store::audit::record(
                tx,
                &crate::store::audit::AuditRecord {
                    actor: &format!("consumer:export-{}", self.target.name),
                    action: &format!("export.{}", format.name().replace('-', "_")),
                    object: &format!("invoice:{}", e.number),
                    before: None,
                    after: Some(serde_json::json!({ "files": places, "sha256": sha, "target": self.target.name })),
                },
            )
            .await?;
            crate::telemetry::exported(&self.target.name, format.name());
        }
        if failed.is_empty() {
            return Ok(());
        }
        let reason = failed
            .iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        if landed.is_empty() {
            // Nothing of this event landed: the bus dead-letters it as a whole.
            return Err(HandlerError::Permanent(reason));
        }
        // Some formats landed (and are in the ledger): the failed ones are dead-lettered here,
        // in the same transaction; a replay exports only what is still missing.
        let consumer = format!("export-{}", self.target.name);
        let reason = format!(
            "{reason} (delivered: {})",
            landed
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        crate::store::deadletter::record(
            tx,
            &crate::store::deadletter::DeathNote {
                consumer: &consumer,
                reason: &reason,
                attempts: 1,
                first_failure_at: Some(crate::store::now_ms()),
            },
            ev,
        )
        .await?;
        crate::telemetry::dead_lettered(&consumer);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for ExportSink {
    fn calls_out(&self) -> bool {
        true
    }

    /// Reads and renders on a pooled connection (released again), then delivers — no
    /// transaction is open while the sink is called.
    async fn prepare(
        &self,
        db: &crate::store::Db,
        ev: &canonical::Envelope,
    ) -> Result<crate::bus::Prepared, HandlerError> {
        let (inv, month, pending, failed) = {
            let mut conn = db.pool.acquire().await?;
            self.render_pending(ev, &mut conn).await?
        };
        let exported = self.deliver_pending(&inv, month, pending, failed).await?;
        Ok(Some(std::sync::Arc::new(exported)))
    }

    async fn apply(
        &self,
        ev: &canonical::Envelope,
        prepared: crate::bus::Prepared,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        match prepared.as_ref().and_then(|p| p.downcast_ref::<Exported>()) {
            Some(e) => self.record(ev, e, tx).await,
            None => self.handle(ev, tx).await,
        }
    }

    /// All phases at once (for callers outside the bus).
    async fn handle(&self, ev: &canonical::Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let (inv, month, pending, failed) = self.render_pending(ev, tx).await?;
        let exported = self.deliver_pending(&inv, month, pending, failed).await?;
        self.record(ev, &exported, tx).await
    }
}

/// The finalized invoice `number` as the store holds it (`None` if it has none).
pub async fn stored_invoice(
    tx: &mut Tx<'_>,
    number: &str,
) -> Result<Option<Invoice>, HandlerError> {
    stored_invoice_in(tx, number).await
}

/// [`stored_invoice`] on any connection.
pub async fn stored_invoice_in(
    conn: &mut sqlx::AnyConnection,
    number: &str,
) -> Result<Option<Invoice>, HandlerError> {
    let doc: Option<String> = sqlx::query_scalar("SELECT document FROM invoices WHERE number = $1")
        .bind(number)
        .fetch_optional(&mut *conn)
        .await?;
    doc.map(|d| {
        serde_json::from_str(&d)
            .map_err(|e| HandlerError::Permanent(format!("stored invoice {number}: {e}")))
    })
    .transpose()
}

/// The file header's creation time derived from the invoices (latest issue day, midday).
pub(crate) fn deterministic_time(invoices: &[Invoice]) -> chrono::NaiveDateTime {
    invoices
        .iter()
        .map(|i| i.issue_date)
        .max()
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .unwrap_or_default()
}
