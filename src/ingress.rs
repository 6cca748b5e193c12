//! What the hub accepts from outside, checked once: [`check`] is the one function both the door
//! (`POST /api/v1/events`, the Zammad webhook → 422 naming the field) and the consumers
//! (`work-intake`, `zammad-sync` → dead letter with the same reason) apply to an ingress event,
//! so an event the door accepts is one its consumer can apply, and a forged event put on the
//! bus some other way fails the same checks.
//!
//! Checked: the envelope's `id` (1 to 256 visible characters) and `subject` (≤ 256), that the
//! data decodes as the type's canonical record, that the record passes its validation
//! (`canonical::work`: source and id grammar, version ≥ 0, known level, lengths, ranges), and
//! that the record's own `source` is the event's source system (the first segment of the
//! CloudEvents `source`), so `data.source` cannot name another system than the one posting.
//! Who may post which type is decided before, by [`crate::access`].

use canonical::work::{Deletion, Invalid, Ticket, TimeEntry, UsageRecord};
use canonical::Envelope;
use serde::{Deserialize, Serialize};

/// The longest event `id` and `subject` accepted.
pub const MAX_EVENT_ID: usize = 256;

/// An ingress event's data, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum IngressRecord {
    /// `ticket.created`, `ticket.updated`.
    Ticket(Ticket),
    /// `time_entry.created`, `time_entry.updated`.
    TimeEntry(TimeEntry),
    /// `ticket.deleted`, `time_entry.deleted`.
    Deletion(Deletion),
    /// `usage.recorded`.
    Usage(UsageRecord),
    /// `zammad.ticket_changed`: a signal naming the ticket; the hub fetches it from Zammad.
    TicketChanged(TicketChanged),
}

/// Body of `zammad.ticket_changed`: which Zammad ticket changed (never what changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketChanged {
    /// A positive integer (it goes into Zammad API paths).
    pub ticket_id: zammad::ZammadId,
    #[serde(default)]
    pub delivery: Option<String>,
}

/// Why an ingress event is not acceptable: `field` is a JSON pointer into the event
/// (`/id`, `/data/level`, …), `message` says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct InvalidEvent {
    pub field: String,
    pub message: String,
}

impl InvalidEvent {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<Invalid> for InvalidEvent {
    fn from(i: Invalid) -> Self {
        Self::new(format!("/data/{}", i.field.replace('.', "/")), i.expected)
    }
}

fn decode<T: serde::de::DeserializeOwned>(ev: &Envelope, what: &str) -> Result<T, InvalidEvent> {
    serde_json::from_value(ev.data.clone())
        .map_err(|e| InvalidEvent::new("/data", format!("not a valid {what}: {e}")))
}

fn attribute(field: &str, v: &str) -> Result<(), InvalidEvent> {
    let ok = !v.trim().is_empty()
        && v.chars().count() <= MAX_EVENT_ID
        && !v.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(InvalidEvent::new(
            format!("/{field}"),
            format!(
                "expected 1 to {MAX_EVENT_ID} characters without control characters, got {} characters",
                v.chars().count()
            ),
        ))
    }
}

/// The record's own source must be the event's source system.
fn same_source(ev: &Envelope, record_source: &str) -> Result<(), InvalidEvent> {
    let system = crate::access::source_system(&ev.source)
        .map_err(|e| InvalidEvent::new("/source", e.to_string()))?;
    if record_source != system {
        return Err(InvalidEvent::new(
            "/data/source",
            format!(
                "expected {system:?} (the event's source {:?}), got {:?}",
                ev.source,
                record_source.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// Decodes and checks an ingress event the way its consumer applies it (see the module doc).
pub fn check(ev: &Envelope) -> Result<IngressRecord, InvalidEvent> {
    attribute("id", &ev.id)?;
    if let Some(s) = &ev.subject {
        attribute("subject", s)?;
    }
    let record = match ev.event_type.as_str() {
        "ticket.created" | "ticket.updated" => {
            let t: Ticket = decode(ev, "ticket")?;
            t.validate()?;
            same_source(ev, &t.source)?;
            IngressRecord::Ticket(t)
        }
        "time_entry.created" | "time_entry.updated" => {
            let e: TimeEntry = decode(ev, "time entry")?;
            e.validate()?;
            same_source(ev, &e.source)?;
            IngressRecord::TimeEntry(e)
        }
        "ticket.deleted" | "time_entry.deleted" => {
            let d: Deletion = decode(ev, "deletion {source, id, version}")?;
            d.validate()?;
            same_source(ev, &d.source)?;
            IngressRecord::Deletion(d)
        }
        "usage.recorded" => {
            let u: UsageRecord = decode(ev, "usage record")?;
            u.validate()?;
            same_source(ev, &u.source)?;
            IngressRecord::Usage(u)
        }
        "zammad.ticket_changed" => {
            let c: TicketChanged = decode(ev, "ticket signal {ticket_id: positive integer}")
                .map_err(|e| InvalidEvent::new("/data/ticket_id", e.message))?;
            if let Some(d) = &c.delivery {
                attribute("data/delivery", d)?;
            }
            IngressRecord::TicketChanged(c)
        }
        other => {
            return Err(InvalidEvent::new(
                "/type",
                format!(
                    "event type {:?} is not an ingress event (expected one of {})",
                    other.chars().take(80).collect::<String>(),
                    crate::access::postable_types().join(", ")
                ),
            ))
        }
    };
    Ok(record)
}
