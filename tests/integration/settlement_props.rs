//! Stateful property test of the settlement ledger: random sequences of entries (new, late),
//! usage records, several contracts per customer, previews (whole period and per customer,
//! overlapping), write-offs, approvals, finalizes in any order, releases and credit notes with
//! and without rebill — on SQLite and PostgreSQL. After every step: every item on at most one
//! live invoice, no 0,00 € invoice, gapless numbers, the billed usage in the ledger equals the
//! usage on live invoices, every invoice in the DATEV booking export.

use crate::support::*;
use canonical::invoice::{Invoice, InvoiceKind};
use canonical::work::{Period, Ticket, TimeEntry, UsageRecord};
use drehkreuz::billing::run;
use drehkreuz::masterdata::MasterData;
use drehkreuz::store::{work, Db};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::HashMap;

const MD: &str = include_str!("../../docs/examples/master-data.toml");
const EXTRA: &str = r#"
[[contracts]]
id = "K-1002-MS"
customer_id = "C-1002"
kind = "managed_service"
managed_service = { unit_prices = { "BACKUP-GB" = "0.10" } }
"#;
const ORGS: [&str; 4] = ["11", "12", "13", "14"];
const CUSTOMERS: [&str; 4] = ["C-1001", "C-1002", "C-1003", "C-1004"];

#[derive(Debug, Clone)]
enum Op {
    Entry {
        org: usize,
        minutes: u32,
        day: u32,
        second: bool,
    },
    Usage {
        qty: u32,
    },
    Preview {
        customer: Option<usize>,
    },
    WriteOff {
        run: usize,
    },
    Approve {
        run: usize,
    },
    Finalize {
        run: usize,
    },
    Release {
        run: usize,
    },
    Credit {
        invoice: usize,
        line: Option<usize>,
        rebill: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize, 5..300u32, 1..28u32, any::<bool>())
            .prop_map(|(org, minutes, day, second)| Op::Entry { org, minutes, day, second }),
        1 => (1..1000u32).prop_map(|qty| Op::Usage { qty }),
        2 => proptest::option::of(0..4usize).prop_map(|customer| Op::Preview { customer }),
        1 => (0..4usize).prop_map(|run| Op::WriteOff { run }),
        2 => (0..4usize).prop_map(|run| Op::Approve { run }),
        2 => (0..4usize).prop_map(|run| Op::Finalize { run }),
        1 => (0..4usize).prop_map(|run| Op::Release { run }),
        1 => (0..4usize, proptest::option::of(1..3usize), any::<bool>())
            .prop_map(|(invoice, line, rebill)| Op::Credit { invoice, line, rebill }),
    ]
}

fn period() -> Period {
    "2026-10".parse().unwrap_or_else(|_| unreachable!())
}

async fn apply(db: &Db, op: &Op, n: usize) {
    match op {
        Op::Entry {
            org,
            minutes,
            day,
            second,
        } => {
            let t = Ticket {
                source: "hd".into(),
                id: format!("T{org}{}", n % 3),
                version: 1,
                customer_id: None,
                organization_id: Some(ORGS[*org].into()),
                number: None,
                title: "x".into(),
                classification: None,
                level: None,
                billable_from: None,
                asset: None,
                branch: None,
                cost_centre: None,
                contract_id: None,
            };
            let e = TimeEntry {
                source: "hd".into(),
                id: format!("E{n}"),
                version: 1,
                ticket_id: t.id.clone(),
                customer_id: None,
                technician: "t".into(),
                level: if *second { "2nd" } else { "1st" }.into(),
                activity: "remote".into(),
                started_at: format!("2026-10-{day:02}T08:00:00Z").parse().unwrap(),
                minutes: *minutes,
                billable: true,
                non_billable_reason: None,
                visit_id: None,
                note: None,
            };
            let mut tx = db.begin().await.unwrap();
            let c = work::resolve_customer(&mut tx, None, t.organization_id.as_deref())
                .await
                .unwrap();
            work::upsert_ticket(&mut tx, &t, c.as_deref())
                .await
                .unwrap();
            work::upsert_entry(&mut tx, &e, c.as_deref()).await.unwrap();
            tx.commit().await.unwrap();
        }
        Op::Usage { qty } => {
            let mut tx = db.begin().await.unwrap();
            let u = UsageRecord {
                source: "rmm".into(),
                id: format!("U{n}"),
                version: 1,
                customer_id: "C-1002".into(),
                sku: "BACKUP-GB".into(),
                quantity: Decimal::from(*qty),
                period: period(),
            };
            work::upsert_usage(&mut tx, &u).await.unwrap();
            tx.commit().await.unwrap();
        }
        Op::Preview { customer } => {
            let _ = run::preview(db, period(), customer.map(|c| CUSTOMERS[c]), "p").await;
        }
        Op::WriteOff { run: i } => {
            if let Some(id) = nth_run(db, *i).await {
                if let Ok(r) = run::load(db, &id).await {
                    if let Some(e) = r.targets.iter().flat_map(|t| &t.rating.entries).next() {
                        let t = drehkreuz::billing::WriteOffTarget::Entry(e.entry_id.clone());
                        let _ = run::adjust(db, &id, t, "Kulanz", "p").await;
                    }
                }
            }
        }
        Op::Approve { run: i } => {
            if let Some(id) = nth_run(db, *i).await {
                let _ = run::approve(db, &id, "p").await;
            }
        }
        Op::Finalize { run: i } => {
            if let Some(id) = nth_run(db, *i).await {
                let _ = run::finalize(db, &id, "p").await;
            }
        }
        Op::Release { run: i } => {
            if let Some(id) = nth_run(db, *i).await {
                if let Ok(r) = run::load(db, &id).await {
                    let held: Vec<String> = r
                        .targets
                        .iter()
                        .flat_map(|t| &t.rating.entries)
                        .filter(|e| e.split.held > 0)
                        .map(|e| e.entry_id.clone())
                        .collect();
                    for e in held {
                        let _ = run::release(db, &id, &e, "p").await;
                    }
                }
            }
        }
        Op::Credit {
            invoice,
            line,
            rebill,
        } => {
            let numbers: Vec<String> = sqlx::query_scalar(
                "SELECT number FROM invoices WHERE kind = 'invoice' ORDER BY number",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            if let Some(n) = numbers.get(*invoice) {
                let lines: Vec<usize> = line.iter().copied().collect();
                let _ = run::credit_lines(db, n, &lines, *rebill, "Korrektur", "p").await;
            }
        }
    }
}

async fn nth_run(db: &Db, i: usize) -> Option<String> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM invoice_runs ORDER BY created_at DESC, id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    ids.get(i).cloned()
}

async fn check(db: &Db) {
    let docs: Vec<String> = sqlx::query_scalar("SELECT document FROM invoices ORDER BY number")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let all: Vec<Invoice> = docs
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // No 0,00 € invoice.
    for i in all.iter().filter(|i| i.kind == InvoiceKind::Invoice) {
        assert!(!i.totals.net.is_zero(), "0,00 € invoice {}", i.number);
    }
    // Gapless numbers (invoices and credit notes share the range).
    let mut nums: Vec<u32> = all
        .iter()
        .map(|i| i.number.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    nums.sort();
    for (k, n) in nums.iter().enumerate() {
        assert_eq!(*n as usize, k + 1, "gapless: {nums:?}");
    }
    // Every entry and usage record on at most one live invoice line (invoices − credit notes).
    let mut live: HashMap<String, i64> = HashMap::new();
    for i in &all {
        let sign = if i.kind == InvoiceKind::Invoice {
            1
        } else {
            -1
        };
        for l in &i.lines {
            let mut items: Vec<String> = l
                .entry_ids
                .iter()
                .map(|e| format!("entry {e} {}", l.key.starts_with("R:")))
                .collect();
            if l.key.starts_with("USAGE:") || l.key == "FEE" {
                items.push(format!("{} {}", l.key, i.contract_id));
            }
            for it in items {
                *live.entry(it).or_default() += sign;
            }
        }
    }
    for (item, n) in &live {
        assert!((0..=1).contains(n), "{item} on {n} live invoices");
    }
    // The ledger's billed usage equals the usage on live invoices.
    let billed: Vec<String> = sqlx::query_scalar(
        "SELECT amount FROM settlements WHERE kind = 'usage' AND state = 'billed'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let ledger: Decimal = billed.iter().map(|a| a.parse::<Decimal>().unwrap()).sum();
    let on_invoices: Decimal = all
        .iter()
        .flat_map(|i| i.lines.iter())
        .filter(|l| l.key.starts_with("USAGE:"))
        .map(|l| l.net)
        .sum();
    assert_eq!(ledger, on_invoices, "billed usage");
    // Every finalized invoice is in the DATEV booking export.
    if !all.is_empty() {
        let s = datev::ExtfSettings {
            consultant_number: 29098,
            client_number: 55003,
            fiscal_year_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            account_length: 4,
            chart: datev::Chart::Skr03,
            exported_by: "drehkreuz".into(),
        };
        let files =
            drehkreuz::export::datev_extf_files(&s, &all, chrono::Utc::now().naive_utc()).unwrap();
        let stapel: Vec<u8> = files
            .iter()
            .filter(|f| f.name.contains("Buchungsstapel"))
            .flat_map(|f| f.bytes.clone())
            .collect();
        let text = String::from_utf8_lossy(&stapel);
        for i in &all {
            assert!(
                text.contains(&i.number),
                "{} not in the booking export",
                i.number
            );
        }
    }
}

async fn scenario(db: Db, ops: Vec<Op>) {
    let md = MasterData::from_toml(&format!("{MD}\n{EXTRA}")).unwrap();
    drehkreuz::masterdata::import(&db, &md, "p").await.unwrap();
    for (n, op) in ops.iter().enumerate() {
        apply(&db, op, n).await;
        check(&db).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn exactly_once_sqlite(ops in proptest::collection::vec(op(), 4..18)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (db, _u, _d) = fresh_sqlite().await;
            scenario(db, ops).await;
        });
    }

    #[test]
    fn exactly_once_postgres(ops in proptest::collection::vec(op(), 4..18)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            if let Some((db, _, _pg)) = fresh_pg().await {
                scenario(db, ops).await;
            }
        });
    }
}
