//! The HTTP side of the hub (axum): health and readiness, Prometheus metrics, and the ingress
//! API. Errors are RFC 9457 problem documents (`application/problem+json`).

pub mod events;
pub mod problem;

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
}

/// The API router (without `/metrics` when that has its own listener).
pub fn router(state: AppState, with_metrics: bool, body_limit: usize) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(events::routes());
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

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(st): State<AppState>) -> Response {
    let store_ok = st.db.ping().await;
    let bus = st.bus.health();
    let backlog = outbox::backlog(&st.db).await.ok();
    let ready = store_ok && bus.ready;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": { "backend": st.db.backend.name(), "ok": store_ok },
        "bus": bus,
        "outbox_backlog": backlog,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
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
