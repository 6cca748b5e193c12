//! Access control: who may do what. Bearer tokens with roles, the permissions endpoints ask
//! for, and the table of which event types each role may post ([`EVENT_TYPES`]).
//!
//! Roles: `admin` (configuration, master data, dead letters, tokens), `accounting` (invoice
//! runs, credit notes, exports), `intake:<source>` (one per posting system: may only post its
//! own work, receipts and signals), `viewer:<customer>` (read-only: that customer's
//! contingents, assets and service reports). Admin and accounting may read every customer's
//! data; nobody but accounting touches invoices (separation of duties: an admin cannot approve
//! invoices). Nobody — not even admin — may post an event type only the hub produces
//! (invoices, exports, ledger and threshold notices, assets, received goods).
//!
//! This module has no HTTP in it: access decides, the HTTP layer asks ([`Caller::require`]
//! returns an [`AccessError`], which `http::problem` turns into 403 or 422).
//!
//! A token is `dkt_<id>_<secret>`; only SHA-256(secret) is stored, compared in constant time.
//! Every request looks the token up, so a revocation takes effect at once.
//! Missing or bad token → 401; a valid token without the permission (or for another customer)
//! → 403, decided before any object is looked up, so a 403 never tells whether it exists.

use crate::store::{audit, tokens, Db};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The longest source-system name (the first segment of an event's `source`).
pub const MAX_SOURCE_NAME: usize = 64;

pub use canonical::work::is_source_name;

/// The source-system name of a CloudEvents `source` such as `/lager` or `/lager/site-1`: its
/// first segment. Every segment must be `[a-z0-9][a-z0-9_.-]{0,63}` without `..` (so
/// `/lager/../zammad`, `lager`, `/Lager` and `/lager//x` are refused).
pub fn source_system(source: &str) -> Result<&str, AccessError> {
    let bad = || AccessError::BadSource {
        given: source.chars().take(80).collect(),
    };
    let rest = source.strip_prefix('/').ok_or_else(bad)?;
    if rest.contains("..") || source.len() > 255 {
        return Err(bad());
    }
    let mut segments = rest.split('/');
    let system = segments
        .next()
        .filter(|s| is_source_name(s))
        .ok_or_else(bad)?;
    for seg in segments {
        let mut chars = seg.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
            && seg.len() <= MAX_SOURCE_NAME
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
        if !ok {
            return Err(bad());
        }
    }
    Ok(system)
}

/// Who produces an event type, and so who may post it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// A source system's own work (tickets, time entries, usage): `intake:<source>` for its own
    /// source, `admin` for any source. The payload's `source` must be the event's.
    SourceSystem,
    /// A signal from a source system: it says only *which* record changed, the hub fetches
    /// *what* from the system itself (e.g. Zammad). Same posters as [`Producer::SourceSystem`].
    Signal,
    /// Only the hub produces it, from its own store; nobody may post it.
    Hub,
}

/// Every event type the hub knows: who produces it. Posting any other type is refused (422);
/// posting a [`Producer::Hub`] type is forbidden (403) for every role.
///
/// Goods receipts are posted as documents (`POST /api/v1/goods-receipts`); the hub stores them
/// and then produces `goods_receipt.received` itself.
pub const EVENT_TYPES: &[(&str, Producer)] = &[
    ("ticket.created", Producer::SourceSystem),
    ("ticket.updated", Producer::SourceSystem),
    ("ticket.deleted", Producer::SourceSystem),
    ("time_entry.created", Producer::SourceSystem),
    ("time_entry.updated", Producer::SourceSystem),
    ("time_entry.deleted", Producer::SourceSystem),
    ("usage.recorded", Producer::SourceSystem),
    ("zammad.ticket_changed", Producer::Signal),
    ("work.recorded", Producer::Hub),
    ("contingent.threshold_crossed", Producer::Hub),
    ("budget.threshold_crossed", Producer::Hub),
    ("invoice.finalized", Producer::Hub),
    ("goods_receipt.received", Producer::Hub),
    ("asset.reminder_due", Producer::Hub),
];

/// Type prefixes reserved for the hub: an unknown type under one of them is forbidden (403),
/// not merely unknown, so `invoice.anything` or `export.anything` never reads as "try again".
pub const HUB_NAMESPACES: &[&str] = &[
    "invoice",
    "invoice_run",
    "credit_note",
    "export",
    "contingent",
    "budget",
    "ledger",
    "work",
    "asset",
    "goods_receipt",
    "dead_letter",
    "token",
    "hub",
    "drehkreuz",
];

/// Who produces `event_type`; `None` for a type the hub does not know.
pub fn producer_of(event_type: &str) -> Option<Producer> {
    EVENT_TYPES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, p)| *p)
        .or_else(|| {
            let ns = event_type.split('.').next().unwrap_or_default();
            HUB_NAMESPACES.contains(&ns).then_some(Producer::Hub)
        })
}

/// Why access was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The role may not do this (HTTP 403).
    #[error("role `{role}` may not {action}")]
    Forbidden { role: String, action: String },
    /// The event type is not one the hub knows (HTTP 422 on `type`).
    #[error("unknown event type {event_type:?}: expected one of {}", postable_types().join(", "))]
    UnknownEventType { event_type: String },
    /// The `source` is not `/<source>[/<segment>…]` (HTTP 422 on `source`).
    #[error("source {given:?} is not /<name>[/<segment>…] with names [a-z0-9][a-z0-9_-]{{0,63}} (no `..`)")]
    BadSource { given: String },
}

/// The event types a source system may post (for messages and documentation).
pub fn postable_types() -> Vec<&'static str> {
    EVENT_TYPES
        .iter()
        .filter(|(_, p)| *p != Producer::Hub)
        .map(|(t, _)| *t)
        .collect()
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Accounting,
    /// A posting system, e.g. `intake:warehouse`.
    Intake(String),
    /// Read-only access to one customer's data, e.g. `viewer:C-1001`.
    Viewer(String),
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => write!(f, "admin"),
            Role::Accounting => write!(f, "accounting"),
            Role::Intake(s) => write!(f, "intake:{s}"),
            Role::Viewer(c) => write!(f, "viewer:{c}"),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid_customer = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match s.split_once(':') {
            None if s == "admin" => Ok(Role::Admin),
            None if s == "accounting" => Ok(Role::Accounting),
            Some(("intake", src)) if is_source_name(src) => Ok(Role::Intake(src.to_string())),
            Some(("viewer", cust)) if valid_customer(cust) => Ok(Role::Viewer(cust.to_string())),
            _ => Err(format!(
                "unknown role {s:?}: expected admin, accounting, intake:<source> (source: \
                 [a-z0-9][a-z0-9_-]{{0,63}}) or viewer:<customer> (letters, digits, - _ .)"
            )),
        }
    }
}

/// What an endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission<'a> {
    /// Configuration, master data, dead letters, tokens.
    Admin,
    /// Invoice runs, credit notes, exports.
    Accounting,
    /// Posting one event of `event_type` with this CloudEvents `source` (see [`EVENT_TYPES`]).
    PostEvent {
        event_type: &'a str,
        source: &'a str,
    },
    /// Posting documents (goods receipts, purchase-order registrations) as a source system.
    PostDocuments,
    /// Reading or acting on the goods receipt `<source>:<document number>`.
    ReadReceipt(&'a str),
    /// Reading this customer's data.
    ViewCustomer(&'a str),
}

impl Role {
    /// Whether the role holds the permission; the error says why not.
    pub fn check(&self, p: &Permission<'_>) -> Result<(), AccessError> {
        let forbidden = |action: String| AccessError::Forbidden {
            role: self.to_string(),
            action,
        };
        match p {
            Permission::PostEvent { event_type, source } => {
                if !matches!(self, Role::Admin | Role::Intake(_)) {
                    return Err(forbidden("post events".into()));
                }
                let producer =
                    producer_of(event_type).ok_or_else(|| AccessError::UnknownEventType {
                        event_type: event_type.chars().take(80).collect(),
                    })?;
                if producer == Producer::Hub {
                    return Err(forbidden(format!(
                        "post `{event_type}` events: only the hub itself produces them"
                    )));
                }
                let system = source_system(source)?;
                match self {
                    Role::Admin => Ok(()),
                    Role::Intake(mine) if mine == system => Ok(()),
                    Role::Intake(_) => Err(forbidden(format!(
                        "post events from source {source:?} (only its own source)"
                    ))),
                    _ => Err(forbidden("post events".into())),
                }
            }
            _ if self.allows(p) => Ok(()),
            _ => Err(forbidden(match p {
                Permission::Admin => "do this (needs admin)".into(),
                Permission::Accounting => "do this (needs accounting)".into(),
                Permission::PostDocuments => {
                    "post documents (needs intake:<source> or admin)".into()
                }
                Permission::ReadReceipt(id) => format!("read goods receipt {id:?}"),
                Permission::ViewCustomer(c) => format!("read customer {c:?}"),
                Permission::PostEvent { .. } => "post events".into(),
            })),
        }
    }

    /// Whether the role holds the permission.
    pub fn allows(&self, p: &Permission<'_>) -> bool {
        match (self, p) {
            (_, Permission::PostEvent { .. }) => self.check(p).is_ok(),
            (Role::Admin, Permission::Admin) => true,
            (Role::Accounting, Permission::Accounting) => true,
            (Role::Admin | Role::Intake(_), Permission::PostDocuments) => true,
            (Role::Admin | Role::Accounting, Permission::ReadReceipt(_)) => true,
            (Role::Intake(mine), Permission::ReadReceipt(id)) => id
                .split_once(':')
                .is_some_and(|(src, _)| src == mine.as_str()),
            (Role::Admin | Role::Accounting, Permission::ViewCustomer(_)) => true,
            (Role::Viewer(mine), Permission::ViewCustomer(c)) => mine == c,
            _ => false,
        }
    }

    /// The source system this role posts documents as: its intake name; `admin` posts as
    /// `manual`. Other roles may not post.
    pub fn posting_source(&self) -> Result<&str, AccessError> {
        match self {
            Role::Intake(name) => Ok(name),
            Role::Admin => Ok("manual"),
            _ => Err(AccessError::Forbidden {
                role: self.to_string(),
                action: "post documents (needs intake:<source> or admin)".into(),
            }),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
}

impl Caller {
    /// `Ok` if the caller holds the permission, else why not.
    pub fn require(&self, p: Permission<'_>) -> Result<(), AccessError> {
        self.role.check(&p)
    }

    /// The source system this caller posts documents as (see [`Role::posting_source`]).
    pub fn posting_source(&self) -> Result<&str, AccessError> {
        self.role.posting_source()
    }

    /// The audit actor name.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

/// Checks a presented token; `None` if it is malformed, unknown, revoked or wrong.
pub async fn verify(db: &Db, presented: &str) -> Result<Option<Caller>, sqlx::Error> {
    let Some((id, secret)) = parse_token(presented) else {
        return Ok(None);
    };
    let stored = tokens::active(db, id).await?;
    let computed = hash_secret(secret);
    // Compare even when the id is unknown, so timing does not tell which part was wrong.
    let (role, expected) = stored.unwrap_or_else(|| (String::new(), "0".repeat(64)));
    let equal: bool = computed.as_bytes().ct_eq(expected.as_bytes()).into();
    if !equal || role.is_empty() {
        return Ok(None);
    }
    Ok(role.parse().ok().map(|role| Caller {
        token_id: id.to_string(),
        role,
    }))
}

fn parse_token(t: &str) -> Option<(&str, &str)> {
    let rest = t.strip_prefix("dkt_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && secret.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some((id, secret))
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A newly created token: its id and the full secret token (shown once).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NewToken {
    pub id: String,
    pub role: String,
    /// The bearer token. It is shown only now; store it in the posting system's secrets.
    pub token: String,
}

/// Creates a token (audited as `token.create` by `actor`).
pub async fn create_token(
    db: &Db,
    name: &str,
    role: &Role,
    actor: &str,
) -> Result<NewToken, sqlx::Error> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let mut tx = db.begin().await?;
    tokens::insert(
        &mut tx,
        &id,
        name,
        &role.to_string(),
        &hash_secret(&secret),
        actor,
    )
    .await?;
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "token.create",
            object: &format!("token:{id}"),
            before: None,
            after: Some(serde_json::json!({ "name": name, "role": role.to_string() })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(NewToken {
        token: format!("dkt_{id}_{secret}"),
        role: role.to_string(),
        id,
    })
}

/// Revokes a token (audited as `token.revoke`); `false` if no active token has that id.
pub async fn revoke_token(db: &Db, id: &str, actor: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let done = tokens::revoke(&mut tx, id).await?;
    if done {
        audit::record(
            &mut tx,
            &audit::AuditRecord {
                actor,
                action: "token.revoke",
                object: &format!("token:{id}"),
                before: Some(serde_json::json!({ "revoked": false })),
                after: Some(serde_json::json!({ "revoked": true })),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// The audit actor for command-line actions: `cli:<OS user>`.
pub fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_allow() {
        let admin: Role = "admin".parse().unwrap();
        let acc: Role = "accounting".parse().unwrap();
        let wh: Role = "intake:warehouse".parse().unwrap();
        let v: Role = "viewer:C-1001".parse().unwrap();
        assert!("intake:".parse::<Role>().is_err());
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("expected admin"));
        assert!(admin.allows(&Permission::Admin) && !admin.allows(&Permission::Accounting));
        assert!(acc.allows(&Permission::Accounting) && !acc.allows(&Permission::Admin));
        assert!(
            wh.allows(&Permission::ReadReceipt("warehouse:LS-1"))
                && !wh.allows(&Permission::ReadReceipt("zammad:LS-1"))
                && !wh.allows(&Permission::ReadReceipt("warehouse"))
        );
        assert!(wh.allows(&Permission::PostDocuments) && !v.allows(&Permission::PostDocuments));
        assert_eq!(wh.posting_source(), Ok("warehouse"));
        assert_eq!(admin.posting_source(), Ok("manual"));
        assert!(acc.posting_source().is_err());
        assert!("intake:Lager".parse::<Role>().is_err());
        assert!("intake:a.b".parse::<Role>().is_err());
        assert!(
            v.allows(&Permission::ViewCustomer("C-1001"))
                && !v.allows(&Permission::ViewCustomer("C-1002"))
        );
        assert!(!v.allows(&Permission::Admin) && !wh.allows(&Permission::ViewCustomer("C-1001")));
        assert_eq!(v.to_string(), "viewer:C-1001");
    }

    #[test]
    fn event_type_table_decides_who_posts_what() {
        let wh: Role = "intake:lager".parse().unwrap();
        let post = |role: &Role, t: &str, src: &str| {
            role.check(&Permission::PostEvent {
                event_type: t,
                source: src,
            })
        };
        assert_eq!(post(&wh, "time_entry.created", "/lager"), Ok(()));
        assert_eq!(post(&wh, "ticket.updated", "/lager/site-1.example"), Ok(()));
        assert_eq!(post(&Role::Admin, "usage.recorded", "/any"), Ok(()));
        for hub_only in [
            "invoice.finalized",
            "invoice.anything",
            "export.done",
            "work.recorded",
            "contingent.threshold_crossed",
            "budget.threshold_crossed",
            "budget.anything",
            "goods_receipt.received",
        ] {
            for role in [&wh, &Role::Admin] {
                assert!(
                    matches!(
                        post(role, hub_only, "/lager"),
                        Err(AccessError::Forbidden { .. })
                    ),
                    "{role} {hub_only}"
                );
            }
        }
        assert!(matches!(
            post(&wh, "nobody.listens", "/lager"),
            Err(AccessError::UnknownEventType { .. })
        ));
        assert!(matches!(
            post(&wh, "ticket.created", "/zammad"),
            Err(AccessError::Forbidden { .. })
        ));
        assert!(matches!(
            post(&Role::Accounting, "ticket.created", "/lager"),
            Err(AccessError::Forbidden { .. })
        ));
        for bad in [
            "/lager/../zammad",
            "lager",
            "/Lager",
            "/lager//x",
            "/",
            "/lager/..",
            "/la ger",
        ] {
            assert!(
                matches!(
                    post(&wh, "ticket.created", bad),
                    Err(AccessError::BadSource { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn token_format() {
        let t = format!("dkt_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse_token(&t).is_some());
        assert!(parse_token("dkt_short_x").is_none());
        assert!(parse_token(&t.replace("dkt_", "xyz_")).is_none());
    }
}
