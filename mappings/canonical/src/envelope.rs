//! The event envelope: CloudEvents 1.0 attributes around a JSON body of a canonical type.
//!
//! On RabbitMQ the attributes travel as AMQP properties and headers (`message_id` = `id`,
//! `type` = `type`, `timestamp` = `time`, headers `ce-source`, `ce-subject`), the body is the
//! JSON data. Event ids are deterministic: derived from the source system, the record id and the
//! record version, so a re-delivered webhook or a re-polled record yields the same id and the
//! consumers' inboxes drop the duplicate.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Namespace for the UUIDv5 event ids (fixed forever: changing it changes every id).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_bytes([
    0x6b, 0x1f, 0x3c, 0x52, 0x9a, 0x0e, 0x4d, 0x8a, 0x9f, 0x61, 0x0d, 0x2b, 0x7e, 0x44, 0xc1, 0x15,
]);

/// The CloudEvents spec version this envelope follows.
pub const SPEC_VERSION: &str = "1.0";

/// The deterministic id of an event about one version of one record of one source system.
///
/// The same `(source, record_id, version)` always gives the same id; any difference gives
/// another one. `event_type` is part of the name so that two different events about the same
/// record version (e.g. `ticket.updated` and `ticket.deleted`) do not collide.
pub fn event_id(source: &str, event_type: &str, record_id: &str, version: &str) -> String {
    // Length-prefix every part so that ("a:b", "c") and ("a", "b:c") cannot collide.
    let name = format!(
        "{}:{}|{}:{}|{}:{}|{}:{}",
        source.len(),
        source,
        event_type.len(),
        event_type,
        record_id.len(),
        record_id,
        version.len(),
        version
    );
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// A CloudEvents 1.0 event with a JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per source record version (see [`event_id`]); AMQP `message_id`.
    pub id: String,
    /// URI-reference of the producing system, e.g. `/zammad/helpdesk.example.com`.
    pub source: String,
    /// Event type and routing key, e.g. `time_entry.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The record the event is about, e.g. the time entry id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the change happened (UTC, microsecond precision).
    pub time: DateTime<Utc>,
    /// Always `application/json` for drehkreuz events.
    pub datacontenttype: String,
    /// Extension attributes (lower-case names), e.g. `traceparent`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
    /// The canonical record as JSON.
    pub data: serde_json::Value,
}

/// Why an envelope could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("event attribute `{0}` is missing or empty")]
    MissingAttribute(&'static str),
    #[error("event data is not valid JSON for {expected}: {reason}")]
    Data {
        expected: &'static str,
        reason: String,
    },
}

impl Envelope {
    /// A new event about one version of a record; the id is derived with [`event_id`].
    pub fn new<T: Serialize>(
        source: &str,
        event_type: &str,
        record_id: &str,
        version: &str,
        time: DateTime<Utc>,
        data: &T,
    ) -> Result<Self, EnvelopeError> {
        let data = serde_json::to_value(data).map_err(|e| EnvelopeError::Data {
            expected: "serializable record",
            reason: e.to_string(),
        })?;
        let env = Self {
            id: event_id(source, event_type, record_id, version),
            source: source.to_string(),
            event_type: event_type.to_string(),
            subject: Some(record_id.to_string()),
            time: time.trunc_subsecs(6),
            datacontenttype: "application/json".to_string(),
            extensions: BTreeMap::new(),
            data,
        };
        env.validate()?;
        Ok(env)
    }

    /// Checks the required CloudEvents attributes are present.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.id.trim().is_empty() {
            return Err(EnvelopeError::MissingAttribute("id"));
        }
        if self.source.trim().is_empty() {
            return Err(EnvelopeError::MissingAttribute("source"));
        }
        if self.event_type.trim().is_empty() {
            return Err(EnvelopeError::MissingAttribute("type"));
        }
        Ok(())
    }

    /// The body decoded as a canonical type; the error names the expected type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        serde_json::from_value(self.data.clone()).map_err(|e| EnvelopeError::Data {
            expected: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }

    /// The body as bytes (what goes on the wire).
    pub fn body_bytes(&self) -> Vec<u8> {
        // Serializing a `serde_json::Value` cannot fail.
        serde_json::to_vec(&self.data).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_deterministic_and_distinguishes_versions() {
        let a = event_id(
            "/zammad/x",
            "time_entry.created",
            "42",
            "2024-05-01T10:00:00Z",
        );
        let b = event_id(
            "/zammad/x",
            "time_entry.created",
            "42",
            "2024-05-01T10:00:00Z",
        );
        let c = event_id(
            "/zammad/x",
            "time_entry.created",
            "42",
            "2024-05-01T10:05:00Z",
        );
        let d = event_id(
            "/zammad/x",
            "time_entry.deleted",
            "42",
            "2024-05-01T10:00:00Z",
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(
            event_id("a:b", "t", "c", "1"),
            event_id("a", "t", "b:c", "1"),
            "length prefixes keep part boundaries"
        );
    }

    #[test]
    fn validate_names_the_missing_attribute() {
        let mut env = Envelope::new("/s", "t.created", "1", "1", Utc::now(), &1).unwrap();
        env.source = " ".into();
        let err = env.validate().unwrap_err().to_string();
        assert!(err.contains("`source`"), "{err}");
    }

    #[test]
    fn decode_names_expected_type() {
        let env = Envelope::new("/s", "t.created", "1", "1", Utc::now(), &"text").unwrap();
        let err = env.decode::<u32>().unwrap_err().to_string();
        assert!(err.contains("u32"), "{err}");
    }
}
