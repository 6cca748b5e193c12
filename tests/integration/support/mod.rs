//! Test support: real services on loopback, fresh databases and broker names per test.
//!
//! PostgreSQL and RabbitMQ tests talk to the real servers. Locally a missing server skips the
//! test with a message; in CI (`CI=true`) it fails the test.
#![allow(dead_code)]

pub mod fake_zammad;
#[path = "../../prerequisites.rs"]
pub mod prerequisites;

use drehkreuz::config::{BusKind, Config};
use drehkreuz::store::Db;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

pub fn pg_admin_url() -> String {
    std::env::var("DREHKREUZ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn amqp_url() -> String {
    std::env::var("DREHKREUZ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Handles a missing service: panics in CI, returns `None` (skip) locally.
pub fn missing(service: &str, err: &dyn std::fmt::Display) -> Option<std::convert::Infallible> {
    if in_ci() {
        panic!("{service} is required in CI but not reachable: {err}");
    }
    eprintln!("SKIPPED: {service} not reachable ({err}); set up the server to run this test");
    None
}

/// A fresh, migrated PostgreSQL database for one test (dropped by nobody: names are unique).
pub async fn fresh_pg() -> Option<(Db, SecretString)> {
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
    let conn = sqlx::AnyPool::connect(&admin).await;
    let pool = match conn {
        Ok(p) => p,
        Err(e) => {
            missing("PostgreSQL", &e)?;
            unreachable!()
        }
    };
    let name = format!("dk_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    let url = SecretString::from(format!("{base}/{name}"));
    let db = Db::open(&url, 10).await.expect("open postgres");
    Some((db, url))
}

/// A fresh, migrated SQLite database in a temp dir (kept alive by the returned guard).
pub async fn fresh_sqlite() -> (Db, SecretString, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = SecretString::from(format!("sqlite://{}/hub.db?mode=rwc", dir.path().display()));
    let db = Db::open(&url, 5).await.expect("open sqlite");
    (db, url, dir)
}

/// Checks RabbitMQ is reachable.
pub async fn rabbit_available() -> bool {
    match lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            true
        }
        Err(e) => {
            missing("RabbitMQ", &e);
            false
        }
    }
}

/// A config for tests: short retry delays, a unique broker prefix.
pub fn test_config(kind: BusKind, db_url: &SecretString) -> Config {
    let mut cfg = Config::default();
    cfg.database.url = Some(db_url.clone());
    cfg.bus.kind = Some(kind);
    if kind == BusKind::Rabbitmq {
        cfg.bus.amqp_url = Some(SecretString::from(amqp_url()));
    }
    cfg.bus.prefix = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    cfg.bus.retry_delays_ms = vec![200, 400, 800];
    cfg.bus.delivery_limit = 4;
    cfg.bus.poll_interval_ms = 20;
    cfg.bus.reconnect_max_delay_ms = 1_000;
    cfg.hub.instance = "test".into();
    cfg.schedule.clear();
    cfg
}

/// Deletes the test's queues and exchanges on the broker (best effort).
pub async fn cleanup_rabbit(cfg: &Config, consumers: &[&str]) {
    let Some(url) = &cfg.bus.amqp_url else { return };
    let Ok(conn) =
        lapin::Connection::connect(url.expose_secret(), lapin::ConnectionProperties::default())
            .await
    else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let names = drehkreuz::bus::topology::Names::new(&cfg.bus.prefix);
    for c in consumers {
        let mut queues = vec![names.queue(c), names.dead_letter_queue(c)];
        for d in &cfg.bus.retry_delays_ms {
            queues.push(names.retry_queue(c, *d));
        }
        for q in queues {
            let _ = ch.queue_delete(q.into(), Default::default()).await;
        }
    }
    let _ = ch
        .exchange_delete(names.exchange().into(), Default::default())
        .await;
    let _ = ch
        .exchange_delete(names.dead_letter_exchange().into(), Default::default())
        .await;
    let _ = conn.close(200, "cleanup".into()).await;
}

/// Messages ready in a broker queue.
pub async fn rabbit_queue_depth(queue: &str) -> u32 {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("passive declare");
    let _ = conn.close(200, "probe".into()).await;
    q.message_count()
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
