//! Helpdesk write-back against a fake Zammad that speaks the documented API (token auth,
//! `POST /api/v1/tickets`, `POST /api/v1/ticket_articles`, `GET /api/v1/tickets/search` with
//! `expand=true`, 401 and 429 with `Retry-After`).

use crate::support;

use crate::support::fake_zammad::fake_zammad;
use drehkreuz::billing::ledger::ThresholdCrossed;
use drehkreuz::bus::{apply, Outcome};
use drehkreuz::helpdesk::HelpdeskNotify;
use std::sync::atomic::Ordering;

fn notice(percent: u32) -> canonical::Envelope {
    let n = ThresholdCrossed {
        customer_id: "C-1001".into(),
        customer_name: "Müller & Söhne Steuerberatung GmbH".into(),
        contract_id: "K-1001".into(),
        period: "2026-10".parse().unwrap(),
        percent,
        consumed: "510".into(),
        available: "600".into(),
        entry_id: "k5".into(),
        at: "2026-10-21T09:00:00Z".parse().unwrap(),
        notify: vec![canonical::customer::Contact {
            name: "Petra Müller".into(),
            email: "p.mueller@mueller-stb.example".into(),
        }],
    };
    canonical::Envelope::new(
        "/drehkreuz/billing",
        "contingent.threshold_crossed",
        &format!("K-1001:2026-10:{percent}"),
        "1",
        n.at,
        &n,
    )
    .unwrap()
}

/// A fresh store with the example master data and the notices the ledger recorded for K-1001
/// in 2026-10 (80 % and 100 %): the write-back only acts on notices the store knows.
async fn store_with_notices() -> (drehkreuz::store::Db, tempfile::TempDir) {
    let (db, _u, dir) = support::fresh_sqlite().await;
    let md = drehkreuz::masterdata::MasterData::from_toml(include_str!(
        "../../docs/examples/master-data.toml"
    ))
    .unwrap();
    drehkreuz::masterdata::import(&db, &md, "test")
        .await
        .unwrap();
    for percent in [80_i64, 100] {
        sqlx::query(
            "INSERT INTO threshold_notices (contract_id, period, percent, entry_id, noticed_at) VALUES ('K-1001', '2026-10', $1, 'k5', 0)",
        )
        .bind(percent)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    (db, dir)
}

fn handler(base: &str, token: &str) -> HelpdeskNotify {
    HelpdeskNotify {
        client: zammad::Client::new(base, secrecy::SecretString::from(token.to_string())),
        group: "Service Desk".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_notice_reaches_the_customer_once_on_one_ticket() {
    let (base, fake) = fake_zammad().await;
    let (db, _d) = store_with_notices().await;
    let h = handler(&base, "zammad-secret");

    assert_eq!(
        apply(&db, "helpdesk-notify", &h, &notice(80)).await,
        Outcome::Applied
    );
    assert_eq!(fake.tickets.lock().unwrap().len(), 1);
    let a = fake.articles.lock().unwrap().clone();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["type"], "email");
    assert_eq!(a[0]["internal"], false);
    assert_eq!(a[0]["to"], "p.mueller@mueller-stb.example");
    assert!(a[0]["subject"].as_str().unwrap().contains("80 %"));
    assert_eq!(a[0]["ticket_id"], fake.tickets.lock().unwrap()[0]["id"]);

    // The same event again (redelivery): nothing new.
    assert_eq!(
        apply(&db, "helpdesk-notify", &h, &notice(80)).await,
        Outcome::Duplicate
    );
    assert_eq!(fake.articles.lock().unwrap().len(), 1);

    // The next threshold: same ticket, one more article; a 429 on the way is retried.
    fake.busy.store(1, Ordering::SeqCst);
    assert_eq!(
        apply(&db, "helpdesk-notify", &h, &notice(100)).await,
        Outcome::Applied
    );
    assert_eq!(fake.tickets.lock().unwrap().len(), 1, "no second ticket");
    assert_eq!(fake.articles.lock().unwrap().len(), 2);

    // A hub that lost its reference table finds the ticket by its tag instead of opening another.
    let (db2, _d2) = store_with_notices().await;
    assert_eq!(
        apply(&db2, "helpdesk-notify", &h, &notice(80)).await,
        Outcome::Applied
    );
    assert_eq!(fake.tickets.lock().unwrap().len(), 1);

    // A wrong token is not worth retrying: dead letter with the reason.
    let bad = handler(&base, "wrong");
    let (db3, _d3) = store_with_notices().await;
    match apply(&db3, "helpdesk-notify", &bad, &notice(80)).await {
        Outcome::Dead(reason) => assert!(reason.contains("401"), "{reason}"),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    // Zammad down: transient, retried later by the bus.
    let down = handler("http://127.0.0.1:9", "zammad-secret");
    let (db4, _d4) = store_with_notices().await;
    assert!(matches!(
        apply(&db4, "helpdesk-notify", &down, &notice(80)).await,
        Outcome::Retry(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_the_store_does_not_know_writes_to_nobody() {
    let (base, fake) = fake_zammad().await;
    let (db, _d) = store_with_notices().await;
    let h = handler(&base, "zammad-secret");
    // Forged onto the bus: a threshold the ledger never recorded.
    match apply(&db, "helpdesk-notify", &h, &notice(50)).await {
        Outcome::Dead(reason) => assert!(reason.contains("unknown contingent notice"), "{reason}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    // A recorded notice whose event names other recipients: master data decides who is told.
    let mut ev = notice(80);
    ev.data["notify"] = serde_json::json!([{"name": "Mallory", "email": "mallory@evil.example"}]);
    ev.data["customer_name"] = serde_json::json!("Mallory Ltd");
    assert_eq!(
        apply(&db, "helpdesk-notify", &h, &ev).await,
        Outcome::Applied
    );
    let a = fake.articles.lock().unwrap().clone();
    assert_eq!(a.len(), 1, "only the recorded notice was written");
    assert_eq!(a[0]["to"], "p.mueller@mueller-stb.example");
    assert!(
        !a[0]["body"].as_str().unwrap().contains("Mallory"),
        "{}",
        a[0]["body"]
    );
}
