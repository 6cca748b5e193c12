//! A simulated Zammad for `drehkreuz demo`: an in-process HTTP server on a loopback port that
//! speaks the subset of Zammad's REST API the hub uses, with Zammad's shapes
//! (Zammad REST API documentation): token auth (`Authorization: Token token=…`, 401
//! otherwise), `GET /api/v1/tickets/{id}?expand=true`, `GET /api/v1/tickets/{id}/time_accountings`,
//! `GET /api/v1/time_accountings` (paged, by id), `GET /api/v1/tickets/search?query=tags:…`,
//! `POST /api/v1/tickets/search` (condition on `ticket.updated_at`), `POST /api/v1/tickets`
//! (with its first article), `POST /api/v1/ticket_articles`, `GET /api/v1/organizations/{id}`.
//! Time units are decimal strings; a missing type is `type_id: null`. It keeps everything in
//! memory and hands it back for the demo's `helpdesk/` output. Not a test double for the hub's
//! tests (those have their own in `tests/support`), and never used outside the demo.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The token the demo hub uses.
pub const TOKEN: &str = "demo-zammad-token";

/// What the simulated Zammad holds.
#[derive(Default)]
pub struct Data {
    /// Tickets by id (expanded form).
    pub tickets: BTreeMap<u64, Value>,
    /// Time accountings by id.
    pub accountings: BTreeMap<u64, Value>,
    pub organizations: BTreeMap<u64, Value>,
    /// Articles by id.
    pub articles: BTreeMap<u64, Value>,
    /// Tags by ticket id.
    pub tags: BTreeMap<u64, Vec<String>>,
    next_id: u64,
}

impl Data {
    fn next(&mut self) -> u64 {
        self.next_id = self.next_id.max(1000) + 1;
        self.next_id
    }
}

/// A running simulated Zammad.
#[derive(Clone)]
pub struct SimulatedZammad {
    pub data: Arc<Mutex<Data>>,
    pub base_url: String,
}

type Shared = Arc<Mutex<Data>>;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn unauthorized(h: &HeaderMap) -> Option<Response> {
    let ok = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Token token={TOKEN}"));
    (!ok).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "authentication failed"})),
        )
            .into_response()
    })
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("Couldn't find {what}")})),
    )
        .into_response()
}

fn lock(d: &Shared) -> std::sync::MutexGuard<'_, Data> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

async fn get_ticket(State(d): State<Shared>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    match lock(&d).tickets.get(&id) {
        Some(t) => Json(t.clone()).into_response(),
        None => not_found("Ticket"),
    }
}

async fn ticket_accountings(
    State(d): State<Shared>,
    h: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let d = lock(&d);
    if !d.tickets.contains_key(&id) {
        return not_found("Ticket");
    }
    let list: Vec<Value> = d
        .accountings
        .values()
        .filter(|a| a["ticket_id"].as_u64() == Some(id))
        .cloned()
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn all_accountings(
    State(d): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(500)
        .clamp(1, 1000);
    let list: Vec<Value> = lock(&d)
        .accountings
        .values()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn tag_search(
    State(d): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let tag = q
        .get("query")
        .and_then(|x| x.strip_prefix("tags:"))
        .unwrap_or("");
    let d = lock(&d);
    let hits: Vec<Value> = d
        .tags
        .iter()
        .filter(|(_, tags)| tags.iter().any(|t| t == tag))
        .filter_map(|(id, _)| d.tickets.get(id).cloned())
        .collect();
    Json(Value::Array(hits)).into_response()
}

async fn condition_search(State(d): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let since = b["condition"]["ticket.updated_at"]["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let page = b["page"].as_u64().unwrap_or(1).max(1) as usize;
    let per_page = b["per_page"].as_u64().unwrap_or(50).clamp(1, 200) as usize;
    let mut hits: Vec<Value> = lock(&d)
        .tickets
        .values()
        .filter(|t| t["updated_at"].as_str().unwrap_or("") >= since.as_str())
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

async fn create_ticket(State(d): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    if b["title"].as_str().unwrap_or("").is_empty() || !b["article"].is_object() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "title and article are required"})),
        )
            .into_response();
    }
    let mut d = lock(&d);
    let id = d.next();
    let article_id = d.next();
    let at = now();
    let ticket = json!({
        "id": id, "number": format!("{}", 30000 + id), "title": b["title"], "group": b["group"],
        "customer": b["customer_id"], "state": b["state"], "created_at": at, "updated_at": at,
        "article_ids": [article_id], "ticket_time_accounting_ids": []
    });
    let mut article = b["article"].clone();
    article["id"] = json!(article_id);
    article["ticket_id"] = json!(id);
    article["created_at"] = json!(at);
    d.articles.insert(article_id, article);
    let tags: Vec<String> = b["tags"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    d.tags.insert(id, tags);
    d.tickets.insert(id, ticket.clone());
    (StatusCode::CREATED, Json(ticket)).into_response()
}

async fn create_article(State(d): State<Shared>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let mut d = lock(&d);
    let Some(ticket_id) = b["ticket_id"]
        .as_u64()
        .filter(|t| d.tickets.contains_key(t))
    else {
        return not_found("Ticket");
    };
    let id = d.next();
    let mut article = b.clone();
    article["id"] = json!(id);
    article["ticket_id"] = json!(ticket_id);
    article["created_at"] = json!(now());
    d.articles.insert(id, article.clone());
    (StatusCode::CREATED, Json(article)).into_response()
}

async fn get_organization(State(d): State<Shared>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    match lock(&d).organizations.get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => not_found("Organization"),
    }
}

impl SimulatedZammad {
    /// Starts the server on a free loopback port.
    pub async fn start(data: Data) -> anyhow::Result<Self> {
        let data: Shared = Arc::new(Mutex::new(data));
        let app = Router::new()
            .route(
                "/api/v1/tickets/search",
                get(tag_search).post(condition_search),
            )
            .route("/api/v1/tickets", post(create_ticket))
            .route("/api/v1/tickets/{id}", get(get_ticket))
            .route(
                "/api/v1/tickets/{id}/time_accountings",
                get(ticket_accountings),
            )
            .route("/api/v1/time_accountings", get(all_accountings))
            .route("/api/v1/ticket_articles", post(create_article))
            .route("/api/v1/organizations/{id}", get(get_organization))
            .with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { data, base_url })
    }

    /// The tickets the hub created (with their tags and articles), for the demo's output.
    pub fn created_tickets(&self) -> Vec<Value> {
        let d = lock(&self.data);
        d.tags
            .iter()
            .filter_map(|(id, tags)| {
                let t = d.tickets.get(id)?;
                let articles: Vec<&Value> = d
                    .articles
                    .values()
                    .filter(|a| a["ticket_id"].as_u64() == Some(*id))
                    .collect();
                Some(json!({"ticket": t, "tags": tags, "articles": articles}))
            })
            .collect()
    }
}
