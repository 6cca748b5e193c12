//! Configuration: one TOML file plus `DREHKREUZ_*` environment overrides.
//!
//! Every setting has a default, so `drehkreuz run` with no file at all starts on embedded
//! defaults (SQLite in `./data`, the embedded bus). Environment variables override the file:
//! nested keys as `DREHKREUZ_<SECTION>__<KEY>` (e.g. `DREHKREUZ_BUS__PREFETCH=100`) and the
//! well-known short names `DREHKREUZ_DATABASE_URL`, `DREHKREUZ_AMQP_URL`, `DREHKREUZ_DATA_DIR`,
//! `DREHKREUZ_HTTP_LISTEN`, `DREHKREUZ_METRICS_LISTEN`, `DREHKREUZ_LOG_FORMAT`.
//! Secrets (database and AMQP URLs, which carry passwords) are [`SecretString`]s: they are
//! never printed; [`Config::redacted`] renders the effective config for `config check`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The effective configuration of one hub process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub hub: HubSection,
    pub http: HttpSection,
    pub database: DatabaseSection,
    pub bus: BusSection,
    /// Scheduled jobs by name (`[schedule.<name>]`).
    pub schedule: BTreeMap<String, ScheduleSection>,
    /// DATEV settings from the tax advisor (`[datev]`), needed for DATEV exports.
    pub datev: Option<DatevSection>,
    /// Export targets fed by `invoice.finalized` (`[[export]]`).
    pub export: Vec<ExportTarget>,
    /// The Zammad helpdesk (`[zammad]`): write-back of notices.
    pub zammad: Option<ZammadSection>,
    /// Goods receipts and the asset registry (`[warehouse]`).
    pub warehouse: WarehouseSection,
    /// SAP IDoc control record and FI settings (`[sap]`), needed for the SAP exports.
    pub sap: Option<sap::SapSettings>,
}

/// Goods-receipt intake and the asset registry (`[warehouse]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseSection {
    /// Largest goods-receipt body accepted (default 2 MiB); larger → 413.
    pub body_limit_bytes: usize,
    /// Per posting system (`[warehouse.sources.<name>]`, the `<name>` of its `intake:<name>`
    /// token): an optional HMAC secret; when set, `X-Hub-Signature-256` is required.
    pub sources: BTreeMap<String, WarehouseSource>,
    /// Warranty in months when the document carries no warranty end, by manufacturer article
    /// number, supplier article number, GTIN or manufacturer name (first match wins).
    pub warranty_months: BTreeMap<String, u32>,
    /// Warranty months for articles not listed (none: no warranty end is derived).
    pub default_warranty_months: Option<u32>,
    /// Days before a warranty end or licence expiry at which reminders go out (default 60, 30).
    pub reminder_days: Vec<u32>,
    /// Zammad customer (e-mail) of the hub's internal tickets (pick & pack; reminders for
    /// customers without an account manager).
    pub ticket_customer: String,
    /// Zammad group of pick & pack tickets (default: the `[zammad]` group).
    pub pick_pack_group: Option<String>,
}

impl Default for WarehouseSection {
    fn default() -> Self {
        Self {
            body_limit_bytes: 2 * 1024 * 1024,
            sources: BTreeMap::new(),
            warranty_months: BTreeMap::new(),
            default_warranty_months: None,
            reminder_days: vec![60, 30],
            ticket_customer: "lager@localhost".into(),
            pick_pack_group: None,
        }
    }
}

/// One warehouse posting system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseSource {
    /// Shared secret for `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    pub hmac_secret: Option<SecretString>,
}

/// Where the helpdesk is and how the hub writes to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZammadSection {
    /// e.g. `https://helpdesk.example.com`.
    pub base_url: String,
    /// API token with `ticket.agent` (a secret: never printed or logged).
    pub token: SecretString,
    /// Group the hub's notice tickets go to.
    #[serde(default = "default_group")]
    pub group: String,
    /// HMAC-SHA1 secret of the Zammad webhook (`X-Hub-Signature`); no secret, no webhook.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// Source name of records from this Zammad (default `zammad`).
    #[serde(default = "default_zammad_source")]
    pub source: String,
    /// How Zammad's time accountings and tickets map to billing (`[zammad.mapping]`).
    #[serde(default)]
    pub mapping: zammad_mapping::MappingSettings,
}

fn default_zammad_source() -> String {
    "zammad".into()
}

fn default_group() -> String {
    "Service Desk".into()
}

/// A URL that may carry credentials (`scheme://user:password@host/…`): its `Debug`, `Display`
/// and `Serialize` print `scheme://user:***@host/…`, so it cannot leak through `config check`,
/// logs or error messages; [`SecretUrl::expose`] gives the real one to the code that connects.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    /// The URL with its credentials, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with the password (and any query secrets) replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
    /// The URL without userinfo, and the user and password it carried.
    pub fn split_credentials(&self) -> (String, Option<(String, Option<String>)>) {
        match reqwest::Url::parse(&self.0) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let user = percent_decode(u.username());
                let pass = u.password().map(percent_decode);
                let _ = u.set_username("");
                let _ = u.set_password(None);
                (u.to_string(), Some((user, pass)))
            }
            _ => (self.0.clone(), None),
        }
    }
    /// Whether the URL carries a user or password.
    pub fn has_credentials(&self) -> bool {
        self.split_credentials().1.is_some()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(Ok(b)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// A delivery target for finalized invoices: a directory drop with atomic writes, or an HTTP
/// endpoint the files are POSTed to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTarget {
    /// Name (also the consumer's queue: `export-<name>`).
    pub name: String,
    /// Formats to write: `datev-extf`, `datev-xml`, `sap-invoic02`, `sap-acc-document`,
    /// `xrechnung-ubl`, `xrechnung-cii`, `zugferd`.
    pub formats: Vec<String>,
    /// Directory the files are dropped into (this or `url`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// HTTP endpoint each file is POSTed to (this or `dir`). Credentials in it
    /// (`https://user:pass@host/…`) are sent as Basic auth — only when no `token` is set — and
    /// are never printed or logged ([`SecretUrl`]).
    #[serde(default)]
    pub url: Option<SecretUrl>,
    /// Bearer token for `url` (a secret: never printed).
    #[serde(default, skip_serializing)]
    pub token: Option<SecretString>,
    /// ZUGFeRD profile: `en16931` (default) or `xrechnung`.
    #[serde(default = "en16931")]
    pub zugferd_profile: String,
}

fn en16931() -> String {
    "en16931".into()
}

/// What the tax advisor gives for DATEV exports.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatevSection {
    /// Beraternummer (1001–9999999).
    pub consultant_number: u32,
    /// Mandantennummer (1–99999).
    pub client_number: u32,
    /// First day of the fiscal year as `MM-DD` (default `01-01`).
    #[serde(default = "jan_first")]
    pub fiscal_year_start: String,
    /// Sachkontenlänge (default 4).
    #[serde(default = "four")]
    pub account_length: u8,
    /// `skr03` (default) or `skr04`.
    #[serde(default = "skr03")]
    pub chart: datev::Chart,
}

fn jan_first() -> String {
    "01-01".into()
}
fn four() -> u8 {
    4
}
fn skr03() -> datev::Chart {
    datev::Chart::Skr03
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// Where the embedded SQLite database and other local state live.
    pub data_dir: PathBuf,
    /// Name of this process in logs, AMQP connection names and scheduler claims.
    pub instance: String,
    /// `text` (human-readable, default) or `json`.
    pub log_format: LogFormat,
    /// ANSI colours in text logs: `auto` (default: only when stderr, where logs go, is a
    /// terminal and `NO_COLOR` is unset), `always` or `never`.
    pub log_color: LogColor,
    /// How long graceful shutdown waits for in-flight work before giving up.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// When text logs carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    /// Colour only when stderr is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    Always,
    Never,
}

impl LogColor {
    /// Whether to write ANSI codes, given whether the log stream is a terminal.
    pub fn ansi(self, is_terminal: bool) -> bool {
        match self {
            LogColor::Always => true,
            LogColor::Never => false,
            LogColor::Auto => is_terminal && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address of the API, `/healthz`, `/readyz` (and `/metrics` unless bound separately).
    pub listen: String,
    /// Optional separate address for `/metrics`.
    pub metrics_listen: Option<String>,
    /// Largest accepted request body in bytes.
    pub body_limit_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite://…` or `postgres://…`; default: the SQLite file in `hub.data_dir`.
    pub url: Option<SecretString>,
    pub max_connections: u32,
    /// Longest wait for a pooled connection before a request fails (503) instead of hanging.
    pub acquire_timeout_ms: u64,
    /// Longest a single statement may run (PostgreSQL `statement_timeout`; 0: no limit).
    pub statement_timeout_ms: u64,
    /// How long a SQLite writer waits for the write lock (`PRAGMA busy_timeout`).
    pub busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Embedded,
    Rabbitmq,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSection {
    /// `embedded` or `rabbitmq`; default: `rabbitmq` when `amqp_url` is set, else `embedded`.
    pub kind: Option<BusKind>,
    /// `amqp://user:pass@host:5672/vhost` (a secret: it carries the password).
    pub amqp_url: Option<SecretString>,
    /// Prefix of every exchange and queue name (lets several hubs share one broker).
    pub prefix: String,
    /// Unacknowledged deliveries per consumer (AMQP prefetch / embedded batch size).
    pub prefetch: u16,
    /// Batches a consumer applies at the same time.
    pub concurrency: usize,
    /// Most messages a consumer applies in one database transaction.
    pub batch_size: usize,
    /// Outbox relay loops running side by side (their batches overlap the confirm waits).
    pub relay_workers: usize,
    /// Handler attempts before a message is dead-lettered (also the queues' `x-delivery-limit`).
    pub delivery_limit: u32,
    /// Retry delays in milliseconds, one per attempt; the last repeats. Exponential by default.
    pub retry_delays_ms: Vec<u64>,
    /// How often the embedded bus and the outbox relay poll when nothing woke them.
    pub poll_interval_ms: u64,
    /// Largest delay between reconnect attempts to the broker.
    pub reconnect_max_delay_ms: u64,
    /// How long a leased embedded-bus batch or claimed outbox batch stays invisible to other
    /// workers; renewed while the batch is worked, so only a crashed process's leases expire.
    pub lease_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    pub cron: String,
    /// Time zone the expression is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `false` switches the job off without deleting its section.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_timezone() -> String {
    "Europe/Berlin".into()
}
fn default_true() -> bool {
    true
}

impl Default for HubSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            instance: default_instance_name(),
            log_format: LogFormat::Text,
            log_color: LogColor::Auto,
            shutdown_grace_secs: 30,
        }
    }
}

fn default_instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hub".into());
    format!("{host}-{}", std::process::id())
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: None,
            body_limit_bytes: 2 * 1024 * 1024,
        }
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            acquire_timeout_ms: 3_000,
            statement_timeout_ms: 10_000,
            busy_timeout_ms: 5_000,
        }
    }
}

impl Default for BusSection {
    fn default() -> Self {
        Self {
            kind: None,
            amqp_url: None,
            prefix: "drehkreuz".into(),
            prefetch: 256,
            concurrency: 4,
            batch_size: 64,
            relay_workers: 4,
            delivery_limit: 6,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000],
            poll_interval_ms: 250,
            reconnect_max_delay_ms: 30_000,
            lease_ms: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut schedule = BTreeMap::new();
        // The monthly billing run: a preview of the previous month, 06:00 Berlin on the 1st.
        schedule.insert(
            "invoice_run".to_string(),
            ScheduleSection {
                cron: "0 0 6 1 * *".into(),
                timezone: default_timezone(),
                enabled: true,
            },
        );
        // Warranty and licence reminders: daily, 07:00 Berlin.
        schedule.insert(
            "asset_reminders".to_string(),
            ScheduleSection {
                cron: "0 0 7 * * *".into(),
                timezone: default_timezone(),
                enabled: true,
            },
        );
        schedule.insert(
            "housekeeping".to_string(),
            ScheduleSection {
                cron: "0 30 3 * * *".into(),
                timezone: default_timezone(),
                enabled: true,
            },
        );
        Self {
            hub: HubSection::default(),
            http: HttpSection::default(),
            database: DatabaseSection::default(),
            bus: BusSection::default(),
            schedule,
            datev: None,
            export: Vec::new(),
            zammad: None,
            warehouse: WarehouseSection::default(),
            sap: None,
        }
    }
}

/// Why the configuration could not be loaded; the message names the file, key and problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Environment variables with short names, mapped to their config keys.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("DREHKREUZ_DATABASE_URL", "database.url"),
    ("DREHKREUZ_AMQP_URL", "bus.amqp_url"),
    ("DREHKREUZ_BUS_KIND", "bus.kind"),
    ("DREHKREUZ_DATA_DIR", "hub.data_dir"),
    ("DREHKREUZ_INSTANCE", "hub.instance"),
    ("DREHKREUZ_LOG_FORMAT", "hub.log_format"),
    ("DREHKREUZ_LOG_COLOR", "hub.log_color"),
    ("DREHKREUZ_HTTP_LISTEN", "http.listen"),
    ("DREHKREUZ_METRICS_LISTEN", "http.metrics_listen"),
];

impl Config {
    /// Loads the file (if given) and applies the environment overrides, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        // The default schedules as the lowest layer: a configured `[schedule.<name>]` (file or
        // `DREHKREUZ_SCHEDULE__<NAME>__<KEY>`) replaces only its own keys; the other defaults,
        // the monthly invoice run included, stay. `enabled = false` switches one off.
        for (name, s) in Config::default().schedule {
            builder = builder
                .set_default(format!("schedule.{name}.cron"), s.cron)
                .and_then(|b| b.set_default(format!("schedule.{name}.timezone"), s.timezone))
                .and_then(|b| b.set_default(format!("schedule.{name}.enabled"), s.enabled))
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    reason: "file not found".into(),
                });
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("DREHKREUZ")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("bus.retry_delays_ms")
                .try_parsing(true)
                // the short aliases below are handled explicitly
                .source(Some(
                    std::env::vars().filter(|(k, _)| k.contains("__")).collect(),
                )),
        );
        for (var, key) in ENV_ALIASES {
            if let Ok(value) = std::env::var(var) {
                builder = builder
                    .set_override(*key, value)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            }
        }
        let raw = builder.build().map_err(|e| ConfigError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let cfg: Config = raw.try_deserialize().map_err(|e| match file {
            Some(p) => ConfigError::File {
                path: p.display().to_string(),
                reason: e.to_string(),
            },
            None => ConfigError::Invalid(e.to_string()),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("`{key}`: {why}")));
        if self.bus.delivery_limit == 0 {
            return bad("bus.delivery_limit", "must be at least 1");
        }
        if self.bus.retry_delays_ms.is_empty() {
            return bad("bus.retry_delays_ms", "needs at least one delay");
        }
        if self.bus.prefetch == 0 {
            return bad("bus.prefetch", "must be at least 1");
        }
        if self.bus.batch_size == 0 {
            return bad("bus.batch_size", "must be at least 1");
        }
        if self.bus.concurrency == 0 {
            return bad("bus.concurrency", "must be at least 1");
        }
        if self.bus.lease_ms < 1_000 {
            return bad("bus.lease_ms", "must be at least 1000");
        }
        if self.database.acquire_timeout_ms == 0 {
            return bad("database.acquire_timeout_ms", "must be at least 1");
        }
        if self.bus.prefix.trim().is_empty() {
            return bad("bus.prefix", "must not be empty");
        }
        if self.bus_kind() == BusKind::Rabbitmq && self.bus.amqp_url.is_none() {
            return bad(
                "bus.amqp_url",
                "is required when bus.kind = \"rabbitmq\" (or set DREHKREUZ_AMQP_URL)",
            );
        }
        if let Some(url) = &self.database.url {
            let u = url.expose_secret();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres:")
                || u.starts_with("postgresql:"))
            {
                return bad("database.url", "expected a sqlite:… or postgres://… URL");
            }
        }
        if let Some(url) = &self.bus.amqp_url {
            let u = url.expose_secret();
            if !(u.starts_with("amqp://") || u.starts_with("amqps://")) {
                return bad("bus.amqp_url", "expected an amqp://… or amqps://… URL");
            }
        }
        for (addr_key, addr) in [
            ("http.listen", Some(&self.http.listen)),
            ("http.metrics_listen", self.http.metrics_listen.as_ref()),
        ] {
            if let Some(a) = addr {
                if a.parse::<std::net::SocketAddr>().is_err() {
                    return bad(addr_key, "expected host:port, e.g. 127.0.0.1:8080");
                }
            }
        }
        for (i, t) in self.export.iter().enumerate() {
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid(format!(
                    "`export[{i}].name`: letters, digits, - and _ only"
                )));
            }
            for f in &t.formats {
                let format: crate::export::ExportFormat = f.parse().map_err(|e: String| {
                    ConfigError::Invalid(format!("`export[{i}].formats`: {e}"))
                })?;
                use crate::export::ExportFormat as F;
                if matches!(format, F::DatevExtf | F::DatevXml) && self.datev.is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "`export[{i}]`: {f} needs the `[datev]` section"
                    )));
                }
                if matches!(format, F::SapInvoic02 | F::SapAccDocument) && self.sap.is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "`export[{i}]`: {f} needs the `[sap]` section"
                    )));
                }
            }
            if let (Some(u), Some(_)) = (&t.url, &t.token) {
                if u.has_credentials() {
                    return Err(ConfigError::Invalid(format!(
                        "`export[{i}].url`: carries credentials and `token` is set too; give them once \
                         (the token as Bearer, or user:password in the URL as Basic auth)"
                    )));
                }
            }
            match (&t.dir, &t.url) {
                (Some(_), None) => {}
                (None, Some(u))
                    if u.expose().starts_with("http://") || u.expose().starts_with("https://") => {}
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid(format!(
                        "`export[{i}].url`: expected an http:// or https:// URL"
                    )))
                }
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "`export[{i}]`: give exactly one of `dir` or `url`"
                    )))
                }
            }
            if !matches!(t.zugferd_profile.as_str(), "en16931" | "xrechnung") {
                return Err(ConfigError::Invalid(format!(
                    "`export[{i}].zugferd_profile`: en16931 or xrechnung"
                )));
            }
        }
        if self.warehouse.body_limit_bytes < 1024 {
            return bad("warehouse.body_limit_bytes", "must be at least 1024");
        }
        if self
            .warehouse
            .reminder_days
            .iter()
            .any(|d| *d == 0 || *d > 3650)
        {
            return bad(
                "warehouse.reminder_days",
                "every window must be 1 to 3650 days",
            );
        }
        for name in self.warehouse.sources.keys() {
            if format!("intake:{name}")
                .parse::<crate::access::Role>()
                .is_err()
            {
                return bad(
                    &format!("warehouse.sources.{name}"),
                    "source names are letters, digits, - _ . (the name of an intake:<name> token)",
                );
            }
        }
        for (name, s) in &self.schedule {
            if let Err(e) = s.cron.parse::<cron::Schedule>() {
                return Err(ConfigError::Invalid(format!(
                    "`schedule.{name}.cron`: {e} (expected 6 or 7 fields: sec min hour day month weekday [year])"
                )));
            }
            if s.timezone.parse::<chrono_tz::Tz>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "`schedule.{name}.timezone`: unknown time zone {:?}",
                    s.timezone
                )));
            }
        }
        Ok(())
    }

    /// Which bus this process uses.
    pub fn bus_kind(&self) -> BusKind {
        self.bus.kind.unwrap_or(if self.bus.amqp_url.is_some() {
            BusKind::Rabbitmq
        } else {
            BusKind::Embedded
        })
    }

    /// The database URL in effect (the embedded SQLite file unless configured).
    pub fn database_url(&self) -> SecretString {
        match &self.database.url {
            Some(u) => u.clone(),
            None => {
                let path = self.hub.data_dir.join("drehkreuz.db");
                SecretString::from(format!("sqlite://{}?mode=rwc", path.display()))
            }
        }
    }

    pub fn retry_delay(&self, attempt: u32) -> Duration {
        retry_delay(&self.bus.retry_delays_ms, attempt)
    }

    /// The effective configuration as TOML with every secret replaced by `"***"`.
    pub fn redacted(&self) -> String {
        let value = serde_json::json!({
            "hub": self.hub,
            "http": self.http,
            "database": {
                "url": redact_url(self.database_url().expose_secret()),
                "max_connections": self.database.max_connections,
                "acquire_timeout_ms": self.database.acquire_timeout_ms,
                "statement_timeout_ms": self.database.statement_timeout_ms,
                "busy_timeout_ms": self.database.busy_timeout_ms,
            },
            "bus": {
                "kind": self.bus_kind(),
                "amqp_url": self.bus.amqp_url.as_ref().map(|u| redact_url(u.expose_secret())),
                "prefix": self.bus.prefix,
                "prefetch": self.bus.prefetch,
                "concurrency": self.bus.concurrency,
                "batch_size": self.bus.batch_size,
                "relay_workers": self.bus.relay_workers,
                "delivery_limit": self.bus.delivery_limit,
                "retry_delays_ms": self.bus.retry_delays_ms,
                "poll_interval_ms": self.bus.poll_interval_ms,
                "reconnect_max_delay_ms": self.bus.reconnect_max_delay_ms,
                "lease_ms": self.bus.lease_ms,
            },
            "schedule": self.schedule,
            "datev": self.datev,
            "export": self.export,
            "sap": self.sap,
            "zammad": self.zammad.as_ref().map(|z| serde_json::json!({
                "base_url": z.base_url, "token": "***", "group": z.group, "source": z.source,
                "webhook_secret": z.webhook_secret.as_ref().map(|_| "***"), "mapping": z.mapping,
            })),
            "warehouse": {
                "body_limit_bytes": self.warehouse.body_limit_bytes,
                "sources": self.warehouse.sources.iter().map(|(k, v)| (k.clone(), serde_json::json!({
                    "hmac_secret": v.hmac_secret.as_ref().map(|_| "***"),
                }))).collect::<serde_json::Map<_, _>>(),
                "warranty_months": self.warehouse.warranty_months,
                "default_warranty_months": self.warehouse.default_warranty_months,
                "reminder_days": self.warehouse.reminder_days,
                "ticket_customer": self.warehouse.ticket_customer,
                "pick_pack_group": self.warehouse.pick_pack_group,
            },
        });
        toml::to_string_pretty(&strip_nulls(value))
            .unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// The delay before retry number `attempt` (1-based): the configured tier, the last one repeating.
pub fn retry_delay(tiers_ms: &[u64], attempt: u32) -> Duration {
    let idx = (attempt.max(1) as usize - 1).min(tiers_ms.len().saturating_sub(1));
    Duration::from_millis(tiers_ms.get(idx).copied().unwrap_or(1_000))
}

/// A URL with its password replaced by `***` (`postgres://hub:***@db/hub`); a URL that does
/// not parse is replaced whole, since it might hide a secret anywhere. Query parameters named
/// like secrets (`password`, `token`, `secret`, `key`) are redacted too.
pub fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_string();
    }
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "***".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let k = k.into_owned();
                let secret = ["password", "pass", "token", "secret", "key"]
                    .iter()
                    .any(|w| k.to_ascii_lowercase().contains(w));
                (k, if secret { "***".into() } else { v.into_owned() })
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}
