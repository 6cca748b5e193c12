//! Intake of work: the `work-intake` consumer applies canonical ticket, time-entry and usage
//! events to the store, and `import` turns files into those events (same bus path).
//!
//! Rules: every write is versioned (an older version never overwrites a newer one); a record
//! that fails validation (e.g. non-billable without reason) is a permanent error, so it goes to
//! the dead letters with the field named; a record whose customer cannot be resolved is stored
//! and put on the review list, never dropped; a change or deletion of an entry that was already
//! billed is not applied but put on the review list (corrections go through credit notes).

use crate::bus::{Handler, HandlerError};
use crate::ingress::IngressRecord;
use crate::store::{review, work, Tx};
use async_trait::async_trait;
use canonical::work::{Ticket, TimeEntry};
use canonical::Envelope;

/// The consumer's queue name.
pub const CONSUMER: &str = "work-intake";
/// The event types it is bound to.
pub const ROUTING_KEYS: &[&str] = &["ticket.*", "time_entry.*", "usage.*"];

/// Body of `ticket.deleted` and `time_entry.deleted` (defined with the canonical records).
pub use canonical::work::Deletion;

/// The `work-intake` handler.
pub struct WorkIntake;

#[async_trait]
impl Handler for WorkIntake {
    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        // The same checks the door applied (`crate::ingress`): a record that fails them is a
        // permanent error, whichever way it reached the bus.
        let record = crate::ingress::check(ev)
            .map_err(|e| HandlerError::Permanent(format!("{} {}: {e}", ev.event_type, ev.id)))?;
        match record {
            IngressRecord::Ticket(t) => {
                let customer =
                    work::resolve_customer(tx, t.customer_id.as_deref(), t.organization_id.as_deref()).await?;
                if customer.is_none() {
                    let reason = format!(
                        "no customer for customer id {} / helpdesk organization {}",
                        t.customer_id.as_deref().unwrap_or("-"),
                        t.organization_id.as_deref().unwrap_or("-")
                    );
                    review::add(tx, "unknown_customer", &t.source, &format!("ticket:{}", t.id), &reason, &ev.data).await?;
                }
                let written = work::upsert_ticket(tx, &t, customer.as_deref()).await?;
                if let (Some(c), true) = (customer.as_deref(), written != work::Written::Stale) {
                    work::assign_waiting_entries(tx, &t.source, &t.id, c).await?;
                }
            }
            IngressRecord::Deletion(d) if ev.event_type == "ticket.deleted" => {
                work::mark_deleted(tx, work::WorkTable::Tickets, &d.source, &d.id, d.version).await?;
            }
            IngressRecord::TimeEntry(e) => {
                if let Some(invoice) = work::billed_invoice(tx, &e.source, &e.id).await? {
                    let reason = format!("entry was billed on invoice {invoice}; the change is not applied");
                    review::add(tx, "billed_entry_changed", &e.source, &format!("time_entry:{}", e.id), &reason, &ev.data)
                        .await?;
                    return Ok(());
                }
                let mut customer = work::resolve_customer(tx, e.customer_id.as_deref(), None).await?;
                if customer.is_none() {
                    customer = work::ticket_customer(tx, &e.source, &e.ticket_id).await?.flatten();
                }
                if customer.is_none() {
                    let reason = format!(
                        "no customer: customer id {} unknown and ticket {} has none (yet)",
                        e.customer_id.as_deref().unwrap_or("-"),
                        e.ticket_id
                    );
                    review::add(tx, "unknown_customer", &e.source, &format!("time_entry:{}", e.id), &reason, &ev.data)
                        .await?;
                }
                let written = work::upsert_entry(tx, &e, customer.as_deref()).await?;
                if let (Some(c), true) = (customer.as_deref(), written != work::Written::Stale) {
                    let key = format!("{}/{}@{}", e.source, e.id, e.version);
                    let ev = crate::billing::ledger::work_recorded(c, e.period(), &key)
                        .map_err(|err| HandlerError::Permanent(err.to_string()))?;
                    crate::store::outbox::enqueue(tx, &ev).await?;
                }
            }
            IngressRecord::Deletion(d) => {
                if let Some(invoice) = work::billed_invoice(tx, &d.source, &d.id).await? {
                    let reason = format!("entry was billed on invoice {invoice}; the deletion is not applied");
                    review::add(tx, "billed_entry_changed", &d.source, &format!("time_entry:{}", d.id), &reason, &ev.data)
                        .await?;
                    return Ok(());
                }
                work::mark_deleted(tx, work::WorkTable::TimeEntries, &d.source, &d.id, d.version).await?;
            }
            IngressRecord::Usage(u) => {
                if work::resolve_customer(tx, Some(&u.customer_id), None).await?.is_none() {
                    let reason = format!("customer {:?} is unknown", u.customer_id);
                    review::add(tx, "unknown_customer", &u.source, &format!("usage:{}", u.id), &reason, &ev.data).await?;
                }
                work::upsert_usage(tx, &u).await?;
            }
            IngressRecord::TicketChanged(_) => {
                return Err(HandlerError::Permanent(format!(
                    "event type `{}` is not handled by {CONSUMER} (expected ticket.*, time_entry.*, usage.recorded)",
                    ev.event_type
                )))
            }
        }
        Ok(())
    }
}

/// The event for a time entry (deterministic id from source, id and version).
pub fn time_entry_event(
    e: &TimeEntry,
    created: bool,
) -> Result<Envelope, canonical::EnvelopeError> {
    let kind = if created {
        "time_entry.created"
    } else {
        "time_entry.updated"
    };
    Envelope::new(
        &format!("/{}", e.source),
        kind,
        &e.id,
        &e.version.to_string(),
        e.started_at,
        e,
    )
}

/// The event for a ticket.
pub fn ticket_event(t: &Ticket, created: bool) -> Result<Envelope, canonical::EnvelopeError> {
    let kind = if created {
        "ticket.created"
    } else {
        "ticket.updated"
    };
    Envelope::new(
        &format!("/{}", t.source),
        kind,
        &t.id,
        &t.version.to_string(),
        chrono::Utc::now(),
        t,
    )
}

/// Reads time entries from a file: a JSON array of canonical time entries, or CSV with the
/// header `source,id,version,ticket_id,customer_id,technician,level,activity,started_at,minutes,billable,non_billable_reason,visit_id,note`.
/// Every row is validated; the error names the row and field, and nothing is imported then.
pub fn read_time_entries(path: &std::path::Path) -> anyhow::Result<Vec<TimeEntry>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let entries: Vec<TimeEntry> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{}: not a JSON array of time entries: {e}", path.display())
        })?
    } else {
        parse_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    for (i, e) in entries.iter().enumerate() {
        e.validate().map_err(|err| {
            anyhow::anyhow!("{}: entry {} (id {:?}): {err}", path.display(), i + 1, e.id)
        })?;
    }
    Ok(entries)
}

const CSV_COLUMNS: &[&str] = &[
    "source",
    "id",
    "version",
    "ticket_id",
    "customer_id",
    "technician",
    "level",
    "activity",
    "started_at",
    "minutes",
    "billable",
    "non_billable_reason",
    "visit_id",
    "note",
];

fn parse_csv(text: &str) -> anyhow::Result<Vec<TimeEntry>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .map(|h| h.split(',').map(str::trim).collect())
        .unwrap_or_default();
    if header != CSV_COLUMNS {
        anyhow::bail!("CSV header must be `{}`", CSV_COLUMNS.join(","));
    }
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let row = n + 2;
        let cells = split_csv_line(line);
        if cells.len() != CSV_COLUMNS.len() {
            anyhow::bail!(
                "line {row}: expected {} columns, got {}",
                CSV_COLUMNS.len(),
                cells.len()
            );
        }
        let opt = |i: usize| (!cells[i].is_empty()).then(|| cells[i].clone());
        let field = |i: usize, what: &str| {
            anyhow::anyhow!(
                "line {row}, column `{}`: expected {what}, got {:?}",
                CSV_COLUMNS[i],
                cells[i]
            )
        };
        out.push(TimeEntry {
            source: cells[0].clone(),
            id: cells[1].clone(),
            version: cells[2].parse().map_err(|_| field(2, "an integer"))?,
            ticket_id: cells[3].clone(),
            customer_id: opt(4),
            technician: cells[5].clone(),
            level: cells[6].clone(),
            activity: if cells[7].is_empty() {
                "remote".into()
            } else {
                cells[7].clone()
            },
            started_at: chrono::DateTime::parse_from_rfc3339(&cells[8])
                .map_err(|_| field(8, "an RFC 3339 timestamp"))?
                .with_timezone(&chrono::Utc),
            minutes: cells[9].parse().map_err(|_| field(9, "whole minutes"))?,
            billable: match cells[10].to_ascii_lowercase().as_str() {
                "" | "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return Err(field(10, "true or false")),
            },
            non_billable_reason: opt(11),
            visit_id: opt(12),
            note: opt(13),
        });
    }
    Ok(out)
}

/// Splits one CSV line (RFC 4180 quoting with `"`).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    cells.push(cur);
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_parse_and_errors_name_line_and_column() {
        let csv = "source,id,version,ticket_id,customer_id,technician,level,activity,started_at,minutes,billable,non_billable_reason,visit_id,note\n\
                   import,1,1,T-1,C-1,anna,1st,remote,2026-10-05T08:00:00Z,20,true,,,\"Drucker, neu\"\n\
                   import,2,1,T-1,C-1,anna,1st,,2026-10-05T09:00:00Z,10,false,Kulanz,,\n";
        let rows = parse_csv(csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].note.as_deref(), Some("Drucker, neu"));
        assert!(!rows[1].billable);
        assert_eq!(rows[1].activity, "remote");
        let bad = csv.replace("20,true", "zwanzig,true");
        let err = parse_csv(&bad).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`minutes`"), "{err}");
    }
}
