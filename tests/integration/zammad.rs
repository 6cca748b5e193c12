//! Zammad inbound end to end: a signed webhook → fetch through the API (fake Zammad) → bus →
//! intake → the entries appear in the invoice preview; wrong/missing signatures, duplicate
//! deliveries, an edited accounting and an unmapped type.

use crate::support;

use drehkreuz::config::{Config, ZammadSection};
use drehkreuz::runtime::Hub;
use hmac::{Hmac, Mac};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

fn accounting(
    id: u64,
    minutes: &str,
    type_id: serde_json::Value,
    updated: &str,
) -> serde_json::Value {
    json!({"id": id, "ticket_id": 50, "ticket_article_id": null, "time_unit": minutes, "type_id": type_id,
           "created_by_id": 3, "created_at": "2026-10-14T08:11:49.315Z", "updated_at": updated})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_to_invoice_preview() {
    let (zammad_url, fake) = support::fake_zammad::fake_zammad().await;
    fake.helpdesk_tickets.lock().unwrap().insert(
        "50".into(),
        json!({"id": 50, "number": "10050", "title": "Drucker druckt nicht", "organization_id": 12, "group": "Users",
               "state": "open", "created_at": "2026-10-14T08:00:00Z", "updated_at": "2026-10-14T08:12:00Z", "time_unit": "45.0"}),
    );
    fake.accountings.lock().unwrap().insert(
        "50".into(),
        vec![
            accounting(6, "15.0", json!(2), "2026-10-14T08:11:49Z"),
            accounting(7, "30.0", json!(null), "2026-10-14T08:12:02Z"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.bus.poll_interval_ms = 20;
    let (listener, base) = support::listener().await;
    let mut mapping = zammad_mapping::MappingSettings::default();
    mapping.types.insert(
        "2".into(),
        zammad_mapping::TypeMapping {
            level: "2nd".into(),
            activity: "remote".into(),
            billable: true,
            reason: None,
        },
    );
    cfg.zammad = Some(ZammadSection {
        base_url: zammad_url,
        token: secrecy::SecretString::from("zammad-secret".to_string()),
        group: "Service Desk".into(),
        webhook_secret: Some(secrecy::SecretString::from("hook-secret".to_string())),
        source: "zammad".into(),
        mapping,
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
    let url = format!("{base}/webhooks/zammad");
    support::eventually(Duration::from_secs(10), "up", || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    let c = reqwest::Client::new();
    let body = serde_json::to_vec(&json!({"ticket": {"id": 50, "title": "Drucker druckt nicht"}, "article": {"accounted_time": 0}})).unwrap();

    // Wrong and missing signatures: 401, nothing stored.
    let r = c
        .post(&url)
        .header("X-Hub-Signature", sign("other", &body))
        .header("X-Zammad-Delivery", "d-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .header("X-Zammad-Delivery", "d-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Signed: accepted; the same delivery again is a duplicate.
    let r = c
        .post(&url)
        .header("X-Hub-Signature", sign("hook-secret", &body))
        .header("X-Zammad-Delivery", "d-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .post(&url)
        .header("X-Hub-Signature", sign("hook-secret", &body))
        .header("X-Zammad-Delivery", "d-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["duplicate"],
        true
    );

    let minutes = |id: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT minutes FROM time_entries WHERE source = 'zammad' AND id = $1",
            )
            .bind(id)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
        }
    };
    support::eventually(
        Duration::from_secs(20),
        "both accountings stored",
        || async { minutes("6").await == Some(15) && minutes("7").await == Some(30) },
    )
    .await;
    let customer: Option<String> =
        sqlx::query_scalar("SELECT customer_id FROM time_entries WHERE id = '6'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        customer.as_deref(),
        Some("C-1002"),
        "organization 12 → customer C-1002"
    );

    // In the invoice preview: 15 min 2nd level (110 €/h) + 30 min 1st level (80 €/h), 15-min blocks.
    let preview =
        drehkreuz::billing::run::preview(&db, "2026-10".parse().unwrap(), Some("C-1002"), "t")
            .await
            .unwrap();
    let t = &preview.targets[0];
    assert_eq!(t.rating.entries.len(), 2);
    assert_eq!(t.rating.totals.net, rust_decimal_macros::dec!(67.50));

    // An edit (newer updated_at) and an unmapped type arrive with the next webhook.
    fake.accountings.lock().unwrap().insert(
        "50".into(),
        vec![
            accounting(6, "45.0", json!(2), "2026-10-15T10:00:00Z"),
            accounting(7, "30.0", json!(null), "2026-10-14T08:12:02Z"),
            accounting(8, "10.0", json!(99), "2026-10-15T10:00:00Z"),
        ],
    );
    let r = c
        .post(&url)
        .header("X-Hub-Signature", sign("hook-secret", &body))
        .header("X-Zammad-Delivery", "d-2")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    support::eventually(Duration::from_secs(20), "edit applied", || async {
        minutes("6").await == Some(45)
    })
    .await;
    support::eventually(
        Duration::from_secs(10),
        "unmapped type on the review list",
        || async {
            drehkreuz::store::review::list(&db, false)
                .await
                .unwrap()
                .iter()
                .any(|r| r.kind == "unmapped_time_accounting" && r.reason.contains("type_id"))
        },
    )
    .await;
    assert_eq!(minutes("8").await, None);
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Reconciliation picks up what no webhook reported: a direct API booking, an edit, a
/// deletion; it pages through the global list and keeps a cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_new_edited_and_deleted_accountings() {
    use drehkreuz::schedule::Job;
    let (zammad_url, fake) = support::fake_zammad::fake_zammad().await;
    fake.helpdesk_tickets.lock().unwrap().insert(
        "50".into(),
        json!({"id": 50, "number": "10050", "title": "VPN", "organization_id": 12, "created_at": "2026-10-01T08:00:00Z", "updated_at": "2026-10-01T08:00:00Z"}),
    );
    let (db, _u, _d) = support::fresh_sqlite().await;
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
    let job = drehkreuz::helpdesk::ZammadReconcile {
        db: db.clone(),
        client: zammad::Client::new(
            &zammad_url,
            secrecy::SecretString::from("zammad-secret".to_string()),
        ),
        source: "zammad".into(),
        mapping: zammad_mapping::MappingSettings {
            classification_attribute: Some("billing_class".into()),
            ..Default::default()
        },
        per_page: 2,
    };
    // Apply what the job published, as the intake consumer would.
    let drain = |db: drehkreuz::store::Db| async move {
        loop {
            let rows = drehkreuz::store::outbox::claim(&db, 100).await.unwrap();
            if rows.is_empty() {
                break;
            }
            let mut tx = db.begin_relaxed().await.unwrap();
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            drehkreuz::store::outbox::mark_sent(&mut tx, &ids)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            for r in rows {
                if r.envelope.event_type.starts_with("time_entry.")
                    || r.envelope.event_type.starts_with("ticket.")
                {
                    drehkreuz::bus::apply(
                        &db,
                        "work-intake",
                        &drehkreuz::intake::WorkIntake,
                        &r.envelope,
                    )
                    .await;
                }
            }
        }
    };
    let due: chrono::DateTime<chrono::Utc> = "2026-10-20T10:00:00Z".parse().unwrap();
    *fake.all_accountings.lock().unwrap() = vec![
        accounting(1, "15.0", json!(null), "2026-10-14T08:00:00Z"),
        accounting(2, "20.0", json!(null), "2026-10-14T08:10:00Z"),
        accounting(3, "25.0", json!(null), "2026-10-14T08:20:00Z"),
    ];
    job.run(due).await.unwrap();
    drain(db.clone()).await;
    let minutes = |id: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT minutes FROM time_entries WHERE source = 'zammad' AND id = $1 AND deleted = 0")
                .bind(id)
                .fetch_optional(&db.pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        (minutes("1").await, minutes("2").await, minutes("3").await),
        (Some(15), Some(20), Some(25)),
        "three pages of two"
    );
    let customer: Option<String> =
        sqlx::query_scalar("SELECT customer_id FROM time_entries WHERE id = '1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        customer.as_deref(),
        Some("C-1002"),
        "the unknown ticket was fetched"
    );

    // Next run: #2 edited (newer updated_at), #3 deleted in Zammad, #4 booked directly via API.
    *fake.all_accountings.lock().unwrap() = vec![
        accounting(1, "15.0", json!(null), "2026-10-14T08:00:00Z"),
        accounting(2, "50.0", json!(null), "2026-10-18T09:00:00Z"),
        accounting(4, "5.0", json!(null), "2026-10-18T09:30:00Z"),
    ];
    job.run(due).await.unwrap();
    drain(db.clone()).await;
    assert_eq!(minutes("2").await, Some(50), "edit picked up");
    assert_eq!(minutes("3").await, None, "deletion picked up");
    assert_eq!(minutes("4").await, Some(5), "direct booking picked up");
    let cursor: String = sqlx::query_scalar(
        "SELECT value FROM sync_cursors WHERE name = 'zammad:time_accountings.updated_at'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        cursor,
        chrono::DateTime::parse_from_rfc3339("2026-10-18T09:30:00Z")
            .unwrap()
            .timestamp_millis()
            .to_string()
    );

    // A classification change touches no time accounting: the ticket search by updated_at
    // finds it. A ticket of an unknown organization goes on the review list (intake), an
    // unmappable one too (here): nothing is lost.
    fake.helpdesk_tickets.lock().unwrap().insert(
        "50".into(),
        json!({"id": 50, "number": "10050", "title": "VPN", "organization_id": 12, "billing_class": "project",
               "created_at": "2026-10-01T08:00:00Z", "updated_at": "2026-10-19T11:00:00Z"}),
    );
    fake.helpdesk_tickets.lock().unwrap().insert(
        "51".into(),
        json!({"id": 51, "number": "10051", "title": "Fremd", "organization_id": 999,
               "created_at": "2026-10-19T09:00:00Z", "updated_at": "2026-10-19T09:00:00Z"}),
    );
    fake.helpdesk_tickets.lock().unwrap().insert(
        "52".into(),
        json!({"id": 52, "number": "10052", "title": "", "created_at": "2026-10-19T09:00:00Z", "updated_at": "2026-10-19T09:00:00Z"}),
    );
    job.run(due).await.unwrap();
    drain(db.clone()).await;
    let doc: String =
        sqlx::query_scalar("SELECT document FROM tickets WHERE source = 'zammad' AND id = '50'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let t: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(t["classification"], "project", "{t}");
    let ticket_cursor: String = sqlx::query_scalar(
        "SELECT value FROM sync_cursors WHERE name = 'zammad:tickets.updated_at'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        ticket_cursor,
        chrono::DateTime::parse_from_rfc3339("2026-10-19T11:00:00Z")
            .unwrap()
            .timestamp_millis()
            .to_string()
    );
    let review = drehkreuz::store::review::list(&db, false).await.unwrap();
    assert!(
        review
            .iter()
            .any(|r| r.kind == "unmapped_ticket" && r.record_id == "ticket:52"),
        "a ticket without a title is reviewed: {review:?}"
    );
    assert!(
        review
            .iter()
            .any(|r| r.kind == "unknown_customer" && r.record_id == "ticket:51"),
        "unknown organization 999 is reviewed: {review:?}"
    );
}

/// Organization → customer by a customer-number attribute on the Zammad organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_maps_by_customer_number_attribute() {
    let (zammad_url, fake) = support::fake_zammad::fake_zammad().await;
    fake.helpdesk_tickets.lock().unwrap().insert(
        "60".into(),
        json!({"id": 60, "title": "Server", "organization_id": 7, "created_at": "2026-10-01T08:00:00Z", "updated_at": "2026-10-01T08:00:00Z"}),
    );
    fake.organizations.lock().unwrap().insert(
        "7".into(),
        json!({"id": 7, "name": "Praxis Dr. Weber", "customer_number": "C-1003", "active": true, "member_ids": [], "created_at": "2023-07-26T08:44:48.617Z", "updated_at": "2023-08-04T12:01:44.370Z"}),
    );
    let (db, _u, _d) = support::fresh_sqlite().await;
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
    let mapping = zammad_mapping::MappingSettings {
        customer_number_attribute: Some("customer_number".into()),
        ..Default::default()
    };
    let sync = drehkreuz::helpdesk::ZammadSync {
        client: zammad::Client::new(
            &zammad_url,
            secrecy::SecretString::from("zammad-secret".to_string()),
        ),
        source: "zammad".into(),
        mapping,
    };
    let signal = canonical::Envelope::new(
        "/zammad",
        "zammad.ticket_changed",
        "60",
        "d-9",
        chrono::Utc::now(),
        &drehkreuz::http::webhooks::TicketChanged {
            ticket_id: "60".parse().unwrap(),
            delivery: None,
        },
    )
    .unwrap();
    assert_eq!(
        drehkreuz::bus::apply(&db, "zammad-sync", &sync, &signal).await,
        drehkreuz::bus::Outcome::Applied
    );
    let rows = drehkreuz::store::outbox::claim(&db, 10).await.unwrap();
    let t = rows
        .iter()
        .find(|r| r.envelope.event_type == "ticket.updated")
        .unwrap();
    assert_eq!(t.envelope.data["customer_id"], "C-1003");
    drehkreuz::bus::apply(
        &db,
        "work-intake",
        &drehkreuz::intake::WorkIntake,
        &t.envelope,
    )
    .await;
    let c: Option<String> = sqlx::query_scalar("SELECT customer_id FROM tickets WHERE id = '60'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(c.as_deref(), Some("C-1003"));
}

/// 404 and 5xx from Zammad: a deleted ticket is a permanent failure (dead letter with the
/// reason); a 502 from a proxy in front of Zammad is retried with backoff and then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_permanent_and_server_errors_are_retried() {
    use std::sync::atomic::Ordering;
    let (zammad_url, fake) = support::fake_zammad::fake_zammad().await;
    let client = zammad::Client::new(
        &zammad_url,
        secrecy::SecretString::from("zammad-secret".to_string()),
    );
    let err = client.get_ticket("404".parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, zammad::ZammadError::NotFound(_)), "{err:?}");
    assert!(!err.is_transient());

    fake.helpdesk_tickets.lock().unwrap().insert(
        "70".into(),
        json!({"id": 70, "title": "Backup", "organization_id": 11, "created_at": "2026-10-01T08:00:00Z", "updated_at": "2026-10-01T08:00:00Z"}),
    );
    fake.accountings.lock().unwrap().insert("70".into(), vec![]);
    fake.server_errors.store(2, Ordering::SeqCst);
    let t = client.get_ticket("70".parse().unwrap()).await.unwrap();
    assert_eq!(t["id"], 70);
    assert_eq!(
        fake.server_errors.load(Ordering::SeqCst),
        0,
        "two 502s were retried"
    );

    // Through the zammad-sync consumer: the deleted ticket → dead letter with the reason.
    let (db, _u, _d) = support::fresh_sqlite().await;
    let sync = drehkreuz::helpdesk::ZammadSync {
        client,
        source: "zammad".into(),
        mapping: zammad_mapping::MappingSettings::default(),
    };
    let signal = |id: &str| {
        canonical::Envelope::new(
            "/zammad",
            "zammad.ticket_changed",
            id,
            "d",
            chrono::Utc::now(),
            &drehkreuz::http::webhooks::TicketChanged {
                ticket_id: id.parse().unwrap(),
                delivery: None,
            },
        )
        .unwrap()
    };
    match drehkreuz::bus::apply(&db, "zammad-sync", &sync, &signal("404")).await {
        drehkreuz::bus::Outcome::Dead(reason) => assert!(reason.contains("404"), "{reason}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert!(matches!(
        drehkreuz::bus::apply(&db, "zammad-sync", &sync, &signal("70")).await,
        drehkreuz::bus::Outcome::Applied
    ));
}
