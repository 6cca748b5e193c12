//! The warehouse connector end to end: goods receipts posted over HTTP (every sample in
//! `tests/fixtures/warehouse/`, hostile and broken inputs, idempotent repeats) → store →
//! bus → assets queryable per customer and exactly one pick & pack ticket at the fake Zammad;
//! warranty and licence reminders. On the embedded defaults and on PostgreSQL + RabbitMQ.

use crate::support;

use drehkreuz::config::{BusKind, Config, WarehouseSource, ZammadSection};
use drehkreuz::runtime::Hub;
use drehkreuz::store::Db;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "lager-secret";

/// A sample from `tests/fixtures/warehouse/`; a missing file fails with one line naming it.
fn sample(name: &str) -> Vec<u8> {
    support::prerequisites::read_fixture(&format!("tests/fixtures/warehouse/{name}"))
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Running {
    base: String,
    db: Db,
    fake: std::sync::Arc<support::fake_zammad::Fake>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    async fn token(&self, role: &str) -> String {
        drehkreuz::access::create_token(&self.db, role, &role.parse().unwrap(), "test")
            .await
            .unwrap()
            .token
    }
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
    async fn receipts(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM goods_receipts")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
    fn pick_pack_tickets(&self) -> Vec<Value> {
        self.fake
            .ticket_requests
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t["tags"].as_str().unwrap_or("").contains("pick-pack"))
            .cloned()
            .collect()
    }
    fn reminder_tickets(&self) -> Vec<Value> {
        self.fake
            .ticket_requests
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t["tags"].as_str().unwrap_or("").contains("-erinnerung"))
            .cloned()
            .collect()
    }
}

async fn start(mut cfg: Config, dir: Option<tempfile::TempDir>) -> Running {
    let (zammad_url, fake) = support::fake_zammad::fake_zammad().await;
    let (listener, base) = support::listener().await;
    cfg.bus.poll_interval_ms = 20;
    cfg.warehouse.body_limit_bytes = 64 * 1024;
    cfg.warehouse.sources.insert(
        "lager".into(),
        WarehouseSource {
            hmac_secret: Some(secrecy::SecretString::from(SECRET.to_string())),
        },
    );
    cfg.warehouse.ticket_customer = "lager@systemhaus.example".into();
    cfg.warehouse.warranty_months.insert("123003".into(), 36);
    cfg.zammad = Some(ZammadSection {
        base_url: zammad_url,
        token: secrecy::SecretString::from("zammad-secret".to_string()),
        group: "Service Desk".into(),
        webhook_secret: None,
        source: "zammad".into(),
        mapping: Default::default(),
    });
    let hub = Hub::build(cfg).await.unwrap();
    let db = hub.db.clone();
    drehkreuz::masterdata::import(
        &db,
        &drehkreuz::masterdata::MasterData::from_toml(include_str!(
            "../../docs/examples/master-data.toml"
        ))
        .unwrap(),
        "t",
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { hub.run_with_listeners(listener, None, s).await });
    support::eventually(Duration::from_secs(20), "hub up", || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    Running {
        base,
        db,
        fake,
        stop,
        task,
        _dir: dir,
    }
}

async fn post(
    hub: &Running,
    token: &str,
    body: &[u8],
    content_type: Option<&str>,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = reqwest::Client::new()
        .post(hub.url("/api/v1/goods-receipts"))
        .bearer_auth(token)
        .header("X-Hub-Signature-256", sign(body))
        .body(body.to_vec());
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    if status >= 400 {
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/problem+json",
            "a {status} comes as a problem document"
        );
    }
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

async fn assets(hub: &Running, token: &str, customer: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(hub.url(&format!("/api/v1/customers/{customer}/assets")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn register_order(hub: &Running, token: &str, order: &str, customer: &str) -> u16 {
    reqwest::Client::new()
        .put(hub.url(&format!("/api/v1/purchase-orders/{order}")))
        .bearer_auth(token)
        .json(&json!({ "customer_id": customer }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The primary flow: the ITscope dispatch notification → 6 assets + one pick & pack ticket.
async fn itscope_flow(hub: &Running) {
    let lager = hub.token("intake:lager").await;
    let viewer = hub.token("viewer:C-1001").await;
    let other_viewer = hub.token("viewer:C-1002").await;
    assert_eq!(
        register_order(hub, &lager, "GWAHJV-160131-1470", "C-1001").await,
        200
    );
    let doc = sample("opentrans21_dispatchnotification_itscope_serials.xml");
    let (status, body, headers) =
        post(hub, &lager, &doc, Some("application/xml"), Some("k-1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "lager:39076516");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["customer_id"], "C-1001");
    assert_eq!(
        (body["lines"].as_u64(), body["serials"].as_u64()),
        (Some(3), Some(6))
    );
    assert_eq!(
        headers.get("location").unwrap(),
        "/api/v1/goods-receipts/lager:39076516"
    );

    // A repeat with the same key answers as the first time; the same document again is 200.
    let (s2, b2, h2) = post(hub, &lager, &doc, Some("application/xml"), Some("k-1")).await;
    assert_eq!((s2, &b2), (201, &body));
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    let (s3, b3, _) = post(hub, &lager, &doc, None, None).await;
    assert_eq!((s3, b3["id"].as_str()), (200, Some("lager:39076516")));
    // The same key with another body is refused.
    let other = String::from_utf8(doc.clone())
        .unwrap()
        .replace("39076516", "39076517");
    let (s4, b4, _) = post(hub, &lager, other.as_bytes(), None, Some("k-1")).await;
    assert_eq!((s4, b4["field"].as_str()), (422, Some("Idempotency-Key")));
    // The same document number with other content is a conflict.
    let changed = String::from_utf8(doc.clone())
        .unwrap()
        .replace("123002-001", "123002-999");
    let (s5, _, _) = post(hub, &lager, changed.as_bytes(), None, None).await;
    assert_eq!(s5, 409);
    assert_eq!(hub.receipts().await, 1, "nothing else was stored");

    support::eventually(Duration::from_secs(30), "6 assets registered", || async {
        assets(hub, &viewer, "C-1001").await.1["assets"]
            .as_array()
            .is_some_and(|a| a.len() == 6)
    })
    .await;
    let (_, list) = assets(hub, &viewer, "C-1001").await;
    let serials: Vec<&str> = list["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["serial_number"].as_str().unwrap())
        .collect();
    for s in [
        "123002-001",
        "123001-001",
        "123001-002",
        "123003-001",
        "123003-002",
        "123003-003",
    ] {
        assert!(serials.contains(&s), "{s} in {serials:?}");
    }
    let monitor = list["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["serial_number"] == "123003-001")
        .unwrap();
    assert_eq!(
        monitor["warranty_end"], "2019-01-31",
        "36 configured months from the delivery (2016-01-31)"
    );
    assert_eq!(monitor["gtin"], "8806085923805");
    // The viewer of another customer sees nothing of C-1001's assets.
    assert_eq!(assets(hub, &other_viewer, "C-1001").await.0, 403);

    support::eventually(Duration::from_secs(30), "pick & pack ticket", || async {
        hub.pick_pack_tickets().len() == 1
    })
    .await;
    // Redeliveries within a window do not open a second ticket.
    support::consistently(
        Duration::from_millis(500),
        "exactly one pick & pack ticket",
        || async { hub.pick_pack_tickets().len() == 1 },
    )
    .await;
    let tickets = hub.pick_pack_tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let text = tickets[0]["article"]["body"].as_str().unwrap();
    for s in [
        "123002-001",
        "123001-002",
        "123003-003",
        "GWAHJV-160131-1470",
        "Müller & Söhne",
    ] {
        assert!(text.contains(s), "{s} in {text}");
    }
    assert_eq!(tickets[0]["customer_id"], "guess:lager@systemhaus.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goods_receipts_end_to_end_on_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.schedule.clear();
    let hub = start(cfg, Some(dir)).await;
    itscope_flow(&hub).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goods_receipts_end_to_end_on_postgres_and_rabbitmq() {
    let Some(vhost) = support::rabbit_vhost().await else {
        return;
    };
    let Some((_db, url, _pg)) = support::fresh_pg().await else {
        return;
    };
    let mut cfg = support::test_config(BusKind::Rabbitmq, &url);
    vhost.configure(&mut cfg);
    let cleanup = cfg.clone();
    let hub = start(cfg, None).await;
    itscope_flow(&hub).await;
    // Two identical posts at the same time store one receipt.
    let lager = hub.token("intake:lager").await;
    let doc = sample("edifact_d96a_desadv_it_serials_AUTHORED.edi");
    let edi = String::from_utf8(doc)
        .unwrap()
        .replace("RFF+ON:PO-2025-0815'", "RFF+ON:GWAHJV-160131-1470'");
    let (a, b) = tokio::join!(
        post(&hub, &lager, edi.as_bytes(), None, None),
        post(&hub, &lager, edi.as_bytes(), None, None)
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [200, 201], "{a:?} {b:?}");
    assert_eq!(hub.receipts().await, 2);
    hub.stop().await;
    support::cleanup_rabbit(
        &cleanup,
        &[
            "asset-registry",
            "pick-pack",
            "asset-reminders",
            "work-intake",
            "contingent-ledger",
            "helpdesk-notify",
            "zammad-sync",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_format_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.schedule.clear();
    let hub = start(cfg, Some(dir)).await;
    let lager = hub.token("intake:lager").await;
    for (order, customer) in [
        ("PO-2025-0815", "C-1002"),
        ("ORD112", "C-1003"),
        ("6877871", "C-1004"),
    ] {
        assert_eq!(register_order(&hub, &lager, order, customer).await, 200);
    }
    for (name, ct, id, customer) in [
        (
            "opentrans21_dispatchnotification_itscope_serials.xml",
            "application/xml",
            "39076516",
            None,
        ),
        (
            "opentrans21_dispatchnotification_reference_sample.xml",
            "text/xml",
            "LA86",
            Some("C-1003"),
        ),
        (
            "edifact_d96a_desadv_it_serials_AUTHORED.edi",
            "application/EDIFACT",
            "LS-2025-004711",
            Some("C-1002"),
        ),
        (
            "edifact_d96a_recadv_it_serials_AUTHORED.edi",
            "application/octet-stream",
            "WE-2025-000123",
            Some("C-1002"),
        ),
        (
            "edifact_d96a_desadv_php-edifact.edi",
            "text/plain",
            "Y02197250",
            Some("C-1004"),
        ),
    ] {
        let (status, body, _) = post(&hub, &lager, &sample(name), Some(ct), None).await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!(body["receipt_id"], id, "{name}");
        assert_eq!(body["customer_id"].as_str(), customer, "{name}: {body}");
    }
    // The Latin-1 copy of the reference sample is the same document number with other bytes.
    let (status, _, _) = post(
        &hub,
        &lager,
        &sample("opentrans21_dispatchnotification_reference_sample_iso-8859-1.xml"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409);
    // The ITscope receipt found no customer: stored, on the review list; assigning releases it.
    let admin = hub.token("admin").await;
    let review = drehkreuz::store::review::list(&hub.db, false)
        .await
        .unwrap();
    assert!(
        review
            .iter()
            .any(|r| r.kind == "unresolved_goods_receipt" && r.record_id == "lager:39076516"),
        "{review:?}"
    );
    let r = reqwest::Client::new()
        .post(hub.url("/api/v1/goods-receipts/lager:39076516/assign"))
        .bearer_auth(&admin)
        .json(&json!({"customer_id": "C-1005"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    support::eventually(
        Duration::from_secs(30),
        "assets after assignment",
        || async {
            assets(&hub, &admin, "C-1005").await.1["assets"]
                .as_array()
                .is_some_and(|a| a.len() == 6)
        },
    )
    .await;
    // The EDIFACT licence line became an asset with its expiry.
    support::eventually(Duration::from_secs(30), "licence asset", || async {
        assets(&hub, &admin, "C-1002").await.1["assets"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["licence_expiry"] == "2026-01-14"))
    })
    .await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hostile_and_unauthorized_input_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.schedule.clear();
    let hub = start(cfg, Some(dir)).await;
    let lager = hub.token("intake:lager").await;
    let good = String::from_utf8(sample(
        "opentrans21_dispatchnotification_itscope_serials.xml",
    ))
    .unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("broken XML", good[..good.len() / 2].to_string(), 400, ""),
        (
            "entity expansion",
            r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><DISPATCHNOTIFICATION>&b;</DISPATCHNOTIFICATION>"#.into(),
            400,
            "/!DOCTYPE",
        ),
        (
            "external entity",
            r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><DISPATCHNOTIFICATION>&x;</DISPATCHNOTIFICATION>"#.into(),
            400,
            "/!DOCTYPE",
        ),
        ("wrong count", good.replace("<QUANTITY>2.0</QUANTITY>", "<QUANTITY>3.0</QUANTITY>"), 422, "lines/1/units"),
        ("duplicate serials", good.replace("123001-002", "123001-001"), 422, "lines/1/units"),
        ("not a receipt", "%PDF-1.7".into(), 415, ""),
        (
            "unknown customer",
            json!({"receipt": {"receipt_id": "WE-1", "end_customer": {"customer_id": "NOPE"},
                   "lines": [{"line_id": "1", "quantity": 1, "units": [{"serial_number": "S1"}]}]}})
            .to_string(),
            422,
            "/receipt/end_customer/customer_id",
        ),
    ];
    assert!(good.contains("<QUANTITY>2.0</QUANTITY>"));
    for (what, body, status, field) in cases {
        let (s, p, _) = post(&hub, &lager, body.as_bytes(), None, None).await;
        assert_eq!(s, status, "{what}: {p}");
        if !field.is_empty() {
            assert_eq!(p["field"], field, "{what}: {p}");
        }
        assert!(
            !p["detail"].as_str().unwrap_or("").is_empty(),
            "{what}: {p}"
        );
    }
    // Oversize body: 413 with a problem body.
    let big = format!("{{\"receipt\": \"{}\"}}", "x".repeat(70 * 1024));
    let (s, p, _) = post(&hub, &lager, big.as_bytes(), Some("application/json"), None).await;
    assert_eq!(s, 413, "{p}");
    // Bad and missing signature: 401.
    let c = reqwest::Client::new();
    for sig in [Some("sha256=00"), None] {
        let mut r = c
            .post(hub.url("/api/v1/goods-receipts"))
            .bearer_auth(&lager)
            .body(good.clone());
        if let Some(s) = sig {
            r = r.header("X-Hub-Signature-256", s);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["field"], "X-Hub-Signature-256");
    }
    // Roles: no token 401; a viewer or accounting may not post; another source may not read.
    let r = c
        .post(hub.url("/api/v1/goods-receipts"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for role in ["viewer:C-1001", "accounting"] {
        let t = hub.token(role).await;
        let (s, _, _) = post(&hub, &t, good.as_bytes(), None, None).await;
        assert_eq!(s, 403, "{role}");
    }
    assert_eq!(hub.receipts().await, 0, "nothing was stored");
    // A source without a secret needs no signature; its receipts are its own.
    let shop = hub.token("intake:shop").await;
    let r = c
        .post(hub.url("/api/v1/goods-receipts"))
        .bearer_auth(&shop)
        .header("content-type", "application/json")
        .body(
            json!({"receipt": {"receipt_id": "WE-7", "end_customer": {"customer_id": "C-1001"},
                   "lines": [{"line_id": "1", "quantity": 1, "units": [{"serial_number": "S7"}]}]}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let get = |t: String| {
        let c = c.clone();
        let u = hub.url("/api/v1/goods-receipts/shop:WE-7");
        async move {
            c.get(u)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(shop.clone()).await, 200);
    assert_eq!(get(lager.clone()).await, 403);
    assert_eq!(get(hub.token("viewer:C-1001").await).await, 403);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warranty_ending_in_30_days_gives_exactly_one_reminder_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.schedule.clear();
    let hub = start(cfg, Some(dir)).await;
    let lager = hub.token("intake:lager").await;
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive();
    let in_30 = today + chrono::Duration::days(30);
    let in_45 = today + chrono::Duration::days(45);
    let body = json!({
        "event_type": "goods_receipt.completed",
        "receipt": {
            "receipt_id": "WE-2026-0042",
            "end_customer": {"customer_id": "C-1001"},
            "lines": [
                {"line_id": "1", "supplier_pid": "NB-T14", "description": "Notebook", "quantity": 1,
                 "units": [{"serial_number": "PF-30", "warranty_end": in_30.to_string()}]},
                {"line_id": "2", "supplier_pid": "M365", "description": "Microsoft 365", "quantity": 1,
                 "units": [{"licence_key": "LIC-REF-1", "licence_expiry": in_45.to_string()}]}
            ]
        }
    })
    .to_string();
    let (s, b, _) = post(
        &hub,
        &lager,
        body.as_bytes(),
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    support::eventually(Duration::from_secs(30), "assets", || async {
        assets(&hub, &lager_admin(&hub).await, "C-1001").await.1["assets"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    let windows = [60, 30];
    // Today: the warranty (30 days) → one reminder for the 30-day window, not also one for 60;
    // the licence (45 days) → its 60-day reminder.
    assert_eq!(
        drehkreuz::warehouse::reminders::run_at(&hub.db, &windows, today)
            .await
            .unwrap(),
        2
    );
    // The same day again, and the next day: nothing new.
    assert_eq!(
        drehkreuz::warehouse::reminders::run_at(&hub.db, &windows, today)
            .await
            .unwrap(),
        0
    );
    let tomorrow = today + chrono::Duration::days(1);
    assert_eq!(
        drehkreuz::warehouse::reminders::run_at(&hub.db, &windows, tomorrow)
            .await
            .unwrap(),
        0
    );
    support::eventually(Duration::from_secs(30), "two reminder tickets", || async {
        hub.reminder_tickets().len() == 2
    })
    .await;
    support::consistently(
        Duration::from_millis(500),
        "exactly two reminder tickets",
        || async { hub.reminder_tickets().len() == 2 },
    )
    .await;
    let tickets = hub.reminder_tickets();
    assert_eq!(tickets.len(), 2, "{tickets:?}");
    let warranty: Vec<&Value> = tickets
        .iter()
        .filter(|t| t["tags"].as_str().unwrap().contains("warranty-erinnerung"))
        .collect();
    assert_eq!(
        warranty.len(),
        1,
        "exactly one warranty reminder: {tickets:?}"
    );
    assert!(warranty[0]["article"]["body"]
        .as_str()
        .unwrap()
        .contains("PF-30"));
    assert_eq!(
        warranty[0]["customer_id"], "guess:j.berger@systemhaus.example",
        "for the account manager"
    );
    // 15 days on, the licence enters its 30-day window: one more reminder.
    let later = today + chrono::Duration::days(15);
    assert_eq!(
        drehkreuz::warehouse::reminders::run_at(&hub.db, &windows, later)
            .await
            .unwrap(),
        1
    );
    hub.stop().await;
}

async fn lager_admin(hub: &Running) -> String {
    hub.token("admin").await
}
