//! A fake Zammad speaking the documented API: token auth, `POST /api/v1/tickets`,
//! `POST /api/v1/ticket_articles`, `GET /api/v1/tickets/search` (`expand=true`), 401 on a
//! wrong token, 429 with `Retry-After` on demand.
#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Fake {
    pub tickets: Mutex<Vec<Value>>,
    /// The request bodies of `POST /api/v1/tickets` (with the first article), in order.
    pub ticket_requests: Mutex<Vec<Value>>,
    pub articles: Mutex<Vec<Value>>,
    pub busy: AtomicUsize,
    /// `GET /api/v1/tickets/{id}` answers 502 this many times first.
    pub server_errors: AtomicUsize,
    /// Helpdesk tickets served by `GET /api/v1/tickets/{id}` and their time accountings.
    pub helpdesk_tickets: Mutex<HashMap<String, Value>>,
    pub accountings: Mutex<HashMap<String, Vec<Value>>>,
    /// The global time-accounting list (`GET /api/v1/time_accountings`).
    pub all_accountings: Mutex<Vec<Value>>,
    /// Organizations (`GET /api/v1/organizations/{id}`).
    pub organizations: Mutex<HashMap<String, Value>>,
    /// Every request received, as `METHOD path?query`, in order (routed or not).
    pub requests: Mutex<Vec<String>>,
}

/// Records each request in [`Fake::requests`].
async fn record(
    State(f): State<Arc<Fake>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default()
    );
    f.requests.lock().unwrap().push(line);
    next.run(req).await
}

async fn get_organization(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    match f.organizations.lock().unwrap().get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Couldn't find Organization"})),
        )
            .into_response(),
    }
}

async fn list_accountings(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    assert_eq!(q.get("sort_by").map(String::as_str), Some("id"));
    assert_eq!(q.get("order_by").map(String::as_str), Some("asc"));
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(500)
        .min(1000);
    let mut all = f.all_accountings.lock().unwrap().clone();
    all.sort_by_key(|a| a["id"].as_u64().unwrap_or(0));
    let slice: Vec<Value> = all.into_iter().skip((page - 1) * per).take(per).collect();
    Json(Value::Array(slice)).into_response()
}

async fn get_ticket(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    if f.server_errors.load(Ordering::SeqCst) > 0 {
        f.server_errors.fetch_sub(1, Ordering::SeqCst);
        return (
            StatusCode::BAD_GATEWAY,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response();
    }
    match f.helpdesk_tickets.lock().unwrap().get(&id) {
        Some(t) => Json(t.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Couldn't find Ticket"})),
        )
            .into_response(),
    }
}

async fn get_accountings(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    Json(Value::Array(
        f.accountings
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default(),
    ))
    .into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Token token=zammad-secret")
}

/// `POST /api/v1/tickets/search` with a condition on `ticket.updated_at` (`after (absolute)`,
/// which Zammad's SQL selector evaluates as `>=`), `sort_by=updated_at`, paginated, expanded.
async fn condition_search(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    let cond = &b["condition"]["ticket.updated_at"];
    assert_eq!(cond["operator"], "after (absolute)", "{b}");
    assert_eq!(b["expand"], true);
    assert_eq!(b["sort_by"], "updated_at");
    let since: chrono::DateTime<chrono::Utc> = cond["value"].as_str().unwrap().parse().unwrap();
    let page = b["page"].as_u64().unwrap_or(1).max(1) as usize;
    let per_page = b["per_page"].as_u64().unwrap_or(50).min(200) as usize;
    let mut hits: Vec<Value> = f
        .helpdesk_tickets
        .lock()
        .unwrap()
        .values()
        .filter(|t| {
            t["updated_at"]
                .as_str()
                .and_then(|u| u.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .is_some_and(|u| u >= since)
        })
        .cloned()
        .collect();
    hits.sort_by_key(|t| {
        (
            t["updated_at"].as_str().unwrap_or("").to_string(),
            t["id"].as_u64(),
        )
    });
    let out: Vec<Value> = hits
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Json(Value::Array(out)).into_response()
}

async fn search(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    assert_eq!(q.get("expand").map(String::as_str), Some("true"));
    let tag = q
        .get("query")
        .and_then(|x| x.strip_prefix("tags:"))
        .unwrap_or("")
        .to_string();
    let hits: Vec<Value> = f
        .tickets
        .lock()
        .unwrap()
        .iter()
        .filter(|t| {
            t["tags"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .any(|x| x == tag)
        })
        .cloned()
        .collect();
    Json(Value::Array(hits)).into_response()
}

async fn create_ticket(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    assert!(
        b["article"].is_object(),
        "an article is mandatory on ticket create"
    );
    f.ticket_requests.lock().unwrap().push(b.clone());
    let mut t = f.tickets.lock().unwrap();
    let id = 80 + t.len() as u64 + 1;
    let ticket = json!({"id": id, "number": format!("{}", 10000 + id), "title": b["title"], "group": b["group"],
        "customer": b["customer_id"], "tags": b["tags"], "state": "open", "article_ids": [id * 10], "ticket_time_accounting_ids": []});
    t.push(ticket.clone());
    (StatusCode::CREATED, Json(ticket)).into_response()
}

async fn create_article(
    State(f): State<Arc<Fake>>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> impl IntoResponse {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response();
    }
    if f.busy.load(Ordering::SeqCst) > 0 {
        f.busy.fetch_sub(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            "slow down",
        )
            .into_response();
    }
    let mut a = f.articles.lock().unwrap();
    let id = 500 + a.len() as u64;
    let mut article = b.clone();
    article["id"] = json!(id);
    a.push(article.clone());
    (StatusCode::CREATED, Json(article)).into_response()
}

pub async fn fake_zammad() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/api/v1/tickets/search", get(search).post(condition_search))
        .route("/api/v1/tickets", post(create_ticket))
        .route("/api/v1/ticket_articles", post(create_article))
        .route("/api/v1/tickets/{id}", get(get_ticket))
        .route("/api/v1/time_accountings", get(list_accountings))
        .route("/api/v1/organizations/{id}", get(get_organization))
        .route(
            "/api/v1/tickets/{id}/time_accountings",
            get(get_accountings),
        )
        .layer(axum::middleware::from_fn_with_state(fake.clone(), record))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), fake)
}
