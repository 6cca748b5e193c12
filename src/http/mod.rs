//! The HTTP side of the hub (axum): health and readiness, Prometheus metrics, and the API.
//! Errors are RFC 9457 problem documents (`application/problem+json`) — from the handlers, and
//! from the HTTP layer itself (unrouted paths, body limit, header limit, extractor rejections). The OpenAPI 3.1
//! document is generated from the same handlers (utoipa) and served at `/api/openapi.json`,
//! so it lists exactly the routes the router has.

pub mod billing;
pub mod caller;
pub mod deadletters;
pub mod events;
pub mod problem;
pub mod warehouse;
pub mod webhooks;

use crate::bus::Bus;
use crate::store::{outbox, Db};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio::sync::Notify;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub bus: Arc<dyn Bus>,
    pub relay_wakeup: Arc<Notify>,
    pub metrics: PrometheusHandle,
    /// The Zammad webhook's secret and source, when configured.
    pub zammad_webhook: Option<webhooks::ZammadWebhook>,
    /// Goods-receipt intake settings (body limit, per-source HMAC secrets).
    pub warehouse: Arc<crate::config::WarehouseSection>,
    /// The routing keys (topic patterns) the hub's consumers bind: an event type none of them
    /// matches is refused at the door.
    pub consumer_bindings: Arc<Vec<String>>,
}

impl AppState {
    /// Whether some consumer of this hub takes events of `event_type`.
    pub fn binds(&self, event_type: &str) -> bool {
        self.consumer_bindings
            .iter()
            .any(|pattern| crate::bus::topology::topic_matches(pattern, event_type))
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "drehkreuz",
        description = "Integration hub for IT service providers: ingress, dead letters, billing and more. \
                       Every /api route needs `Authorization: Bearer <token>`; errors are RFC 9457 problems."
    ),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API routes with their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(readyz))
        .merge(events::routes())
        .merge(deadletters::routes())
        .merge(billing::routes())
        .merge(webhooks::routes())
        .merge(warehouse::routes())
        .split_for_parts()
}

/// The API router (without `/metrics` when that has its own listener).
pub fn router(state: AppState, with_metrics: bool, body_limit: usize) -> Router {
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    let mut r = api.route(
        "/api/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    );
    if with_metrics {
        r = r.route("/metrics", get(metrics));
    }
    r.fallback(no_route)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            problem_bodies(req, next, body_limit)
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The most header bytes (names and values) a request may carry; more → 431 problem. (Beyond
/// hyper's own buffer, about 400 KiB or 100 headers, hyper answers 431 itself, without a body.)
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Unrouted paths: 404 as a problem document.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> problem::Problem {
    problem::Problem::not_found(format!(
        "no such endpoint: {method} {} (see /api/openapi.json)",
        uri.path().chars().take(200).collect::<String>()
    ))
}

/// Every error the HTTP layer answers on its own (the body limit's 413, an extractor's
/// 400/415/422, 405, a header block over [`MAX_HEADER_BYTES`] → 431) comes as an RFC 9457
/// problem document instead of `text/plain`; problems from the handlers pass unchanged.
async fn problem_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    body_limit: usize,
) -> Response {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return problem::Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request Header Fields Too Large",
            format!("the request headers take {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"),
        )
        .into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body exceeds the limit of {body_limit} bytes")
        }
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out =
        problem::Problem::new(status, status.canonical_reason().unwrap_or("Error"), detail)
            .into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// The `/metrics` router for a separate listener.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Object)))]
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the store answers and the bus is connected.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Store or bus not ready", body = Object)))]
async fn readyz(State(st): State<AppState>) -> Response {
    // Every probe is bounded: an unreachable store answers 503 within about a second.
    let store_ok = st.db.ping().await;
    let bus = st.bus.health();
    let backlog = if store_ok {
        tokio::time::timeout(crate::store::PING_TIMEOUT, outbox::backlog(&st.db))
            .await
            .ok()
            .and_then(|r| r.ok())
    } else {
        None
    };
    let ready = store_ok && bus.ready;
    if ready {
        let body = serde_json::json!({
            "status": "ready",
            "store": { "backend": st.db.backend.name(), "ok": store_ok },
            "bus": bus,
            "outbox_backlog": backlog,
        });
        return (StatusCode::OK, Json(body)).into_response();
    }
    // Not ready: an RFC 9457 problem whose extension members are the same readiness fields.
    let mut why = Vec::new();
    if !store_ok {
        why.push("the store does not answer");
    }
    if !bus.ready {
        why.push("the bus is not connected");
    }
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": format!("not ready: {}", why.join("; ")),
        "store": { "backend": st.db.backend.name(), "ok": store_ok },
        "bus": bus,
        "outbox_backlog": backlog,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, problem::RETRY_AFTER_SECS),
        ],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    if let Ok(n) = outbox::backlog(&st.db).await {
        crate::telemetry::outbox_backlog(n);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}
