//! Bus throughput benchmark (run with `cargo bench --bench bus_throughput`).
//!
//! In one run, on the same loopback broker and database:
//! (a) raw lapin: publish 1 KiB persistent messages with pipelined publisher confirms into a
//!     quorum queue while a consumer acks them (prefetch as the hub's);
//! (b) the hub's path: events written to the outbox (PostgreSQL) → relay → RabbitMQ → consumer
//!     → effect and inbox row committed in one transaction;
//! (c) the same path on embedded defaults (SQLite + embedded bus).
//! Prints messages per second for each and the ratio hub / raw (target ≥ 0.7).
//! `BENCH_MESSAGES` sets the message count (default 20000); `BENCH_PHASES=1` instead times the
//! hub path's phases one after another (outbox write, relay, consume) to show where time goes.

use async_trait::async_trait;
use canonical::Envelope;
use drehkreuz::bus::{Consumer, ConsumerSpec, Handler, HandlerError};
use drehkreuz::config::{BusKind, Config};
use drehkreuz::relay::Relay;
use drehkreuz::store::{outbox, Db, Tx};
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const PAYLOAD: usize = 1024;

/// CPU seconds (user + system) used so far by processes whose command name starts with one of
/// `names` (e.g. the broker `beam.smp`, the database `postgres`), and by this process.
fn cpu_seconds(names: &[&str]) -> (f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let read = |stat: &str| -> f64 {
        // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let u: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let s: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        (u + s) / tick
    };
    let mut others = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if names.iter().any(|n| comm.trim().starts_with(n)) {
                others += std::fs::read_to_string(p.join("stat"))
                    .map(|s| read(&s))
                    .unwrap_or(0.0);
            }
        }
    }
    let me = std::fs::read_to_string("/proc/self/stat")
        .map(|s| read(&s))
        .unwrap_or(0.0);
    (others, me)
}

/// Busy CPU seconds of the whole machine so far (from `/proc/stat`).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

/// Runs a phase and prints the CPU it cost: the broker, this process, and the rest of the
/// machine (mostly the database, whose per-connection processes come and go with the pool).
async fn with_cpu<T>(label: &str, f: impl std::future::Future<Output = T>) -> T {
    let (b0, m0) = cpu_seconds(&["beam.smp"]);
    let all0 = machine_busy();
    let t = Instant::now();
    let out = f.await;
    let (b1, m1) = cpu_seconds(&["beam.smp"]);
    let all1 = machine_busy();
    let (broker, me, all) = (b1 - b0, m1 - m0, all1 - all0);
    println!(
        "    cpu during {label}: broker {broker:.1}s, this process {me:.1}s, rest (database, kernel) {:.1}s; {all:.1}s busy of {:.1}s available",
        (all - broker - me).max(0.0),
        t.elapsed().as_secs_f64() * std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
    );
    out
}

fn amqp_url() -> String {
    std::env::var("DREHKREUZ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
fn pg_admin() -> String {
    std::env::var("DREHKREUZ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn raw_lapin(n: usize, prefetch: u16) -> anyhow::Result<f64> {
    let queue = format!("bench.raw.{}", uuid::Uuid::now_v7().simple());
    let pub_conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let con_conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let pch = pub_conn.create_channel().await?;
    let cch = con_conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    pch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = vec![b'x'; PAYLOAD];
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while let Some(Ok(d)) = consumer.next().await {
            d.ack(BasicAckOptions::default()).await.ok();
            got += 1;
            if got == n {
                break;
            }
        }
    });
    // Pipelined confirms: keep up to 256 in flight, as the hub's relay does per batch.
    let mut inflight = Vec::with_capacity(256);
    for i in 0..n {
        let c = pch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(i.to_string().into()),
            )
            .await?;
        inflight.push(c);
        if inflight.len() == 256 {
            for c in inflight.drain(..) {
                let conf = c.await?;
                anyhow::ensure!(
                    conf.is_ack() && conf.take_message().is_none(),
                    "not confirmed"
                );
            }
        }
    }
    for c in inflight.drain(..) {
        c.await?;
    }
    consume.await?;
    let secs = start.elapsed().as_secs_f64();
    pch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    pub_conn.close(200, "done".into()).await.ok();
    con_conn.close(200, "done".into()).await.ok();
    Ok(n as f64 / secs)
}

/// The benchmark's consumer effect: one row per message, in the inbox transaction. The
/// counter only tells the measuring loop when to start checking the database (so the
/// measurement does not load the database with polling); completion is read from the table.
struct Effect(Arc<std::sync::atomic::AtomicUsize>);
#[async_trait]
impl Handler for Effect {
    async fn handle(&self, event: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sqlx::query("INSERT INTO bench_effects (message_id) VALUES ($1)")
            .bind(&event.id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn hub_path(n: usize, cfg: Config) -> anyhow::Result<f64> {
    let db = Db::open(&cfg.database_url(), cfg.database.max_connections).await?;
    sqlx::query("CREATE TABLE bench_effects (message_id TEXT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let bus = drehkreuz::bus::from_config(&cfg, &db).await?;
    let spec = ConsumerSpec::new("bench", &["bench.#"]);
    bus.declare(std::slice::from_ref(&spec)).await?;
    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let b = bus.clone();
    let sd = shutdown.clone();
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let effect = Arc::new(Effect(handled.clone()));
    let e2 = effect.clone();
    let consumers = tokio::spawn(async move { b.run(vec![Consumer::new(spec, e2)], sd).await });
    let relay = Relay::new(
        db.clone(),
        bus.clone(),
        wake.clone(),
        Duration::from_millis(5),
        vec![1000],
    );
    let relay_task = tokio::spawn(relay.run_workers(cfg.bus.relay_workers, shutdown.clone()));
    let pad = "x".repeat(PAYLOAD - 40);
    let t0 = chrono::Utc::now();
    let events: Vec<Envelope> = (0..n)
        .map(|i| {
            Envelope::new(
                "/bench",
                "bench.created",
                &i.to_string(),
                "1",
                t0,
                &serde_json::json!({ "i": i, "pad": pad }),
            )
            .unwrap()
        })
        .collect();
    if std::env::var("BENCH_PHASES").is_ok() {
        shutdown.cancel();
        consumers.await??;
        relay_task.await?;
        let t = Instant::now();
        for chunk in events.chunks(256) {
            outbox::enqueue_all(&db, chunk).await?;
        }
        println!("    phase enqueue only: {:.2}s", t.elapsed().as_secs_f64());
        let relay = Relay::new(
            db.clone(),
            bus.clone(),
            wake.clone(),
            Duration::from_millis(5),
            vec![1000],
        );
        let t = Instant::now();
        let sd = CancellationToken::new();
        let rt = tokio::spawn(relay.run_workers(cfg.bus.relay_workers, sd.clone()));
        while outbox::backlog(&db).await? > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("    phase relay only: {:.2}s", t.elapsed().as_secs_f64());
        sd.cancel();
        rt.await?;
        let t = Instant::now();
        let sd = CancellationToken::new();
        let b = bus.clone();
        let s2 = sd.clone();
        let spec = ConsumerSpec::new("bench", &["bench.#"]);
        let e3 = effect.clone();
        let ct = tokio::spawn(async move { b.run(vec![Consumer::new(spec, e3)], s2).await });
        loop {
            let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
                .fetch_one(&db.pool)
                .await?;
            if done as usize >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("    phase consume only: {:.2}s", t.elapsed().as_secs_f64());
        sd.cancel();
        ct.await??;
        return Ok(0.0);
    }
    let start = Instant::now();
    for chunk in events.chunks(256) {
        outbox::enqueue_all(&db, chunk).await?;
        wake.notify_one();
    }
    let enqueued_after = start.elapsed();
    while handled.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    loop {
        let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_effects")
            .fetch_one(&db.pool)
            .await?;
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "    (outbox written after {:.2}s, all applied and committed after {:.2}s)",
        enqueued_after.as_secs_f64(),
        secs
    );
    shutdown.cancel();
    consumers.await??;
    relay_task.await?;
    if cfg.bus_kind() == BusKind::Rabbitmq {
        // Remove the benchmark's queues.
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let names = drehkreuz::bus::topology::Names::new(&cfg.bus.prefix);
        for q in [
            names.queue("bench"),
            names.dead_letter_queue("bench"),
            names.retry_queue("bench", 1000),
        ] {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .ok();
        }
        ch.exchange_delete(
            names.exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .ok();
        ch.exchange_delete(
            names.dead_letter_exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .ok();
        conn.close(200, "done".into()).await.ok();
    }
    db.pool.close().await;
    Ok(n as f64 / secs)
}

fn bench_config(kind: BusKind, db_url: SecretString) -> Config {
    // Defaults plus DREHKREUZ_BUS__* overrides, so tunings can be compared.
    let mut cfg = Config::load(None).unwrap_or_default();
    cfg.database.url = Some(db_url);
    cfg.database.max_connections = 24;
    cfg.bus.kind = Some(kind);
    if kind == BusKind::Rabbitmq {
        cfg.bus.amqp_url = Some(SecretString::from(amqp_url()));
    }
    cfg.bus.prefix = format!("bench{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
    cfg.bus.retry_delays_ms = vec![1000];
    cfg.hub.instance = "bench".into();
    cfg
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs bench binaries with no arguments; `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bus_throughput: run with `cargo bench --bench bus_throughput`");
        return Ok(());
    }
    sqlx::any::install_default_drivers();
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let defaults = Config::load(None).unwrap_or_default();
    println!(
        "bus_throughput: {n} messages of {PAYLOAD} B, prefetch {}, concurrency {}",
        defaults.bus.prefetch, defaults.bus.concurrency
    );

    let raw = with_cpu("(a)", raw_lapin(n, defaults.bus.prefetch)).await?;
    println!("(a) raw lapin publish+confirm / consume+ack, quorum queue: {raw:>10.0} msg/s");

    let admin = sqlx::AnyPool::connect(&pg_admin()).await?;
    let name = format!("dk_bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    let base = pg_admin()
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    let hub = with_cpu(
        "(b)",
        hub_path(
            n,
            bench_config(
                BusKind::Rabbitmq,
                SecretString::from(format!("{base}/{name}")),
            ),
        ),
    )
    .await?;
    println!("(b) hub outbox → RabbitMQ → consumer → inbox+effect (PostgreSQL): {hub:>10.0} msg/s");
    sqlx::query(&format!("DROP DATABASE {name}"))
        .execute(&admin)
        .await
        .ok();

    let dir = tempfile::tempdir()?;
    let url = SecretString::from(format!(
        "sqlite://{}/bench.db?mode=rwc",
        dir.path().display()
    ));
    let embedded = hub_path(n, bench_config(BusKind::Embedded, url)).await?;
    println!("(c) embedded: outbox → queue table → consumer → inbox+effect (SQLite): {embedded:>10.0} msg/s");

    let ratio = hub / raw;
    println!(
        "ratio hub / raw = {ratio:.2} (target ≥ 0.70): {}",
        if ratio >= 0.7 { "MET" } else { "NOT MET" }
    );
    Ok(())
}
