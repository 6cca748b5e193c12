//! A whole hub process on embedded defaults: HTTP endpoints, ingress → bus, graceful shutdown.

use crate::support;

use drehkreuz::config::Config;
use drehkreuz::runtime::Hub;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn start(
    dir: &std::path::Path,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    String,
) {
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.to_path_buf();
    let (listener, base) = support::listener().await;
    cfg.bus.poll_interval_ms = 20;
    let hub = Hub::build(cfg).await.unwrap();
    let admin = drehkreuz::access::create_token(
        &hub.db,
        "test admin",
        &drehkreuz::access::Role::Admin,
        "test",
    )
    .await
    .unwrap()
    .token;
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { hub.run_with_listeners(listener, None, t).await });
    support::eventually(Duration::from_secs(10), "server up", || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    (base, token, task, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (base, token, task, _admin) = start(dir.path()).await;
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["store"]["backend"], "sqlite");
    assert_eq!(body["bus"]["kind"], "embedded");
    assert_eq!(body["outbox_backlog"], 0);
    let m = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("drehkreuz_outbox_backlog"), "{m}");

    token.cancel();
    let res = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("stops in time");
    res.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_rejects_bad_events_with_a_problem_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (base, token, task, admin) = start(dir.path()).await;
    let client = reqwest::Client::new();
    let cases = [
        (
            serde_json::json!({"specversion": "1.0", "source": "/x", "type": "t.created", "data": {}}),
            "/id",
        ),
        (
            serde_json::json!({"specversion": "0.3", "id": "1", "source": "/x", "type": "t", "data": {}}),
            "/specversion",
        ),
        (
            serde_json::json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "time": "yesterday", "data": {}}),
            "/time",
        ),
        (
            serde_json::json!([{"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "data": {}}, {"specversion": "1.0", "id": "2", "source": "/x", "data": {}}]),
            "/1/type",
        ),
        // A known signal type no consumer of this hub binds (no `[zammad]`): refused, not
        // left unroutable in the outbox.
        (
            serde_json::json!({"specversion": "1.0", "id": "1", "source": "/zammad", "type": "zammad.ticket_changed", "data": {"ticket_id": 5}}),
            "/type",
        ),
        // An unknown type.
        (
            serde_json::json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "nobody.listens", "data": {}}),
            "/type",
        ),
    ];
    for (body, field) in cases {
        let r = client
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["field"], field, "{p}");
        assert_eq!(p["status"], 422);
    }
    let r = client
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing of the rejected batch was stored.
    let r: serde_json::Value = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["outbox_backlog"], 0);
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    let (api_listener, api) = support::listener().await;
    let (metrics_listener, metrics) = support::listener().await;
    let hub = Hub::build(cfg).await.unwrap();
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move {
        hub.run_with_listeners(api_listener, Some(metrics_listener), t)
            .await
    });
    support::eventually(Duration::from_secs(10), "up", || async {
        reqwest::get(format!("{metrics}/metrics")).await.is_ok()
    })
    .await;
    let m = reqwest::get(format!("{metrics}/metrics")).await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("drehkreuz_outbox_backlog"));
    let on_api = reqwest::get(format!("{api}/metrics")).await.unwrap();
    assert_eq!(
        on_api.status(),
        404,
        "not on the API address when bound separately"
    );
    assert_eq!(
        reqwest::get(format!("{api}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    token.cancel();
    task.await.unwrap().unwrap();
}
