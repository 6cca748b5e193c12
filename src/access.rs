//! Access control for the HTTP API: bearer tokens with roles.
//!
//! Roles: `admin` (configuration, master data, dead letters, tokens), `accounting` (invoice
//! runs, credit notes, exports), `intake:<source>` (one per posting system: may only post its
//! own documents), `viewer:<customer>` (read-only: that customer's contingents, assets and
//! service reports). Admin and accounting may read every customer's data; nobody but
//! accounting touches invoices (separation of duties: an admin cannot approve invoices).
//!
//! A token is `dkt_<id>_<secret>`; only SHA-256(secret) is stored, compared in constant time.
//! Every request looks the token up, so a revocation takes effect at once.
//! Missing or bad token → 401; a valid token without the permission (or for another customer)
//! → 403, decided before any object is looked up, so a 403 never tells whether it exists.

use crate::http::problem::Problem;
use crate::http::AppState;
use crate::store::{audit, tokens, Db};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match s.split_once(':') {
            None if s == "admin" => Ok(Role::Admin),
            None if s == "accounting" => Ok(Role::Accounting),
            Some(("intake", src)) if valid_name(src) => Ok(Role::Intake(src.to_string())),
            Some(("viewer", cust)) if valid_name(cust) => Ok(Role::Viewer(cust.to_string())),
            _ => Err(format!(
                "unknown role {s:?}: expected admin, accounting, intake:<source> or viewer:<customer> \
                 (names: letters, digits, - _ .)"
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
    /// Posting documents as this source system.
    Intake(&'a str),
    /// Reading this customer's data.
    ViewCustomer(&'a str),
}

impl Role {
    pub fn allows(&self, p: &Permission<'_>) -> bool {
        match (self, p) {
            (Role::Admin, Permission::Admin) => true,
            (Role::Accounting, Permission::Accounting) => true,
            (Role::Intake(mine), Permission::Intake(src)) => mine == src,
            (Role::Admin | Role::Accounting, Permission::ViewCustomer(_)) => true,
            (Role::Viewer(mine), Permission::ViewCustomer(c)) => mine == c,
            _ => false,
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
    /// `Ok` if the caller holds the permission, else a 403 problem.
    pub fn require(&self, p: Permission<'_>) -> Result<(), Problem> {
        if self.role.allows(&p) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("role `{}` may not do this", self.role),
            ))
        }
    }

    /// The audit actor name.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("expected `Authorization: Bearer <token>`"))?;
        verify(&state.db, token.trim())
            .await
            .map_err(|_| Problem::unavailable("token check failed; retry later"))?
            .ok_or_else(|| unauthorized("invalid or revoked token"))
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
            wh.allows(&Permission::Intake("warehouse"))
                && !wh.allows(&Permission::Intake("zammad"))
        );
        assert!(
            v.allows(&Permission::ViewCustomer("C-1001"))
                && !v.allows(&Permission::ViewCustomer("C-1002"))
        );
        assert!(!v.allows(&Permission::Admin) && !wh.allows(&Permission::ViewCustomer("C-1001")));
        assert_eq!(v.to_string(), "viewer:C-1001");
    }

    #[test]
    fn token_format() {
        let t = format!("dkt_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse_token(&t).is_some());
        assert!(parse_token("dkt_short_x").is_none());
        assert!(parse_token(&t.replace("dkt_", "xyz_")).is_none());
    }
}
