//! The HTTP side of the hub (axum): health and readiness, Prometheus metrics, and the API.
//! Errors are RFC 9457 problem documents (`application/problem+json`). The OpenAPI 3.1
//! document is generated from the same handlers (utoipa) and served at `/api/openapi.json`,
//! so it lists exactly the routes the router has.

pub mod billing;
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
    r.layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
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
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": { "backend": st.db.backend.name(), "ok": store_ok },
        "bus": bus,
        "outbox_backlog": backlog,
    });
    if ready {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, problem::RETRY_AFTER_SECS)],
            Json(body),
        )
            .into_response()
    }
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
