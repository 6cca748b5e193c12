//! Trust boundaries at the ingress (issue #17), through real HTTP against a running embedded
//! hub: who may post which event types, payload sources bound to the token, the shared ingress
//! checks (422 naming the field instead of a later dead letter), Zammad ticket ids that must be
//! positive integers before any outside call, forged hub facts that export nothing, and errors
//! of the HTTP layer itself (404, 405, 413, 431, 400) as RFC 9457 problems.

use crate::support;

use drehkreuz::access::{create_token, Role};
use drehkreuz::config::{Config, ExportTarget, ZammadSection};
use drehkreuz::runtime::Hub;
use drehkreuz::store::{deadletter, outbox, Db};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOOK_SECRET: &str = "hook-secret";

struct Running {
    base: String,
    db: Db,
    fake: Arc<support::fake_zammad::Fake>,
    exports: tempfile::TempDir,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// An embedded hub with a fake Zammad (signed webhook) and a directory export target.
async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let exports = tempfile::tempdir().unwrap();
    let (zammad_url, fake) = support::fake_zammad::fake_zammad().await;
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.bus.poll_interval_ms = 20;
    cfg.bus.retry_delays_ms = vec![100, 200];
    cfg.http.body_limit_bytes = 256 * 1024;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.http.listen = format!("127.0.0.1:{port}");
    cfg.zammad = Some(ZammadSection {
        base_url: zammad_url,
        token: secrecy::SecretString::from("zammad-secret".to_string()),
        group: "Service Desk".into(),
        webhook_secret: Some(secrecy::SecretString::from(HOOK_SECRET.to_string())),
        source: "zammad".into(),
        mapping: Default::default(),
    });
    cfg.export.push(ExportTarget {
        name: "einvoice".into(),
        formats: vec!["xrechnung-ubl".into()],
        dir: Some(exports.path().to_path_buf()),
        url: None,
        token: None,
        zugferd_profile: "en16931".into(),
    });
    let hub = Hub::build(cfg).await.unwrap();
    let db = hub.db.clone();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { hub.run(s).await });
    let base = format!("http://127.0.0.1:{port}");
    support::eventually(Duration::from_secs(10), "hub up", || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    Running {
        base,
        db,
        fake,
        exports,
        stop,
        task,
        _dir: dir,
    }
}

impl Running {
    async fn token(&self, role: &str) -> String {
        create_token(&self.db, role, &role.parse::<Role>().unwrap(), "test")
            .await
            .unwrap()
            .token
    }
    async fn post_events(&self, token: &str, body: &Value) -> (u16, Value) {
        problem_of(
            reqwest::Client::new()
                .post(format!("{}/api/v1/events", self.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
    async fn outbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Status and body; every error must be an RFC 9457 problem with the same status.
async fn problem_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if status >= 400 {
        assert_eq!(
            ct.as_deref(),
            Some("application/problem+json"),
            "{status}: {text}"
        );
        assert_eq!(body["status"], status, "{body}");
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
    }
    (status, body)
}

fn cloud_event(source: &str, kind: &str, id: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": source, "type": kind, "data": data})
}

fn time_entry(source: &str, id: &str, minutes: u32) -> Value {
    json!({
        "source": source, "id": id, "version": 2, "ticket_id": "T-1", "customer_id": null,
        "technician": "c.miller", "level": "2nd", "activity": "remote",
        "started_at": "2026-10-05T08:00:00Z", "minutes": minutes, "billable": true
    })
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_invoice_is_refused_at_the_door_and_exports_nothing_from_the_bus() {
    let hub = start().await;
    let lager = hub.token("intake:lager").await;
    let admin = hub.token("admin").await;
    let forged = json!({"number": "RE-FORGED-1", "seller": {"iban": "DE02500105170137075030"}});

    // At the door: no role may post what only the hub produces, not even admin.
    for (token, source) in [(&lager, "/lager"), (&admin, "/drehkreuz")] {
        for kind in [
            "invoice.finalized",
            "invoice.corrected",
            "export.delivered",
            "work.recorded",
            "contingent.threshold_crossed",
            "goods_receipt.received",
        ] {
            let (s, p) = hub
                .post_events(token, &cloud_event(source, kind, "f-1", forged.clone()))
                .await;
            assert_eq!(s, 403, "{kind}: {p}");
            assert!(
                p["detail"].as_str().unwrap().contains("only the hub"),
                "{p}"
            );
        }
    }
    assert_eq!(hub.outbox_rows().await, 0, "nothing was written");

    // On the bus (put there past the door): the export consumer reads the store, which has no
    // such invoice, so nothing is exported and the event is dead-lettered with the reason.
    let ev = canonical::Envelope::new(
        "/drehkreuz/billing",
        "invoice.finalized",
        "RE-FORGED-1",
        "1",
        chrono::Utc::now(),
        &forged,
    )
    .unwrap();
    outbox::enqueue_all(&hub.db, &[ev]).await.unwrap();
    let db = hub.db.clone();
    support::eventually(Duration::from_secs(15), "the dead letter", || {
        let db = db.clone();
        async move {
            deadletter::list(&db, Some("export-einvoice"), false, 10)
                .await
                .unwrap()
                .iter()
                .any(|d| d.reason.contains("unknown invoice"))
        }
    })
    .await;
    assert_eq!(
        std::fs::read_dir(hub.exports.path()).unwrap().count(),
        0,
        "no file exported"
    );
    let exported: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM export_ledger")
        .fetch_one(&hub.db.pool)
        .await
        .unwrap();
    assert_eq!(exported, 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_token_cannot_overwrite_another_sources_record() {
    let hub = start().await;
    let lager = hub.token("intake:lager").await;
    let zammad = hub.token("intake:zammad").await;
    // Zammad's own entry 77 (45 minutes).
    let (s, p) = hub
        .post_events(
            &zammad,
            &cloud_event(
                "/zammad",
                "time_entry.created",
                "z-77",
                time_entry("zammad", "77", 45),
            ),
        )
        .await;
    assert_eq!(s, 202, "{p}");
    let db = hub.db.clone();
    let minutes = || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT minutes FROM time_entries WHERE source = 'zammad' AND id = '77'",
            )
            .fetch_optional(&db.pool)
            .await
            .unwrap()
        }
    };
    support::eventually(Duration::from_secs(15), "entry 77 stored", || async {
        minutes().await == Some(45)
    })
    .await;

    // The lager token names zammad in the payload (or in the CloudEvents source).
    let mut forged = time_entry("zammad", "77", 999);
    forged["version"] = json!(99);
    let (s, p) = hub
        .post_events(
            &lager,
            &cloud_event("/lager", "time_entry.updated", "l-77", forged.clone()),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["field"], "/data/source", "{p}");
    for source in [
        "/zammad",
        "/lager/../zammad",
        "/lager/..",
        "lager",
        "/Lager",
    ] {
        let (s, p) = hub
            .post_events(
                &lager,
                &cloud_event(source, "time_entry.updated", "l-78", forged.clone()),
            )
            .await;
        assert!(s == 403 || s == 422, "{source}: {s} {p}");
        if s == 422 {
            assert_eq!(p["field"], "/source", "{p}");
        }
    }
    // A deletion naming another source is refused the same way.
    let (s, p) = hub
        .post_events(
            &lager,
            &cloud_event(
                "/lager",
                "time_entry.deleted",
                "l-79",
                json!({"source": "zammad", "id": "77", "version": 100}),
            ),
        )
        .await;
    assert_eq!((s, p["field"].clone()), (422, json!("/data/source")), "{p}");

    // Its own records it may post.
    let (s, p) = hub
        .post_events(
            &lager,
            &cloud_event(
                "/lager/site-1",
                "time_entry.created",
                "l-1",
                time_entry("lager", "1", 10),
            ),
        )
        .await;
    assert_eq!(s, 202, "{p}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(minutes().await, Some(45), "zammad's record is unchanged");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zammad_webhook_ticket_ids_must_be_positive_integers_before_any_outside_call() {
    let hub = start().await;
    let c = reqwest::Client::new();
    let url = format!("{}/webhooks/zammad", hub.base);
    let huge = "1".to_string() + &"0".repeat(30);
    let bad_ids = [
        json!("../../etc/passwd"),
        json!("70/../../x"),
        json!(-1),
        json!(0),
        json!(1.5),
        serde_json::from_str::<Value>(&huge).unwrap(),
        json!(huge),
        json!("12abc"),
        json!(" 70"),
        json!(true),
        json!({"id": 70}),
    ];
    for (n, id) in bad_ids.iter().enumerate() {
        let body = serde_json::to_vec(&json!({"ticket": {"id": id, "title": "x"}})).unwrap();
        let (s, p) = problem_of(
            c.post(&url)
                .header("X-Hub-Signature", sign(&body))
                .header("X-Zammad-Delivery", format!("bad-{n}"))
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 422, "{id}: {p}");
        assert_eq!(p["field"], "/ticket/id", "{p}");
    }
    assert_eq!(hub.outbox_rows().await, 0, "nothing stored");

    // A valid id is fetched: proof the fake would have seen the calls above.
    hub.fake.helpdesk_tickets.lock().unwrap().insert(
        "70".into(),
        json!({"id": 70, "title": "Backup", "organization_id": 11,
               "created_at": "2026-10-01T08:00:00Z", "updated_at": "2026-10-01T08:00:00Z"}),
    );
    hub.fake
        .accountings
        .lock()
        .unwrap()
        .insert("70".into(), vec![]);
    let body = serde_json::to_vec(&json!({"ticket": {"id": "70", "title": "Backup"}})).unwrap();
    let r = c
        .post(&url)
        .header("X-Hub-Signature", sign(&body))
        .header("X-Zammad-Delivery", "good-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let fake = hub.fake.clone();
    support::eventually(Duration::from_secs(15), "ticket 70 fetched", || {
        let fake = fake.clone();
        async move {
            fake.requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.starts_with("GET /api/v1/tickets/70"))
        }
    })
    .await;
    let seen = hub.fake.requests.lock().unwrap().clone();
    assert!(
        seen.iter().all(|r| r.contains("/tickets/70")),
        "only ticket 70 was asked for: {seen:?}"
    );
    // The same check guards `POST /api/v1/events`: a signal with a traversal id is refused.
    let zammad = hub.token("intake:zammad").await;
    let (s, p) = hub
        .post_events(
            &zammad,
            &cloud_event(
                "/zammad",
                "zammad.ticket_changed",
                "sig-1",
                json!({"ticket_id": "../../etc/passwd"}),
            ),
        )
        .await;
    assert_eq!(
        (s, p["field"].clone()),
        (422, json!("/data/ticket_id")),
        "{p}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ingress_payloads_are_refused_at_the_door_with_the_field() {
    let hub = start().await;
    let lager = hub.token("intake:lager").await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut e = time_entry("lager", "1", 10);
        change(&mut e);
        cloud_event("/lager", "time_entry.created", "e-1", e)
    };
    let long_id = "x".repeat(100_000);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown level",
            with(&|e| e["level"] = json!("99th")),
            "/data/level",
        ),
        (
            "negative version",
            with(&|e| e["version"] = json!(-1)),
            "/data/version",
        ),
        (
            "100k-character event id",
            {
                let mut ev = with(&|_| {});
                ev["id"] = json!(long_id);
                ev
            },
            "/id",
        ),
        (
            "record id too long",
            with(&|e| e["id"] = json!("y".repeat(200))),
            "/data/id",
        ),
        (
            "record id with a slash",
            with(&|e| e["ticket_id"] = json!("../T-1")),
            "/data/ticket_id",
        ),
        (
            "zero minutes",
            with(&|e| e["minutes"] = json!(0)),
            "/data/minutes",
        ),
        (
            "more than a day",
            with(&|e| e["minutes"] = json!(1441)),
            "/data/minutes",
        ),
        (
            "negative minutes",
            with(&|e| e["minutes"] = json!(-5)),
            "/data",
        ),
        (
            "non-billable without reason",
            with(&|e| e["billable"] = json!(false)),
            "/data/non_billable_reason",
        ),
        (
            "empty technician",
            with(&|e| e["technician"] = json!(" ")),
            "/data/technician",
        ),
        (
            "bad activity",
            with(&|e| e["activity"] = json!("Vor Ort!")),
            "/data/activity",
        ),
        (
            "note too long",
            with(&|e| e["note"] = json!("n".repeat(10_001))),
            "/data/note",
        ),
        ("unknown field", with(&|e| e["evil"] = json!(1)), "/data"),
        (
            "not an object",
            cloud_event("/lager", "time_entry.created", "e-2", json!([1])),
            "/data",
        ),
        (
            "ticket without title",
            cloud_event(
                "/lager",
                "ticket.created",
                "t-1",
                json!({"source": "lager", "id": "T-1", "version": 1, "title": ""}),
            ),
            "/data/title",
        ),
        (
            "ticket at an unknown level",
            cloud_event(
                "/lager",
                "ticket.updated",
                "t-2",
                json!({"source": "lager", "id": "T-1", "version": 1, "title": "x", "level": "4th"}),
            ),
            "/data/level",
        ),
        (
            "deletion with a negative version",
            cloud_event(
                "/lager",
                "ticket.deleted",
                "d-1",
                json!({"source": "lager", "id": "T-1", "version": -3}),
            ),
            "/data/version",
        ),
        (
            "negative usage",
            cloud_event(
                "/lager",
                "usage.recorded",
                "u-1",
                json!({"source": "lager", "id": "u1", "version": 1, "customer_id": "C-1001",
                       "sku": "BACKUP-GB", "quantity": "-1", "period": "2026-10"}),
            ),
            "/data/quantity",
        ),
        (
            "usage in a month that does not exist",
            cloud_event(
                "/lager",
                "usage.recorded",
                "u-2",
                json!({"source": "lager", "id": "u1", "version": 1, "customer_id": "C-1001",
                       "sku": "BACKUP-GB", "quantity": "1", "period": "2026-13"}),
            ),
            "/data",
        ),
        (
            "an event type nobody knows",
            cloud_event("/lager", "nobody.listens", "n-1", json!({})),
            "/type",
        ),
        (
            "a usage type no consumer handles",
            cloud_event("/lager", "usage.corrected", "n-2", json!({})),
            "/type",
        ),
    ];
    for (what, body, field) in &cases {
        let (s, p) = hub.post_events(&lager, body).await;
        assert_eq!(s, 422, "{what}: {p}");
        assert_eq!(p["field"], *field, "{what}: {p}");
    }
    // In a batch the pointer names the event; one bad event refuses the whole batch.
    let batch = json!([with(&|_| {}), with(&|e| e["level"] = json!("99th"))]);
    let (s, p) = hub.post_events(&lager, &batch).await;
    assert_eq!(
        (s, p["field"].clone()),
        (422, json!("/1/data/level")),
        "{p}"
    );
    assert_eq!(hub.outbox_rows().await, 0, "nothing was written");
    let dead = deadletter::list(&hub.db, None, false, 10).await.unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    // The valid one is accepted.
    let (s, p) = hub.post_events(&lager, &with(&|_| {})).await;
    assert_eq!(s, 202, "{p}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_http_layer_are_problem_documents() {
    let hub = start().await;
    let c = reqwest::Client::new();
    let lager = hub.token("intake:lager").await;
    let admin = hub.token("admin").await;

    // Unrouted path: 404 problem.
    let (s, p) = problem_of(
        c.get(format!("{}/no/such/path", hub.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        p["detail"].as_str().unwrap().contains("/no/such/path"),
        "{p}"
    );
    // Wrong method: 405 problem, Allow kept.
    let r = c
        .delete(format!("{}/api/v1/events", hub.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("allow"));
    assert_eq!(problem_of(r).await.0, 405);

    // Body over the limit (256 KiB here) on every endpoint that takes a body: 413 problem.
    let big = vec![b' '; 300 * 1024];
    for (method, path, token) in [
        ("POST", "/api/v1/events", &lager),
        ("POST", "/webhooks/zammad", &lager),
        ("POST", "/api/v1/goods-receipts/lager:1/assign", &admin),
        ("PUT", "/api/v1/purchase-orders/PO-1", &admin),
        ("POST", "/api/v1/invoice-runs", &admin),
        ("PUT", "/api/v1/master-data", &admin),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", hub.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let (s, p) = problem_of(r).await;
        assert_eq!(s, 413, "{method} {path}: {p}");
    }
    // The goods-receipt endpoint's own limit answers the same way.
    let r = c
        .post(format!("{}/api/v1/goods-receipts", hub.base))
        .bearer_auth(&lager)
        .header("content-type", "application/xml")
        .body(vec![b' '; 2 * 1024 * 1024 + 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(problem_of(r).await.0, 413);

    // Header block too large: 431 problem.
    let r = c
        .get(format!("{}/healthz", hub.base))
        .header("x-padding", "p".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(problem_of(r).await.0, 431);

    // Not JSON: 400 problem.
    let r = c
        .post(format!("{}/api/v1/events", hub.base))
        .bearer_auth(&lager)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(problem_of(r).await.0, 400);

    // An Idempotency-Key with non-ASCII bytes is refused, not ignored.
    let receipt = json!({"event_type": "goods_receipt.completed"});
    let r = c
        .post(format!("{}/api/v1/goods-receipts", hub.base))
        .bearer_auth(&lager)
        .header("content-type", "application/json")
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes("schlüssel-1".as_bytes()).unwrap(),
        )
        .body(receipt.to_string())
        .send()
        .await
        .unwrap();
    let (s, p) = problem_of(r).await;
    assert_eq!(
        (s, p["field"].clone()),
        (400, json!("Idempotency-Key")),
        "{p}"
    );

    // 500,000 self-closing elements exceed the 200,000-element limit: refused.
    let xml = format!(
        "<?xml version=\"1.0\"?><DISPATCHNOTIFICATION>{}</DISPATCHNOTIFICATION>",
        "<x/>".repeat(500_000)
    );
    let r = c
        .post(format!("{}/api/v1/goods-receipts", hub.base))
        .bearer_auth(&lager)
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    let (s, p) = problem_of(r).await;
    assert_eq!(s, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("200000 elements"),
        "{p}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_goods_receipts_and_reminders_on_the_bus_register_nothing_and_open_no_ticket() {
    let hub = start().await;
    let forged = canonical::goods::ReceivedGoods {
        id: "lager:FORGED-1".into(),
        source: "lager".into(),
        customer_id: "C-1001".into(),
        receipt: serde_json::from_value(json!({
            "receipt_id": "FORGED-1", "format": "hub_json", "supplier": {},
            "lines": [{"line_id": "1", "quantity": "1", "description": "Laptop",
                       "units": [{"serial_number": "SN-FORGED"}]}]
        }))
        .unwrap(),
    };
    let ev = drehkreuz::warehouse::receipts::received_event(
        &forged.id,
        &forged.source,
        &forged.customer_id,
        &forged.receipt,
    )
    .unwrap();
    // And a reminder for an asset nobody registered, addressed to someone else.
    let reminder = canonical::Envelope::new(
        "/warehouse/reminders",
        "asset.reminder_due",
        "asset-forged",
        "licence:2027-01-01:30",
        chrono::Utc::now(),
        &json!({
            "asset": {"id": "asset-forged", "customer_id": "C-1001", "receipt": "lager:FORGED-1",
                      "line_id": "1", "serial_number": "SN-FORGED"},
            "kind": "licence", "ends_on": "2027-01-01", "window_days": 30, "days_left": 30,
            "customer_name": "Mallory", "account_manager": {"name": "M", "email": "m@evil.example"}
        }),
    )
    .unwrap();
    outbox::enqueue_all(&hub.db, &[ev, reminder]).await.unwrap();
    let db = hub.db.clone();
    support::eventually(
        Duration::from_secs(15),
        "every consumer refuses them",
        || {
            let db = db.clone();
            async move {
                let dead = deadletter::list(&db, None, false, 10).await.unwrap();
                let refused = |consumer: &str, reason: &str| {
                    dead.iter()
                        .any(|d| d.consumer == consumer && d.reason.contains(reason))
                };
                refused("asset-registry", "unknown goods receipt")
                    && refused("pick-pack", "unknown goods receipt")
                    && refused("asset-reminders", "unknown asset reminder")
            }
        },
    )
    .await;
    let assets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assets")
        .fetch_one(&hub.db.pool)
        .await
        .unwrap();
    assert_eq!(assets, 0);
    assert!(
        hub.fake.tickets.lock().unwrap().is_empty(),
        "no ticket opened"
    );
    hub.stop().await;
}
