//! A Zammad REST client (I/O only): token auth (`Authorization: Token token=…`), JSON, retries
//! with jittered exponential backoff on 429 (honouring `Retry-After`), 5xx and connection
//! errors; 401 and other 4xx are returned at once. Shapes follow Zammad's documented API
//! (`shared/reference/zammad-and-psa.md` §1).

use backon::BackoffBuilder;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZammadError {
    #[error("Zammad refused the token (401)")]
    Unauthorized,
    #[error("not found in Zammad: {0}")]
    NotFound(String),
    #[error("Zammad rejected the request ({status}): {body}")]
    Rejected { status: u16, body: String },
    #[error("Zammad unavailable: {0}")]
    Unavailable(String),
    #[error("not a Zammad id: {0}")]
    BadId(#[from] BadId),
}

/// A Zammad object id (ticket, organization): a positive integer that fits an `i64`. The only
/// thing the client puts into a URL path, so a path can never carry `..`, `/` or a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "u64")]
pub struct ZammadId(u64);

/// Why a value is not a [`ZammadId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a positive integer up to {}, got {shown}", i64::MAX)]
pub struct BadId {
    /// The refused value, shortened.
    pub shown: String,
}

impl ZammadId {
    /// The id if `n` is in 1..=i64::MAX.
    pub fn new(n: u64) -> Result<Self, BadId> {
        if n == 0 || n > i64::MAX as u64 {
            return Err(BadId {
                shown: n.to_string(),
            });
        }
        Ok(Self(n))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ZammadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for ZammadId {
    type Err = BadId;
    /// Decimal digits only (no sign, no fraction, no exponent, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadId {
            shown: format!("{:?}", s.chars().take(40).collect::<String>()),
        };
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Self::new(s.parse().map_err(|_| bad())?).map_err(|_| bad())
    }
}

impl TryFrom<serde_json::Value> for ZammadId {
    type Error = BadId;
    /// A JSON integer or a string of digits (Zammad sends both).
    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        match &v {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(u) => Self::new(u),
                None => Err(BadId {
                    shown: n.to_string().chars().take(40).collect(),
                }),
            },
            serde_json::Value::String(s) => s.parse(),
            other => Err(BadId {
                shown: other.to_string().chars().take(40).collect(),
            }),
        }
    }
}

impl From<ZammadId> for u64 {
    fn from(id: ZammadId) -> u64 {
        id.0
    }
}

impl ZammadError {
    /// Worth retrying later (the peer is down or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, ZammadError::Unavailable(_))
    }
}

/// A ticket as returned by create and search (the fields the hub uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRef {
    pub id: u64,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// `POST /api/v1/tickets` body (names are converted to ids by Zammad).
#[derive(Debug, Clone, Serialize)]
pub struct NewTicket {
    pub title: String,
    pub group: String,
    /// `guess:<email>` finds or creates the customer.
    pub customer_id: String,
    pub state: String,
    /// Comma-separated tags (the hub's reference goes here, for idempotent creation).
    pub tags: String,
    pub article: NewArticle,
}

impl NewTicket {
    /// An open ticket whose first article is an internal plain-text note; the customer is found
    /// or created by e-mail (`guess:`). `tags` is comma-separated.
    pub fn with_note(
        title: String,
        group: &str,
        customer_email: &str,
        tags: String,
        subject: String,
        body: String,
    ) -> Self {
        Self {
            title,
            group: group.to_string(),
            customer_id: format!("guess:{customer_email}"),
            state: "open".into(),
            tags,
            article: NewArticle {
                ticket_id: None,
                subject,
                body,
                content_type: "text/plain".into(),
                kind: "note".into(),
                internal: true,
                to: None,
                sender: None,
            },
        }
    }
}

/// An article: an internal note, or an e-mail to the customer.
#[derive(Debug, Clone, Serialize)]
pub struct NewArticle {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<u64>,
    pub subject: String,
    pub body: String,
    pub content_type: String,
    /// `note` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    pub internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// The client.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
    max_retries: usize,
}

impl Client {
    pub fn new(base_url: &str, token: SecretString) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            max_retries: 5,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ZammadError> {
        let mut delays = backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.max_retries)
            .build();
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header(
                    "Authorization",
                    format!("Token token={}", self.token.expose_secret()),
                );
            if let Some(b) = body {
                req = req.json(b);
            }
            let (err, retry_after) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    match status {
                        200..=299 => {
                            return serde_json::from_str(&text).map_err(|e| ZammadError::Rejected {
                                status,
                                body: format!("not JSON: {e}"),
                            })
                        }
                        401 => return Err(ZammadError::Unauthorized),
                        404 => return Err(ZammadError::NotFound(path.to_string())),
                        429 | 500..=599 => (
                            ZammadError::Unavailable(format!("{status} from {path}")),
                            retry_after,
                        ),
                        _ => {
                            return Err(ZammadError::Rejected {
                                status,
                                body: text.chars().take(500).collect(),
                            })
                        }
                    }
                }
                Err(e) => (ZammadError::Unavailable(e.to_string()), None),
            };
            match delays.next() {
                Some(d) => {
                    let wait = retry_after.unwrap_or(d).min(Duration::from_secs(60));
                    tracing::info!(path, error = %err, wait_ms = wait.as_millis() as u64, "Zammad call will be retried.");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(err),
            }
        }
    }

    /// Tickets matching a search query (`expand=true`: always an array of tickets).
    pub async fn search_tickets(&self, query: &str) -> Result<Vec<TicketRef>, ZammadError> {
        let q: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.:".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/tickets/search?query={q}&expand=true"),
                None,
            )
            .await?;
        // Tolerate both documented shapes: an array, or {"tickets": [...]} without expand.
        let arr = match v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(mut o) => match o.remove("tickets") {
                Some(serde_json::Value::Array(a)) => a,
                _ => vec![],
            },
            _ => vec![],
        };
        Ok(arr
            .into_iter()
            .filter_map(|t| serde_json::from_value(t).ok())
            .collect())
    }

    /// Creates a ticket.
    pub async fn create_ticket(&self, t: &NewTicket) -> Result<TicketRef, ZammadError> {
        let body = serde_json::to_value(t).map_err(|e| ZammadError::Rejected {
            status: 0,
            body: e.to_string(),
        })?;
        let v = self
            .call(reqwest::Method::POST, "/api/v1/tickets", Some(&body))
            .await?;
        serde_json::from_value(v).map_err(|e| ZammadError::Rejected {
            status: 201,
            body: e.to_string(),
        })
    }

    /// Adds an article to a ticket.
    pub async fn add_article(&self, a: &NewArticle) -> Result<u64, ZammadError> {
        let body = serde_json::to_value(a).map_err(|e| ZammadError::Rejected {
            status: 0,
            body: e.to_string(),
        })?;
        let v = self
            .call(
                reqwest::Method::POST,
                "/api/v1/ticket_articles",
                Some(&body),
            )
            .await?;
        v.get("id")
            .and_then(|i| i.as_u64())
            .ok_or(ZammadError::Rejected {
                status: 201,
                body: "article without id".into(),
            })
    }
}

impl Client {
    /// A ticket with name-resolved relations (`expand=true`).
    pub async fn get_ticket(&self, id: ZammadId) -> Result<serde_json::Value, ZammadError> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/tickets/{id}?expand=true"),
            None,
        )
        .await
    }

    /// One page of the global time-accounting list, oldest id first (`admin.time_accounting`).
    pub async fn time_accountings_page(
        &self,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<serde_json::Value>, ZammadError> {
        let path = format!(
            "/api/v1/time_accountings?sort_by=id&order_by=asc&page={page}&per_page={per_page}"
        );
        match self.call(reqwest::Method::GET, &path, None).await? {
            serde_json::Value::Array(a) => Ok(a),
            other => Err(ZammadError::Rejected {
                status: 200,
                body: format!("expected an array, got {other}"),
            }),
        }
    }

    /// Tickets updated at or after `since`, oldest first (`POST /api/v1/tickets/search` with a
    /// condition on `ticket.updated_at`: the SQL selector, no Elasticsearch needed), expanded.
    /// Zammad's `after (absolute)` is `>=` in SQL and `>` in the search index, so callers use
    /// an overlap window and keep the newest version.
    pub async fn tickets_updated_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<serde_json::Value>, ZammadError> {
        let body = serde_json::json!({
            "condition": {"ticket.updated_at": {
                "operator": "after (absolute)",
                "value": since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }},
            "expand": true,
            "page": page,
            "per_page": per_page,
            "sort_by": "updated_at",
            "order_by": "asc",
        });
        match self
            .call(reqwest::Method::POST, "/api/v1/tickets/search", Some(&body))
            .await?
        {
            serde_json::Value::Array(a) => Ok(a),
            serde_json::Value::Object(mut o) => match o.remove("tickets") {
                Some(serde_json::Value::Array(a)) if a.iter().all(|t| t.is_object()) => Ok(a),
                _ => Err(ZammadError::Rejected {
                    status: 200,
                    body: "ticket search without expanded tickets".into(),
                }),
            },
            other => Err(ZammadError::Rejected {
                status: 200,
                body: format!("expected an array, got {other}"),
            }),
        }
    }

    /// An organization (custom attributes appear as top-level keys).
    pub async fn get_organization(&self, id: ZammadId) -> Result<serde_json::Value, ZammadError> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/organizations/{id}"),
            None,
        )
        .await
    }

    /// The time accountings of a ticket.
    pub async fn ticket_time_accountings(
        &self,
        id: ZammadId,
    ) -> Result<Vec<serde_json::Value>, ZammadError> {
        match self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/tickets/{id}/time_accountings"),
                None,
            )
            .await?
        {
            serde_json::Value::Array(a) => Ok(a),
            other => Err(ZammadError::Rejected {
                status: 200,
                body: format!("expected an array, got {other}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_url_paths_are_positive_integers() {
        assert_eq!("42".parse::<ZammadId>().map(ZammadId::get), Ok(42));
        let max = i64::MAX.to_string();
        assert!(max.parse::<ZammadId>().is_ok());
        for bad in [
            "",
            "0",
            "-1",
            "1.5",
            "1e3",
            " 1",
            "../../etc/passwd",
            "9223372036854775808",
            "1000000000000000000000000000000",
        ] {
            assert!(bad.parse::<ZammadId>().is_err(), "{bad:?}");
        }
        let from_json = |v: serde_json::Value| serde_json::from_value::<ZammadId>(v);
        assert_eq!(
            from_json(serde_json::json!(7)).map(ZammadId::get).ok(),
            Some(7)
        );
        assert_eq!(
            from_json(serde_json::json!("7")).map(ZammadId::get).ok(),
            Some(7)
        );
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(1e30),
            serde_json::json!(null),
            serde_json::json!("../x"),
        ] {
            assert!(from_json(bad.clone()).is_err(), "{bad}");
        }
    }
}
