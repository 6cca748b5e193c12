//! Test support: real services on loopback, fresh databases and broker names per test.
//!
//! PostgreSQL and RabbitMQ tests talk to the real servers. Locally a missing server skips the
//! test with one line naming it; in CI (`CI=true`) it fails the test. Everything a test makes
//! on a server is removed when its guard drops: its database ([`PgDatabase`]) and its vhost
//! ([`RabbitVhost`], with all queues and exchanges in it). Servers are reached through
//! listeners the tests bind themselves ([`listener`]), never a port found free and released.
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
    prerequisites::in_ci()
}

/// Handles a missing service: panics in CI, returns `None` (skip) locally. One line either way:
/// `missing prerequisite: PostgreSQL on … (…)`.
pub fn missing(service: &str, err: &dyn std::fmt::Display) -> Option<std::convert::Infallible> {
    let line = format!(
        "missing prerequisite: {service} ({err}; run .ci/run, or see README \"Test suite\")"
    );
    if in_ci() {
        panic!("{line}");
    }
    eprintln!("SKIPPED: {line}");
    None
}

/// A loopback listener on a port the OS picked, and the `http://` base URL to reach it. Hand
/// the listener itself to the server (`Hub::run_with_listeners`, `axum::serve`): the port is
/// never released between finding and using it.
pub async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!("http://{}", l.local_addr().expect("bound address"));
    (l, base)
}

/// A test's own PostgreSQL database: dropped (`DROP DATABASE … WITH (FORCE)`, PostgreSQL ≥ 13)
/// when this guard goes out of scope, also when the test panics. Keep it bound to a named
/// variable (`_pg`, not `_`) for as long as the test uses the database.
pub struct PgDatabase {
    pub name: String,
    admin_url: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside the test's runtime: run the statement on a
        // thread with its own small runtime and wait for it.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::AnyConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = c.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test database {} not dropped: {e}", self.name),
            Err(_) => eprintln!("warning: test database {} not dropped", self.name),
        }
    }
}

/// A fresh, migrated PostgreSQL database for one test, dropped with the returned guard.
pub async fn fresh_pg() -> Option<(Db, SecretString, PgDatabase)> {
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
    let conn = sqlx::AnyPool::connect(&admin).await;
    let pool = match conn {
        Ok(p) => p,
        Err(e) => {
            missing(&format!("PostgreSQL at {admin}"), &e)?;
            unreachable!()
        }
    };
    let name = format!("dk_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("missing prerequisite: CREATEDB for the test role ({e})"));
    pool.close().await;
    let guard = PgDatabase {
        name: name.clone(),
        admin_url: admin.clone(),
    };
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    let url = SecretString::from(format!("{base}/{name}"));
    let db = Db::open(&url, 10).await.expect("open postgres");
    Some((db, url, guard))
}

/// The `rabbitmqctl` the tests run (`$RABBITMQCTL`, else `rabbitmqctl`).
fn rabbitmqctl() -> std::process::Command {
    std::process::Command::new(
        std::env::var("RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into()),
    )
}

/// Runs `rabbitmqctl ARGS`; the error names the command.
fn run_rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = rabbitmqctl()
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A test's own RabbitMQ vhost (`dk_test_<uuid>`), made with `rabbitmqctl add_vhost` and
/// deleted with everything in it (queues, exchanges, connections) when the guard drops, also
/// when the test panics. [`RabbitVhost::configure`] points a config at it.
pub struct RabbitVhost {
    pub name: String,
    pub url: String,
}

impl RabbitVhost {
    /// Sets the config's broker URL to this vhost.
    pub fn configure(&self, cfg: &mut Config) {
        cfg.bus.amqp_url = Some(SecretString::from(self.url.clone()));
    }

    /// Closes the hub's own connections in this vhost (named `drehkreuz <instance> <role>`,
    /// see `src/bus/rabbitmq.rs`) with `rabbitmqctl close_connection`; returns how many. Never
    /// touches another vhost's or another program's connections.
    pub fn close_hub_connections(&self, instance: &str, reason: &str) -> usize {
        let listing = run_rabbitmqctl(&[
            "-q",
            "list_connections",
            "--no-table-headers",
            "vhost",
            "pid",
            "client_properties",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        // The name the client gave is in its properties: {"connection_name","longstr","…"}.
        let given_name = format!("\"drehkreuz {instance} ");
        let mut closed = 0;
        for line in listing.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(vhost), Some(pid), Some(properties)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if vhost == self.name && properties.contains(&given_name) {
                run_rabbitmqctl(&["-q", "close_connection", pid, reason])
                    .unwrap_or_else(|e| panic!("{e}"));
                closed += 1;
            }
        }
        closed
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        if let Err(e) = run_rabbitmqctl(&["-q", "delete_vhost", &self.name]) {
            eprintln!("warning: test vhost {} not deleted: {e}", self.name);
        }
    }
}

/// A fresh vhost for one test on the broker of `amqp_url()` (its user gets full rights there).
/// `None` (skip) locally when RabbitMQ or `rabbitmqctl` is missing; fails in CI.
pub async fn rabbit_vhost() -> Option<RabbitVhost> {
    if !rabbit_available().await {
        return None;
    }
    let name = format!("dk_test_{}", uuid::Uuid::now_v7().simple());
    let base = amqp_url();
    // `amqp://user:pw@host:port[/vhost]` → `amqp://user:pw@host:port` (the test's vhost replaces it).
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base.as_str(),
    };
    let user = server
        .strip_prefix("amqp://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(cred, _)| cred.split(':').next().unwrap_or("guest").to_string())
        .unwrap_or_else(|| "guest".into());
    // One CLI start (each costs ~0.5-1.5 s of Erlang boot): vhost and permissions in one
    // `eval` (RabbitMQ 3.8-3.13 internals); the documented two commands if that fails.
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let eval = format!(
        "ok = rabbit_vhost:add(<<\"{name}\">>, <<\"drehkreuz-tests\">>), \
         ok = rabbit_auth_backend_internal:set_permissions(<<\"{user}\">>, <<\"{name}\">>, \
         <<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"drehkreuz-tests\">>)."
    );
    let made = if plain(&user) && run_rabbitmqctl(&["-q", "eval", &eval]).is_ok() {
        Ok(String::new())
    } else {
        run_rabbitmqctl(&["-q", "add_vhost", &name]).and_then(|_| {
            run_rabbitmqctl(&[
                "-q",
                "set_permissions",
                "-p",
                &name,
                &user,
                ".*",
                ".*",
                ".*",
            ])
        })
    };
    let guard = RabbitVhost {
        url: format!("{server}/{name}"),
        name,
    };
    if let Err(e) = made {
        drop(guard);
        missing("rabbitmqctl (to make the test's vhost)", &e)?;
        unreachable!()
    }
    Some(guard)
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
            missing(&format!("RabbitMQ at {}", amqp_url()), &e);
            false
        }
    }
}

/// A config for tests: short retry delays, a unique broker prefix.
pub fn test_config(kind: BusKind, db_url: &SecretString) -> Config {
    let mut cfg = Config::default();
    cfg.database.url = Some(db_url.clone());
    cfg.bus.kind = Some(kind);
    // RabbitMQ tests point the config at their own vhost: `support::rabbit_vhost()?.configure(&mut cfg)`.
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

/// Messages ready in a broker queue of the config's vhost.
pub async fn rabbit_queue_depth(cfg: &Config, queue: &str) -> u32 {
    let url = cfg.bus.amqp_url.as_ref().expect("a RabbitMQ config");
    let conn =
        lapin::Connection::connect(url.expose_secret(), lapin::ConnectionProperties::default())
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

/// Checks that `check` stays true for the whole `window` (polled every 25 ms), failing as soon
/// as it is not: how a test asserts that something does *not* happen (no further attempt, no
/// second effect). The window is the behaviour under test; positive waits use [`eventually`].
pub async fn consistently<F, Fut>(window: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < window {
        if !check().await {
            panic!("no longer true after {:?}: {what}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
