//! Zammad JSON → canonical records. Pure: no I/O, never panics on input.
//!
//! - A ticket (`GET /api/v1/tickets/{id}?expand=true`) becomes a canonical [`Ticket`]: the
//!   organization id is kept for customer resolution, the configured ticket attribute gives the
//!   billing classification, `updated_at` (ms) is the version.
//! - A time accounting (`…/time_accountings`) becomes a [`TimeEntry`]: `time_unit` arrives as a
//!   decimal string in the installation's unit (minutes, hours or quarter hours) and is
//!   converted to whole minutes (a fraction of a minute is an error, not silently rounded);
//!   `type_id` (nullable) maps to level, activity and billability; `created_at` is the work
//!   time (Zammad has no start time); `updated_at` (ms) is the version.

use canonical::work::{Ticket, TimeEntry};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The unit `time_unit` is booked in (an admin display setting in Zammad).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    #[default]
    Minutes,
    Hours,
    QuarterHours,
}

/// What a time-accounting type means for billing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeMapping {
    pub level: String,
    #[serde(default = "remote")]
    pub activity: String,
    #[serde(default = "yes")]
    pub billable: bool,
    /// Required when `billable = false`.
    #[serde(default)]
    pub reason: Option<String>,
}

fn remote() -> String {
    "remote".into()
}
fn yes() -> bool {
    true
}

/// Mapping settings (from the hub's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSettings {
    #[serde(default)]
    pub time_unit: TimeUnit,
    /// `type_id` → meaning; entries without a type (`type_id: null`) use `default_level`.
    #[serde(default)]
    pub types: BTreeMap<String, TypeMapping>,
    #[serde(default = "first")]
    pub default_level: String,
    /// Ticket attribute holding the billing classification (e.g. `billing_class`).
    #[serde(default)]
    pub classification_attribute: Option<String>,
    /// Organization attribute holding the hub's customer id (e.g. `customer_number`); without
    /// it, organizations map through the customers' `helpdesk_org_id`.
    #[serde(default)]
    pub customer_number_attribute: Option<String>,
    /// Ticket attribute naming the contract the ticket is billed on (the hub's contract id).
    #[serde(default = "contract_attribute")]
    pub contract_attribute: String,
}

fn contract_attribute() -> String {
    "billing_contract".into()
}

fn first() -> String {
    "1st".into()
}

impl Default for MappingSettings {
    fn default() -> Self {
        Self {
            time_unit: TimeUnit::Minutes,
            types: BTreeMap::new(),
            default_level: first(),
            classification_attribute: None,
            customer_number_attribute: None,
            contract_attribute: contract_attribute(),
        }
    }
}

/// Why a record could not be mapped: which field, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zammad {record}: `{field}`: {expected}")]
pub struct MappingError {
    pub record: String,
    pub field: String,
    pub expected: String,
}

fn err(record: &str, field: &str, expected: impl Into<String>) -> MappingError {
    MappingError {
        record: record.into(),
        field: field.into(),
        expected: expected.into(),
    }
}

fn id_of(v: &Value, field: &str, record: &str) -> Result<String, MappingError> {
    match v.get(field) {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(err(record, field, "an id")),
    }
}

fn instant(
    v: &Value,
    field: &str,
    record: &str,
) -> Result<chrono::DateTime<chrono::Utc>, MappingError> {
    v.get(field)
        .and_then(|x| x.as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok_or_else(|| err(record, field, "an RFC 3339 timestamp"))
}

/// A Zammad ticket → canonical ticket.
pub fn ticket(v: &Value, source: &str, s: &MappingSettings) -> Result<Ticket, MappingError> {
    let id = id_of(v, "id", "ticket")?;
    let record = format!("ticket {id}");
    let updated = instant(v, "updated_at", &record)?;
    let title = v
        .get("title")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string();
    if title.trim().is_empty() {
        return Err(err(&record, "title", "a non-empty title"));
    }
    let classification = s
        .classification_attribute
        .as_ref()
        .and_then(|a| v.get(a))
        .and_then(|c| c.as_str())
        .map(String::from);
    let contract_id = v
        .get(&s.contract_attribute)
        .and_then(|c| c.as_str())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from);
    Ok(Ticket {
        source: source.into(),
        id: id.clone(),
        version: updated.timestamp_millis(),
        customer_id: None,
        organization_id: match v.get("organization_id") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
        number: v.get("number").and_then(|n| n.as_str()).map(String::from),
        title,
        classification,
        level: None,
        billable_from: None,
        asset: None,
        branch: None,
        cost_centre: None,
        contract_id,
    })
}

/// A Zammad time accounting → canonical time entry (of the given ticket).
pub fn time_accounting(
    v: &Value,
    source: &str,
    s: &MappingSettings,
) -> Result<TimeEntry, MappingError> {
    let id = id_of(v, "id", "time_accounting")?;
    let record = format!("time_accounting {id}");
    let ticket_id = id_of(v, "ticket_id", &record)?;
    let raw = match v.get("time_unit") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(err(&record, "time_unit", "a decimal string like \"15.0\"")),
    };
    let amount: Decimal = raw
        .trim()
        .parse()
        .map_err(|_| err(&record, "time_unit", format!("a decimal, got {raw:?}")))?;
    let factor = match s.time_unit {
        TimeUnit::Minutes => Decimal::ONE,
        TimeUnit::Hours => Decimal::from(60),
        TimeUnit::QuarterHours => Decimal::from(15),
    };
    let minutes = amount * factor;
    if minutes.fract() != Decimal::ZERO || minutes <= Decimal::ZERO {
        return Err(err(
            &record,
            "time_unit",
            format!(
                "a positive whole number of minutes, got {raw} {:?}",
                s.time_unit
            ),
        ));
    }
    let minutes: u32 = minutes
        .trunc()
        .to_string()
        .parse()
        .map_err(|_| err(&record, "time_unit", "at most 4294967295 minutes"))?;
    let mapping = match v.get("type_id") {
        None | Some(Value::Null) => None,
        Some(t) => {
            let key = match t {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(err(&record, "type_id", "an id or null")),
            };
            Some(s.types.get(&key).ok_or_else(|| {
                err(
                    &record,
                    "type_id",
                    format!("a mapped time-accounting type (type {key} is not in [zammad.types])"),
                )
            })?)
        }
    };
    let created = instant(v, "created_at", &record)?;
    let updated = instant(v, "updated_at", &record)?;
    Ok(TimeEntry {
        source: source.into(),
        id,
        version: updated.timestamp_millis(),
        ticket_id,
        customer_id: None,
        technician: v
            .get("created_by_id")
            .map(|x| format!("zammad-user-{x}"))
            .unwrap_or_else(|| "unknown".into()),
        level: mapping
            .map(|m| m.level.clone())
            .unwrap_or_else(|| s.default_level.clone()),
        activity: mapping.map(|m| m.activity.clone()).unwrap_or_else(remote),
        started_at: created,
        minutes,
        billable: mapping.map(|m| m.billable).unwrap_or(true),
        non_billable_reason: mapping.and_then(|m| m.reason.clone()),
        visit_id: None,
        note: None,
    })
}

/// The hub customer id an organization carries in the configured attribute, if any.
pub fn organization_customer(org: &Value, s: &MappingSettings) -> Option<String> {
    let attr = s.customer_number_attribute.as_ref()?;
    match org.get(attr)? {
        Value::String(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(unit: TimeUnit) -> MappingSettings {
        let mut types = BTreeMap::new();
        types.insert(
            "2".into(),
            TypeMapping {
                level: "2nd".into(),
                activity: "remote".into(),
                billable: true,
                reason: None,
            },
        );
        types.insert(
            "5".into(),
            TypeMapping {
                level: "1st".into(),
                activity: "remote".into(),
                billable: false,
                reason: Some("Kulanz".into()),
            },
        );
        MappingSettings {
            time_unit: unit,
            types,
            default_level: "1st".into(),
            classification_attribute: Some("billing_class".into()),
            customer_number_attribute: None,
            contract_attribute: "billing_contract".into(),
        }
    }

    #[test]
    fn documented_time_accounting_maps_with_units_and_types() {
        // The documented list response (reference §1.7).
        let v = json!({"id":6,"ticket_id":50,"ticket_article_id":87,"time_unit":"15.0","type_id":2,"created_by_id":3,
                       "created_at":"2023-08-16T08:11:49.315Z","updated_at":"2023-08-16T08:11:49.315Z"});
        let e = time_accounting(&v, "zammad", &settings(TimeUnit::Minutes)).unwrap();
        assert_eq!(
            (
                e.id.as_str(),
                e.ticket_id.as_str(),
                e.minutes,
                e.level.as_str()
            ),
            ("6", "50", 15, "2nd")
        );
        assert_eq!(
            time_accounting(&v, "zammad", &settings(TimeUnit::QuarterHours))
                .unwrap()
                .minutes,
            225
        );
        let h = json!({"id":7,"ticket_id":50,"time_unit":"0.5","type_id":null,"created_by_id":3,"created_at":"2023-08-16T08:12:02.249Z","updated_at":"2023-08-16T09:00:00Z"});
        let e = time_accounting(&h, "zammad", &settings(TimeUnit::Hours)).unwrap();
        assert_eq!(
            (e.minutes, e.level.as_str()),
            (30, "1st"),
            "type_id null → default level"
        );
        let free = json!({"id":8,"ticket_id":50,"time_unit":"10","type_id":5,"created_at":"2023-08-16T08:12:02Z","updated_at":"2023-08-16T08:12:02Z"});
        let e = time_accounting(&free, "zammad", &settings(TimeUnit::Minutes)).unwrap();
        assert!(!e.billable && e.non_billable_reason.as_deref() == Some("Kulanz"));
    }

    #[test]
    fn bad_time_units_and_unknown_types_name_the_field() {
        let s = settings(TimeUnit::Minutes);
        let frac = json!({"id":9,"ticket_id":1,"time_unit":"2.5","created_at":"2023-08-16T08:12:02Z","updated_at":"2023-08-16T08:12:02Z"});
        assert_eq!(
            time_accounting(&frac, "z", &s).unwrap_err().field,
            "time_unit"
        );
        let junk = json!({"id":9,"ticket_id":1,"time_unit":"abc","created_at":"2023-08-16T08:12:02Z","updated_at":"2023-08-16T08:12:02Z"});
        assert!(time_accounting(&junk, "z", &s)
            .unwrap_err()
            .to_string()
            .contains("\"abc\""));
        let unknown = json!({"id":9,"ticket_id":1,"time_unit":"5","type_id":77,"created_at":"2023-08-16T08:12:02Z","updated_at":"2023-08-16T08:12:02Z"});
        assert_eq!(
            time_accounting(&unknown, "z", &s).unwrap_err().field,
            "type_id"
        );
    }

    #[test]
    fn organization_customer_attribute() {
        let s = MappingSettings {
            customer_number_attribute: Some("customer_number".into()),
            ..Default::default()
        };
        assert_eq!(
            organization_customer(&json!({"id": 2, "customer_number": " C-1003 "}), &s).as_deref(),
            Some("C-1003")
        );
        assert_eq!(
            organization_customer(&json!({"id": 2, "customer_number": ""}), &s),
            None
        );
        assert_eq!(
            organization_customer(&json!({"id": 2}), &MappingSettings::default()),
            None
        );
    }

    #[test]
    fn documented_ticket_maps() {
        let v = json!({"id":1,"group_id":1,"organization_id":3,"number":"77001","title":"Welcome to Zammad!","billing_class":"change_request",
                       "created_at":"2025-05-13T08:37:16.572Z","updated_at":"2025-05-13T08:37:16.844Z","time_unit":null});
        let t = ticket(&v, "zammad", &settings(TimeUnit::Minutes)).unwrap();
        assert_eq!(
            (
                t.id.as_str(),
                t.organization_id.as_deref(),
                t.classification.as_deref()
            ),
            ("1", Some("3"), Some("change_request"))
        );
        assert_eq!(t.version, 1747125436844);
        assert_eq!(
            ticket(
                &json!({"id":2,"title":"","updated_at":"2025-05-13T08:37:16Z"}),
                "z",
                &MappingSettings::default()
            )
            .unwrap_err()
            .field,
            "title"
        );
    }
}
