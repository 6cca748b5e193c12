//! Who is calling: the bearer token of a request, checked against the store
//! ([`crate::access::verify`]). Missing, malformed, unknown or revoked → 401 problem; whether
//! the caller may do what it asks is then decided by [`crate::access`].

use super::problem::Problem;
use super::AppState;
use crate::access::{verify, Caller};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

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
