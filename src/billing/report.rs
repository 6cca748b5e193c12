//! The service report (Leistungsnachweis) of a billing target and period: every entry with its
//! status and reason, totals per ticket and per level, and the contingent statement. Rendered
//! as JSON and as a readable HTML page with German labels. Its id is printed on the invoice.

use super::rating::{ContingentStatement, Rating};
use canonical::customer::Customer;
use canonical::invoice::EntryStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub entry_id: String,
    pub ticket_id: String,
    pub date: String,
    pub technician: String,
    pub level: String,
    pub activity: String,
    pub raw_minutes: u32,
    pub billed_minutes: u32,
    /// German status text, e.g. `abgerechnet`, `Kontingent`, `nicht abrechenbar: Kulanz`.
    pub status: String,
    pub note: Option<String>,
}

/// Minutes per ticket or level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportTotal {
    pub raw_minutes: u32,
    pub invoiced_minutes: u32,
    pub contingent_minutes: u32,
    pub free_minutes: u32,
}

/// The service report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub contract_id: String,
    pub period: String,
    pub entries: Vec<ReportEntry>,
    pub per_ticket: BTreeMap<String, ReportTotal>,
    pub per_level: BTreeMap<String, ReportTotal>,
    pub contingent: Option<ContingentStatement>,
}

/// German text for a status.
pub fn status_text(s: &EntryStatus) -> String {
    match s {
        EntryStatus::FreeDiagnosis => "kostenlose Erstdiagnose".into(),
        EntryStatus::Contingent => "Kontingent".into(),
        EntryStatus::Invoiced => "abgerechnet".into(),
        EntryStatus::NonBillable { reason } => format!("nicht abrechenbar: {reason}"),
        EntryStatus::FreeClassification { classification } => {
            format!("kostenfrei ({classification})")
        }
        EntryStatus::Covered => "durch Vertrag abgedeckt".into(),
        EntryStatus::WrittenOff { reason } => format!("abgeschrieben: {reason}"),
        EntryStatus::Held { reason } => format!("zurückgestellt: {reason}"),
    }
}

/// Builds the report of a rating.
pub fn build(id: &str, customer: &Customer, rating: &Rating) -> ServiceReport {
    let mut per_ticket: BTreeMap<String, ReportTotal> = BTreeMap::new();
    let mut per_level: BTreeMap<String, ReportTotal> = BTreeMap::new();
    let mut entries = Vec::with_capacity(rating.entries.len());
    for e in &rating.entries {
        let free = e.split.free_diagnosis
            + e.split.free_classification
            + e.split.non_billable
            + e.split.covered
            + e.split.written_off;
        for t in [
            per_ticket.entry(e.ticket_id.clone()).or_default(),
            per_level.entry(e.level.clone()).or_default(),
        ] {
            t.raw_minutes += e.split.raw;
            t.invoiced_minutes += e.split.invoiced;
            t.contingent_minutes += e.split.contingent;
            t.free_minutes += free;
        }
        entries.push(ReportEntry {
            entry_id: e.entry_id.clone(),
            ticket_id: e.ticket_id.clone(),
            date: e
                .started_at
                .with_timezone(&chrono_tz::Europe::Berlin)
                .format("%d.%m.%Y %H:%M")
                .to_string(),
            technician: e.technician.clone(),
            level: e.level.clone(),
            activity: e.activity.clone(),
            raw_minutes: e.split.raw,
            billed_minutes: e.billed_minutes,
            status: e
                .statuses
                .iter()
                .map(status_text)
                .collect::<Vec<_>>()
                .join(", "),
            note: e.note.clone(),
        });
    }
    ServiceReport {
        id: id.to_string(),
        customer_id: customer.id.clone(),
        customer_name: customer.name.clone(),
        contract_id: rating.contract_id.clone(),
        period: rating.period.to_string(),
        entries,
        per_ticket,
        per_level,
        contingent: rating.contingent.clone(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hm(minutes: u32) -> String {
    format!("{}:{:02} h", minutes / 60, minutes % 60)
}

/// The report as a self-contained HTML page (German labels).
pub fn html(r: &ServiceReport) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html lang=\"de\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!("<title>Leistungsnachweis {}</title>", esc(&r.id)));
    h.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #999;padding:4px 8px;text-align:left}td.n{text-align:right}</style></head><body>");
    h.push_str(&format!(
        "<h1>Leistungsnachweis {}</h1><p>Kunde: {} ({})<br>Vertrag: {}<br>Zeitraum: {}</p>",
        esc(&r.id),
        esc(&r.customer_name),
        esc(&r.customer_id),
        esc(&r.contract_id),
        esc(&r.period)
    ));
    h.push_str("<h2>Leistungen</h2><table><tr><th>Datum</th><th>Ticket</th><th>Techniker</th><th>Level</th><th>Tätigkeit</th><th>Dauer</th><th>berechnet</th><th>Status</th><th>Beschreibung</th></tr>");
    for e in &r.entries {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.date),
            esc(&e.ticket_id),
            esc(&e.technician),
            esc(&e.level),
            esc(&e.activity),
            hm(e.raw_minutes),
            hm(e.billed_minutes),
            esc(&e.status),
            esc(e.note.as_deref().unwrap_or(""))
        ));
    }
    h.push_str("</table>");
    for (title, map) in [
        ("Summen je Ticket", &r.per_ticket),
        ("Summen je Supportlevel", &r.per_level),
    ] {
        h.push_str(&format!("<h2>{title}</h2><table><tr><th></th><th>Dauer</th><th>abgerechnet</th><th>Kontingent</th><th>kostenfrei</th></tr>"));
        for (k, t) in map {
            h.push_str(&format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(k),
                hm(t.raw_minutes),
                hm(t.invoiced_minutes),
                hm(t.contingent_minutes),
                hm(t.free_minutes)
            ));
        }
        h.push_str("</table>");
    }
    if let Some(c) = &r.contingent {
        h.push_str("<h2>Kontingent</h2><table>");
        for (label, v) in [
            ("Anfangsbestand", c.opening),
            ("Zugang", c.allotment),
            ("Verbrauch", c.consumption),
            ("Überziehung", c.overdraft),
            ("verfallen", c.forfeited),
            ("Endbestand", c.closing),
        ] {
            h.push_str(&format!(
                "<tr><th>{label}</th><td class=\"n\">{}</td></tr>",
                v.normalize()
            ));
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
