//! Goods-receipt intake benchmark (run with `cargo bench --bench goods_receipt_intake`; the
//! PostgreSQL + RabbitMQ rows need the loopback servers).
//!
//! Starts a hub, posts `BENCH_RECEIPTS` distinct receipts (default 2,000; 3 lines and 6 serial
//! numbers each, like the ITscope sample) with `BENCH_CONCURRENCY` clients (default 16) over
//! HTTP, and reports:
//! - **intake**: receipts per second until every POST is answered `201` (parsed, checked,
//!   customer resolved, stored with its event in one transaction);
//! - **end to end**: receipts per second until all their assets are registered by the
//!   `asset-registry` consumer (through the bus).
//!
//! Formats: the hub JSON and openTRANS 2.1 (the ITscope dispatch notification with new numbers
//! and serials); stores: embedded (SQLite + embedded bus) and PostgreSQL + RabbitMQ.

use drehkreuz::config::{BusKind, Config};
use drehkreuz::runtime::Hub;
use futures::StreamExt;
use secrecy::SecretString;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn amqp_url() -> String {
    std::env::var("DREHKREUZ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
fn pg_admin() -> String {
    std::env::var("DREHKREUZ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

const ITSCOPE: &str = include_str!(
    "../tests/fixtures/warehouse/opentrans21_dispatchnotification_itscope_serials.xml"
);

fn opentrans(n: usize) -> Vec<u8> {
    ITSCOPE
        .replace("39076516", &format!("B{n:08}"))
        .replace("123002-0", &format!("A{n}-123002-0"))
        .replace("123001-0", &format!("A{n}-123001-0"))
        .replace("123003-0", &format!("A{n}-123003-0"))
        .into_bytes()
}

fn json(n: usize) -> Vec<u8> {
    let line = |id: &str, pid: &str, k: usize| {
        serde_json::json!({
            "line_id": id, "supplier_pid": pid, "description": "Gerät", "quantity": k, "unit": "C62",
            "units": (1..=k).map(|i| serde_json::json!({"serial_number": format!("J{n}-{pid}-{i}"), "warranty_end": "2029-01-31"})).collect::<Vec<_>>()
        })
    };
    serde_json::to_vec(&serde_json::json!({
        "event_type": "goods_receipt.completed",
        "receipt": {
            "receipt_id": format!("WE-{n:08}"),
            "end_customer": {"customer_id": "C-1001"},
            "lines": [line("1", "123002", 1), line("2", "123001", 2), line("3", "123003", 3)]
        }
    }))
    .unwrap_or_default()
}

struct Row {
    store: &'static str,
    format: &'static str,
    intake: f64,
    end_to_end: f64,
}

async fn measure(
    mut cfg: Config,
    store: &'static str,
    format: &'static str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Row> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    cfg.http.listen = format!("127.0.0.1:{port}");
    cfg.schedule.clear();
    let hub = Hub::build(cfg).await?;
    let db = hub.db.clone();
    drehkreuz::masterdata::import(
        &db,
        &drehkreuz::masterdata::MasterData::from_toml(include_str!(
            "../docs/examples/master-data.toml"
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        "bench",
    )
    .await?;
    drehkreuz::warehouse::receipts::register_order(&db, "GWAHJV-160131-1470", "C-1001", "bench")
        .await?;
    let token = drehkreuz::access::create_token(
        &db,
        "bench",
        &"intake:lager".parse().map_err(anyhow::Error::msg)?,
        "bench",
    )
    .await?
    .token;
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { hub.run(s).await });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            if format == "json" {
                json(i)
            } else {
                opentrans(i)
            }
        })
        .collect();
    let ct = if format == "json" {
        "application/json"
    } else {
        "application/xml"
    };
    let t = Instant::now();
    let results: Vec<u16> = futures::stream::iter(bodies)
        .map(|b| {
            let c = client.clone();
            let url = format!("{base}/api/v1/goods-receipts");
            let token = token.clone();
            async move {
                c.post(url)
                    .bearer_auth(token)
                    .header("content-type", ct)
                    .body(b)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let intake = t.elapsed().as_secs_f64();
    let bad = results.iter().filter(|s| **s != 201).count();
    anyhow::ensure!(
        bad == 0,
        "{bad} posts were not answered 201: {:?}",
        &results[..results.len().min(5)]
    );
    let want = (n * 6) as i64;
    loop {
        let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assets")
            .fetch_one(&db.pool)
            .await?;
        if have >= want {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(900),
            "only {have} of {want} assets after 15 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end_to_end = t.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    Ok(Row {
        store,
        format,
        intake: n as f64 / intake,
        end_to_end: n as f64 / end_to_end,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("goods_receipt_intake: run with `cargo bench --bench goods_receipt_intake`");
        return Ok(());
    }
    sqlx::any::install_default_drivers();
    let n: usize = std::env::var("BENCH_RECEIPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    println!("goods_receipt_intake: {n} receipts × 3 lines × 6 serials, {concurrency} concurrent clients");
    let mut rows = Vec::new();
    for format in ["json", "opentrans"] {
        let dir = tempfile::tempdir()?;
        let mut cfg = Config::default();
        cfg.hub.data_dir = dir.path().to_path_buf();
        cfg.bus.kind = Some(BusKind::Embedded);
        rows.push(measure(cfg, "embedded (SQLite)", format, n, concurrency).await?);

        let admin = sqlx::AnyPool::connect(&pg_admin()).await?;
        let name = format!("dk_bench_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
        let base = pg_admin()
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or_default();
        let mut cfg = Config::default();
        cfg.database.url = Some(SecretString::from(format!("{base}/{name}")));
        cfg.bus.kind = Some(BusKind::Rabbitmq);
        cfg.bus.amqp_url = Some(SecretString::from(amqp_url()));
        cfg.bus.prefix = format!("bench{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        rows.push(measure(cfg, "PostgreSQL + RabbitMQ", format, n, concurrency).await?);
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .ok();
    }
    println!(
        "{:<24} {:<10} {:>16} {:>20}",
        "store", "format", "intake rec/s", "end-to-end rec/s"
    );
    for r in rows {
        println!(
            "{:<24} {:<10} {:>16.0} {:>20.0}",
            r.store, r.format, r.intake, r.end_to_end
        );
    }
    Ok(())
}
