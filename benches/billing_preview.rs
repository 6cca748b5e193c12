//! Billing benchmark (run with `cargo bench --bench billing_preview`; needs the loopback
//! PostgreSQL).
//!
//! Generates a month with `BENCH_CUSTOMERS` customers (default 10,000; every third on a
//! prepaid contingent, the rest time and material) and `BENCH_ENTRIES` time entries (default
//! 1,000,000) on PostgreSQL, then measures in one run:
//! (a) a plain scan of the same rows (`SELECT document … WHERE period = …`, streamed),
//! (b) the invoice-run preview (`preview_summary`: rating, service reports, targets stored),
//! and prints both times, their ratio, and the peak resident memory during each phase. The
//! same is done first at a tenth of the size: the preview's peak memory must not grow with the
//! month (targets are streamed into rows, one batch in memory at a time).

use drehkreuz::billing::run;
use drehkreuz::store::Db;
use futures::TryStreamExt;
use secrecy::SecretString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn pg_admin() -> String {
    std::env::var("DREHKREUZ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the resident set size every 20 ms while `f` runs; returns (result, peak KiB).
async fn with_peak_rss<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (peak.clone(), stop.clone());
    let sampler = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_max(rss_kib(), Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (out, peak.load(Ordering::Relaxed))
}

async fn generate(db: &Db, customers: i64, entries: i64) -> anyhow::Result<()> {
    let q = |sql: String| async move { sqlx::query(&sql).execute(&db.pool).await };
    q(
        r#"INSERT INTO number_ranges (id, prefix, next, width) VALUES ('RE', 'RE-2026-', 1, 7)"#
            .into(),
    )
    .await?;
    q(format!(
        r#"INSERT INTO customers (id, name, helpdesk_org_id, document, updated_at)
           SELECT 'C' || g, 'Kunde ' || g, NULL,
                  json_build_object('id', 'C' || g, 'debitor_number', 'D' || g, 'datev_account', 10000 + g % 50000,
                                    'name', 'Kunde ' || g,
                                    'address', json_build_object('street', 'Weg ' || g, 'postcode', '28195', 'city', 'Bremen', 'country', 'DE'))::text,
                  0
           FROM generate_series(1, {customers}) g"#
    ))
    .await?;
    let rates = r#"'rate_card', json_build_object('rates', json_build_array(
                        json_build_object('level', '1st', 'hourly', '95.00'),
                        json_build_object('level', '2nd', 'hourly', '115.00'),
                        json_build_object('level', '3rd', 'hourly', '145.00'))),
                   'rounding', json_build_object('increment_minutes', 15, 'mode', 'up', 'scope', 'entry'),
                   'free_classifications', json_build_array('base_bug'), 'free_diagnosis_minutes', 0,
                   'vat_rate', '19', 'vat_category', 'S', 'split_by_cost_centre', false"#;
    q(format!(
        r#"INSERT INTO contracts (id, customer_id, number_range, document, updated_at)
           SELECT 'K' || g, 'C' || g, 'RE',
                  CASE WHEN g % 3 = 0 THEN
                    json_build_object('id', 'K' || g, 'customer_id', 'C' || g, 'kind', 'contingent', 'unit', 'minutes',
                                      'allotment', '600', 'fee', '850.00', 'rollover', 'unlimited', 'overdraft', 'bill',
                                      'overage_hourly', '95.00', 'thresholds', json_build_array(80, 100), {rates})::text
                  ELSE
                    json_build_object('id', 'K' || g, 'customer_id', 'C' || g, 'kind', 'time_and_material', {rates})::text
                  END, 0
           FROM generate_series(1, {customers}) g"#
    ))
    .await?;
    q(format!(
        r#"INSERT INTO tickets (source, id, version, customer_id, document, updated_at)
           SELECT 'bench', 'T' || g, 1, 'C' || (1 + g % {customers}),
                  json_build_object('source', 'bench', 'id', 'T' || g, 'version', 1, 'title', 'Ticket ' || g,
                                    'classification', CASE WHEN g % 17 = 0 THEN 'base_bug' ELSE 'customizing_bug' END)::text, 0
           FROM generate_series(0, {customers} * 10 - 1) g"#
    ))
    .await?;
    q(format!(
        r#"INSERT INTO time_entries (source, id, version, ticket_id, customer_id, started_at, period, minutes, billable, document, updated_at)
           SELECT 'bench', 'E' || e, 1, 'T' || t, 'C' || (1 + t % {customers}),
                  extract(epoch FROM ts)::bigint * 1000, '2026-10', 5 + e % 90, 1,
                  json_build_object('source', 'bench', 'id', 'E' || e, 'version', 1, 'ticket_id', 'T' || t,
                                    'technician', 'tech' || (e % 25), 'level', (ARRAY['1st','1st','2nd','3rd'])[1 + e % 4],
                                    'activity', 'remote', 'started_at', to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                    'minutes', 5 + e % 90, 'billable', true)::text, 0
           FROM (SELECT e, (e * 7919) % ({customers} * 10) AS t,
                        timestamptz '2026-10-01 06:00:00+00' + ((e % 29) || ' days')::interval + ((e % 600) || ' minutes')::interval AS ts
                 FROM generate_series(1::bigint, {entries}::bigint) e) x"#
    ))
    .await?;
    q("ANALYZE".into()).await?;
    Ok(())
}

async fn measure(customers: i64, entries: i64) -> anyhow::Result<(f64, f64, u64, u64, usize)> {
    let admin = sqlx::AnyPool::connect(&pg_admin()).await?;
    let name = format!("dk_bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    let base = pg_admin()
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    let db = Db::open(&SecretString::from(format!("{base}/{name}")), 8).await?;
    let t = Instant::now();
    generate(&db, customers, entries).await?;
    println!(
        "  generated {customers} customers, {entries} entries in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let ((scan_secs, rows), scan_peak) = with_peak_rss(async {
        let t = Instant::now();
        let mut rows = 0usize;
        let mut bytes = 0usize;
        let mut s = sqlx::query_scalar::<_, String>(
            "SELECT document FROM time_entries WHERE period = '2026-10' AND billed_invoice IS NULL",
        )
        .fetch(&db.pool);
        while let Some(d) = s.try_next().await.unwrap_or(None) {
            rows += 1;
            bytes += d.len();
        }
        std::hint::black_box(bytes);
        (t.elapsed().as_secs_f64(), rows)
    })
    .await;
    let (preview, preview_peak) = with_peak_rss(async {
        let t = Instant::now();
        let r = run::preview_summary(&db, "2026-10".parse().unwrap(), None, "bench").await;
        (r, t.elapsed().as_secs_f64())
    })
    .await;
    let (r, preview_secs) = preview;
    let r = r?;
    anyhow::ensure!(
        r.summary.entries == rows,
        "preview rated {} of {rows} entries",
        r.summary.entries
    );
    anyhow::ensure!(
        r.problems.is_empty(),
        "problems: {:?}",
        &r.problems[..r.problems.len().min(3)]
    );
    println!(
        "  preview: {} targets, {} entries, net {} EUR",
        r.summary.targets, r.summary.entries, r.summary.net
    );
    db.pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name}"))
        .execute(&admin)
        .await
        .ok();
    Ok((scan_secs, preview_secs, scan_peak, preview_peak, rows))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("billing_preview: run with `cargo bench --bench billing_preview`");
        return Ok(());
    }
    sqlx::any::install_default_drivers();
    let customers: i64 = std::env::var("BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let entries: i64 = std::env::var("BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut results = Vec::new();
    for (c, e) in [(customers / 10, entries / 10), (customers, entries)] {
        println!("billing_preview: {c} customers, {e} time entries on PostgreSQL");
        let (scan, preview, scan_peak, preview_peak, rows) = measure(c, e).await?;
        println!(
            "  (a) plain scan of {rows} rows: {scan:>8.2}s   peak RSS {:>7} MiB",
            scan_peak / 1024
        );
        println!(
            "  (b) invoice-run preview:     {preview:>8.2}s   peak RSS {:>7} MiB",
            preview_peak / 1024
        );
        println!("  ratio preview / scan = {:.1}", preview / scan.max(1e-9));
        results.push((e, preview_peak));
    }
    let (small, big) = (results[0], results[1]);
    println!(
        "memory: preview peak {} MiB at {} entries vs {} MiB at {} entries ({:.2}× for {}× the entries): {}",
        small.1 / 1024,
        small.0,
        big.1 / 1024,
        big.0,
        big.1 as f64 / small.1.max(1) as f64,
        big.0 / small.0.max(1),
        if (big.1 as f64) < 2.0 * small.1 as f64 { "BOUNDED" } else { "GROWS" }
    );
    Ok(())
}
