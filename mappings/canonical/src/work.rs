//! Work done for customers: tickets, time entries (Leistungen), usage records of managed
//! services, and the billing period they fall into.
//!
//! A time entry keeps its raw minutes; billed minutes are derived by billing, never stored
//! here. Instants are UTC; the period of an entry is the calendar month of its local work date
//! in Europe/Berlin.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a record is invalid: the field (dotted path) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {expected}")]
pub struct Invalid {
    pub field: String,
    pub expected: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            expected: expected.into(),
        }
    }
}

/// A billing period: one calendar month in Europe/Berlin, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        ((1..=12).contains(&month) && (1970..=9999).contains(&year)).then_some(Self { year, month })
    }

    /// The period an instant's Berlin-local date falls into.
    pub fn of(instant: DateTime<Utc>) -> Self {
        let local = instant.with_timezone(&Berlin);
        Self {
            year: local.year(),
            month: local.month(),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default()
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The last day of the month.
    pub fn last_day(self) -> NaiveDate {
        self.next().first_day().pred_opt().unwrap_or_default()
    }

    /// First instant of the period (Berlin midnight of the 1st) in UTC.
    pub fn start_utc(self) -> DateTime<Utc> {
        let midnight = self.first_day().and_hms_opt(0, 0, 0).unwrap_or_default();
        Berlin
            .from_local_datetime(&midnight)
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// First instant after the period, in UTC.
    pub fn end_utc(self) -> DateTime<Utc> {
        self.next().start_utc()
    }

    pub fn contains(self, instant: DateTime<Utc>) -> bool {
        Self::of(instant) == self
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl std::str::FromStr for Period {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Invalid::new("period", format!("expected YYYY-MM, got {s:?}"));
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        Period::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The support levels a time entry (or ticket) can be handled at; rate cards price these.
pub const SUPPORT_LEVELS: &[&str] = &["1st", "2nd", "3rd"];

/// The longest record id (`id`, `ticket_id`, …) and the longest short text (names, numbers).
pub const MAX_ID_LEN: usize = 128;
const MAX_SHORT_TEXT: usize = 200;
const MAX_TITLE: usize = 1_000;
const MAX_NOTE: usize = 10_000;

/// Is `name` a source-system name: `[a-z0-9][a-z0-9_-]{0,63}`? Safe in a path segment, a file
/// name and a URL (no `.`, `/`, `..`, upper case or spaces).
pub fn is_source_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_source(v: &str) -> Result<(), Invalid> {
    if is_source_name(v) {
        Ok(())
    } else {
        Err(Invalid::new(
            "source",
            format!(
                "expected a source name [a-z0-9][a-z0-9_-]{{0,63}}, got {:?}",
                v.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// A record id: 1 to 128 visible ASCII characters, no `/`, `\`, `?`, `#`, `%` and no `..`.
fn check_id(field: &str, v: &str) -> Result<(), Invalid> {
    let ok = !v.is_empty()
        && v.len() <= MAX_ID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"/\\?#%".contains(&b))
        && !v.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "expected an id of 1 to {MAX_ID_LEN} visible ASCII characters without / \\ ? # % or .., got {:?}",
                v.chars().take(80).collect::<String>()
            ),
        ))
    }
}

fn check_version(v: i64) -> Result<(), Invalid> {
    if v < 0 {
        return Err(Invalid::new(
            "version",
            format!("expected a version ≥ 0, got {v}"),
        ));
    }
    Ok(())
}

fn check_len(field: &str, v: &str, max: usize) -> Result<(), Invalid> {
    if v.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!(
                "expected at most {max} characters, got {}",
                v.chars().count()
            ),
        ));
    }
    Ok(())
}

fn check_level(field: &str, v: &str) -> Result<(), Invalid> {
    if SUPPORT_LEVELS.contains(&v) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "expected one of {}, got {:?}",
                SUPPORT_LEVELS.join(", "),
                v.chars().take(40).collect::<String>()
            ),
        ))
    }
}

impl Deletion {
    /// Checks the deletion; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_source(&self.source)?;
        check_id("id", &self.id)?;
        check_version(self.version)
    }
}

/// Body of `ticket.deleted` and `time_entry.deleted`: which record of which source, and the
/// version of the deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    pub source: String,
    pub id: String,
    pub version: i64,
}

/// A helpdesk ticket as billing sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// The helpdesk it comes from, e.g. `zammad` (with the id, the ticket's identity).
    pub source: String,
    /// The ticket id in that system.
    pub id: String,
    /// A number that grows with every change (e.g. `updated_at` in ms); older never overwrites newer.
    pub version: i64,
    /// The hub's customer id, when the source already knows it.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// The helpdesk's organization id (mapped to a customer by master data).
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Ticket number shown to people.
    #[serde(default)]
    pub number: Option<String>,
    pub title: String,
    /// Billing classification, e.g. `base_bug`, `customizing_bug`, `change_request`.
    #[serde(default)]
    pub classification: Option<String>,
    /// Support level the ticket is handled at, if the helpdesk tracks it.
    #[serde(default)]
    pub level: Option<String>,
    /// From this instant on the customer was told the work is billable; earlier work is diagnosis.
    #[serde(default)]
    pub billable_from: Option<DateTime<Utc>>,
    /// Asset (serial number) the ticket is about.
    #[serde(default)]
    pub asset: Option<String>,
    /// Branch of the customer (decentral billing).
    #[serde(default)]
    pub branch: Option<String>,
    /// Cost centre to bill to.
    #[serde(default)]
    pub cost_centre: Option<String>,
}

/// Work on a ticket by a technician (Leistung).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeEntry {
    /// The helpdesk it comes from (with the id, the entry's identity).
    pub source: String,
    /// The entry id in that system (e.g. Zammad `time_accounting.id`).
    pub id: String,
    /// Grows with every change; older never overwrites newer.
    pub version: i64,
    /// The ticket (id in the same source).
    pub ticket_id: String,
    /// The hub's customer id, when known at the source; else from the ticket's organization.
    #[serde(default)]
    pub customer_id: Option<String>,
    pub technician: String,
    /// Support level, e.g. `1st`, `2nd`, `3rd`.
    pub level: String,
    /// Activity, e.g. `remote`, `onsite`, `travel`.
    #[serde(default = "default_activity")]
    pub activity: String,
    /// When the work started (UTC); its Berlin-local date decides the period.
    pub started_at: DateTime<Utc>,
    /// Raw minutes worked (what was booked, before any rounding).
    pub minutes: u32,
    /// `false` for work that is never invoiced; then `non_billable_reason` is required.
    #[serde(default = "default_true")]
    pub billable: bool,
    #[serde(default)]
    pub non_billable_reason: Option<String>,
    /// On-site visit this entry belongs to (one travel flat rate per visit).
    #[serde(default)]
    pub visit_id: Option<String>,
    /// What was done (for the service report).
    #[serde(default)]
    pub note: Option<String>,
}

fn default_activity() -> String {
    "remote".into()
}
fn default_true() -> bool {
    true
}

impl TimeEntry {
    /// Checks the entry; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (field, v) in [
            ("source", &self.source),
            ("id", &self.id),
            ("ticket_id", &self.ticket_id),
            ("technician", &self.technician),
            ("level", &self.level),
            ("activity", &self.activity),
        ] {
            if v.trim().is_empty() {
                return Err(Invalid::new(field, "must not be empty"));
            }
        }
        check_source(&self.source)?;
        check_id("id", &self.id)?;
        check_version(self.version)?;
        check_id("ticket_id", &self.ticket_id)?;
        check_level("level", &self.level)?;
        let activity_ok = self.activity.len() <= 32
            && self.activity.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .activity
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !activity_ok {
            return Err(Invalid::new(
                "activity",
                format!(
                    "expected [a-z][a-z0-9_-]{{0,31}} (e.g. remote, onsite, travel), got {:?}",
                    self.activity.chars().take(40).collect::<String>()
                ),
            ));
        }
        for (field, v, max) in [
            ("customer_id", self.customer_id.as_deref(), MAX_SHORT_TEXT),
            ("technician", Some(self.technician.as_str()), MAX_SHORT_TEXT),
            (
                "non_billable_reason",
                self.non_billable_reason.as_deref(),
                MAX_TITLE,
            ),
            ("visit_id", self.visit_id.as_deref(), MAX_SHORT_TEXT),
            ("note", self.note.as_deref(), MAX_NOTE),
        ] {
            check_len(field, v.unwrap_or_default(), max)?;
        }
        if self.minutes == 0 || self.minutes > 24 * 60 {
            return Err(Invalid::new(
                "minutes",
                format!("expected 1 to 1440 minutes, got {}", self.minutes),
            ));
        }
        if !self.billable
            && self
                .non_billable_reason
                .as_deref()
                .map(str::trim)
                .unwrap_or("")
                .is_empty()
        {
            return Err(Invalid::new(
                "non_billable_reason",
                "a reason is required when `billable` is false",
            ));
        }
        Ok(())
    }

    /// The billing period of the entry.
    pub fn period(&self) -> Period {
        Period::of(self.started_at)
    }
}

impl Ticket {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (field, v) in [
            ("source", &self.source),
            ("id", &self.id),
            ("title", &self.title),
        ] {
            if v.trim().is_empty() {
                return Err(Invalid::new(field, "must not be empty"));
            }
        }
        check_source(&self.source)?;
        check_id("id", &self.id)?;
        check_version(self.version)?;
        if let Some(level) = &self.level {
            check_level("level", level)?;
        }
        check_len("title", &self.title, MAX_TITLE)?;
        for (field, v) in [
            ("customer_id", &self.customer_id),
            ("organization_id", &self.organization_id),
            ("number", &self.number),
            ("classification", &self.classification),
            ("asset", &self.asset),
            ("branch", &self.branch),
            ("cost_centre", &self.cost_centre),
        ] {
            check_len(field, v.as_deref().unwrap_or_default(), MAX_SHORT_TEXT)?;
        }
        Ok(())
    }
}

/// Usage of a managed service in a period (quantity per SKU), billed at the contract's unit price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    pub source: String,
    pub id: String,
    pub version: i64,
    pub customer_id: String,
    /// The article/service, e.g. `M365-BP` or `BACKUP-GB`.
    pub sku: String,
    pub quantity: Decimal,
    pub period: Period,
}

impl UsageRecord {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (field, v) in [
            ("source", &self.source),
            ("id", &self.id),
            ("customer_id", &self.customer_id),
            ("sku", &self.sku),
        ] {
            if v.trim().is_empty() {
                return Err(Invalid::new(field, "must not be empty"));
            }
        }
        check_source(&self.source)?;
        check_id("id", &self.id)?;
        check_version(self.version)?;
        check_len("customer_id", &self.customer_id, MAX_SHORT_TEXT)?;
        check_len("sku", &self.sku, 64)?;
        if self.quantity.is_sign_negative() {
            return Err(Invalid::new("quantity", "must not be negative"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_uses_berlin_local_date() {
        // 31 March 23:30 UTC is already 1 April in Berlin (CEST).
        let t: DateTime<Utc> = "2026-03-31T22:30:00Z".parse().unwrap();
        assert_eq!(Period::of(t).to_string(), "2026-04");
        let p: Period = "2026-03".parse().unwrap();
        assert_eq!(p.start_utc().to_rfc3339(), "2026-02-28T23:00:00+00:00");
        assert_eq!(p.end_utc().to_rfc3339(), "2026-03-31T22:00:00+00:00");
        assert!(!p.contains(t));
        assert_eq!(p.last_day().to_string(), "2026-03-31");
        assert_eq!(
            "2026-12".parse::<Period>().unwrap().next().to_string(),
            "2027-01"
        );
        assert!("2026-13".parse::<Period>().is_err());
        assert!("26-1".parse::<Period>().is_err());
    }

    fn entry() -> TimeEntry {
        TimeEntry {
            source: "zammad".into(),
            id: "6".into(),
            version: 1,
            ticket_id: "50".into(),
            customer_id: None,
            technician: "c.miller".into(),
            level: "2nd".into(),
            activity: "remote".into(),
            started_at: "2026-05-04T08:00:00Z".parse().unwrap(),
            minutes: 15,
            billable: true,
            non_billable_reason: None,
            visit_id: None,
            note: None,
        }
    }

    #[test]
    fn non_billable_needs_a_reason() {
        let mut e = entry();
        assert!(e.validate().is_ok());
        e.billable = false;
        let err = e.validate().unwrap_err();
        assert_eq!(err.field, "non_billable_reason");
        e.non_billable_reason = Some("Kulanz".into());
        assert!(e.validate().is_ok());
        e.minutes = 0;
        assert_eq!(e.validate().unwrap_err().field, "minutes");
    }

    #[test]
    fn levels_versions_ids_and_lengths_are_checked() {
        type Change = fn(&mut TimeEntry);
        let cases: Vec<(Change, &str)> = vec![
            (|e| e.level = "99th".into(), "level"),
            (|e| e.version = -1, "version"),
            (|e| e.id = "x".repeat(129), "id"),
            (|e| e.ticket_id = "../etc".into(), "ticket_id"),
            (|e| e.source = "Lager".into(), "source"),
            (|e| e.source = "lager/../zammad".into(), "source"),
            (|e| e.activity = "Remote Work".into(), "activity"),
            (|e| e.note = Some("n".repeat(10_001)), "note"),
        ];
        for (change, field) in cases {
            let mut e = entry();
            change(&mut e);
            assert_eq!(e.validate().map_err(|i| i.field), Err(field.to_string()));
        }
        let d = Deletion {
            source: "zammad".into(),
            id: "1".into(),
            version: -1,
        };
        assert_eq!(d.validate().unwrap_err().field, "version");
        assert!(is_source_name("helpdesk-sample") && !is_source_name("a.b"));
    }
}
