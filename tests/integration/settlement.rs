//! Every piece of work settled exactly once across runs, contracts, holds and credit notes
//! (issue #11, BILLING.md "Exactly once across the lifecycle"), on SQLite and PostgreSQL.
//! One test per defect of the issue, each derived from the rule it breaks.

use crate::support::*;
use canonical::work::{Period, Ticket, TimeEntry, UsageRecord};
use drehkreuz::billing::run::{self, InvoiceRun};
use drehkreuz::masterdata::MasterData;
use drehkreuz::store::{work, Db};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const MD: &str = include_str!("../../docs/examples/master-data.toml");

/// A T&M contract of the contingent customer C-1001, scoped to 3rd-level work.
const TM_FOR_C1001: &str = r#"
[[contracts]]
id = "K-1001-TM"
customer_id = "C-1001"
kind = "time_and_material"
rounding = { increment_minutes = 15, mode = "up", scope = "entry" }
rate_card = { rates = [{ level = "1st", hourly = "100.00" }, { level = "3rd", hourly = "150.00" }] }
scope = { levels = ["3rd"] }
"#;

/// Pay per use for C-1002 (beside its T&M contract).
const MS_FOR_C1002: &str = r#"
[[contracts]]
id = "K-1002-MS"
customer_id = "C-1002"
kind = "managed_service"
managed_service = { unit_prices = { "BACKUP-GB" = "0.10" } }
"#;

fn period() -> Period {
    "2026-10".parse().unwrap()
}

fn ticket(id: &str, org: &str) -> Ticket {
    Ticket {
        source: "hd".into(),
        id: id.into(),
        version: 1,
        customer_id: None,
        organization_id: Some(org.into()),
        number: None,
        title: "Server".into(),
        classification: None,
        level: None,
        billable_from: None,
        asset: None,
        branch: None,
        cost_centre: None,
        contract_id: None,
    }
}

fn entry(id: &str, ticket: &str, minutes: u32, day: u32, level: &str) -> TimeEntry {
    TimeEntry {
        source: "hd".into(),
        id: id.into(),
        version: 1,
        ticket_id: ticket.into(),
        customer_id: None,
        technician: "anna".into(),
        level: level.into(),
        activity: "remote".into(),
        started_at: format!("2026-10-{day:02}T08:00:00Z").parse().unwrap(),
        minutes,
        billable: true,
        non_billable_reason: None,
        visit_id: None,
        note: None,
    }
}

async fn import(db: &Db, extra: &str) {
    let md = MasterData::from_toml(&format!("{MD}\n{extra}")).unwrap();
    drehkreuz::masterdata::import(db, &md, "test")
        .await
        .unwrap();
}

async fn put(db: &Db, t: &[Ticket], e: &[TimeEntry]) {
    let mut tx = db.begin().await.unwrap();
    for t in t {
        let c = work::resolve_customer(&mut tx, None, t.organization_id.as_deref())
            .await
            .unwrap();
        work::upsert_ticket(&mut tx, t, c.as_deref()).await.unwrap();
    }
    for e in e {
        let c = work::ticket_customer(&mut tx, &e.source, &e.ticket_id)
            .await
            .unwrap()
            .flatten();
        work::upsert_entry(&mut tx, e, c.as_deref()).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn usage(db: &Db, id: &str, sku: &str, qty: Decimal) {
    let mut tx = db.begin().await.unwrap();
    work::upsert_usage(
        &mut tx,
        &UsageRecord {
            source: "rmm".into(),
            id: id.into(),
            version: 1,
            customer_id: "C-1002".into(),
            sku: sku.into(),
            quantity: qty,
            period: period(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn bill(db: &Db, customer: Option<&str>) -> InvoiceRun {
    let r = run::preview(db, period(), customer, "test").await.unwrap();
    run::approve(db, &r.id, "acc").await.unwrap();
    run::finalize(db, &r.id, "acc").await.unwrap()
}

async fn nets(db: &Db, customer: &str) -> Vec<Decimal> {
    let v: Vec<String> = sqlx::query_scalar(
        "SELECT net FROM invoices WHERE customer_id = $1 AND kind = 'invoice' ORDER BY number",
    )
    .bind(customer)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn entry_ids(r: &InvoiceRun, contract: &str) -> Vec<String> {
    r.targets
        .iter()
        .filter(|t| t.contract_id == contract)
        .flat_map(|t| t.rating.entries.iter().map(|e| e.entry_id.clone()))
        .collect()
}

/// Defect 1: one entry, one contract — the ticket's explicit contract, else the scope, else the
/// default; with neither, the entry is a review item and charged nowhere.
async fn one_contract_per_entry(db: Db) {
    let with_default = TM_FOR_C1001.to_string();
    import(&db, &with_default).await;
    let mut named = ticket("T2", "11");
    named.contract_id = Some("K-1001-TM".into());
    put(
        &db,
        &[ticket("T1", "11"), named, ticket("T3", "11")],
        &[
            entry("1", "T1", 60, 5, "1st"),
            entry("2", "T2", 60, 6, "1st"),
            entry("3", "T3", 30, 7, "3rd"),
        ],
    )
    .await;
    let r = run::preview(&db, period(), Some("C-1001"), "test")
        .await
        .unwrap();
    // Entry 1: two contracts, T&M scoped to 3rd level → no scope match, no default, two
    // candidates → ambiguous, on no target.
    assert_eq!(entry_ids(&r, "K-1001-TM"), vec!["2", "3"], "{:?}", r.review);
    assert!(entry_ids(&r, "K-1001").is_empty());
    assert!(
        r.review
            .iter()
            .any(|x| x.contains("time entry 1") && x.contains("ambiguous contract")),
        "{:?}",
        r.review
    );
    // 60 min 1st at 100 €/h + 30 min 3rd at 150 €/h on the T&M contract, nothing drawn twice.
    let tm = r
        .targets
        .iter()
        .find(|t| t.contract_id == "K-1001-TM")
        .unwrap();
    assert_eq!(tm.rating.totals.net, dec!(175.00));
    let k = r
        .targets
        .iter()
        .find(|t| t.contract_id == "K-1001")
        .unwrap();
    assert_eq!(k.rating.contingent.as_ref().unwrap().consumption, dec!(0));

    // Marking the contingent as the default places entry 1 there, and only there.
    let md = MD.replacen(
        "kind = \"contingent\"",
        "kind = \"contingent\"\ndefault = true",
        1,
    );
    let md = MasterData::from_toml(&format!("{md}\n{TM_FOR_C1001}")).unwrap();
    drehkreuz::masterdata::import(&db, &md, "test")
        .await
        .unwrap();
    let r = run::preview(&db, period(), Some("C-1001"), "test")
        .await
        .unwrap();
    assert_eq!(entry_ids(&r, "K-1001"), vec!["1"]);
    assert_eq!(entry_ids(&r, "K-1001-TM"), vec!["2", "3"]);
    assert!(r.review.is_empty(), "{:?}", r.review);
    let k = r
        .targets
        .iter()
        .find(|t| t.contract_id == "K-1001")
        .unwrap();
    assert_eq!(k.rating.contingent.as_ref().unwrap().consumption, dec!(60));
}

/// Defects 2 and 7: a usage record is billed by one run only; an unknown SKU blocks only its
/// own target (the others are approved and finalized).
async fn usage_once_and_blocked_target_isolated(db: Db) {
    import(&db, MS_FOR_C1002).await;
    put(
        &db,
        &[ticket("T1", "12"), ticket("T2", "13")],
        &[
            entry("1", "T1", 60, 5, "1st"),
            entry("2", "T2", 60, 5, "1st"),
        ],
    )
    .await;
    usage(&db, "u1", "BACKUP-GB", dec!(500)).await;
    usage(&db, "u2", "NO-SUCH-SKU", dec!(1)).await;
    let r = run::preview(&db, period(), None, "test").await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("blocked") && p.contains("NO-SUCH-SKU")),
        "{:?}",
        r.problems
    );
    assert!(r.targets.iter().all(|t| t.contract_id != "K-1002-MS"));
    run::approve(&db, &r.id, "acc")
        .await
        .expect("others are approved");
    let fin = run::finalize(&db, &r.id, "acc").await.unwrap();
    assert!(fin
        .targets
        .iter()
        .any(|t| t.customer_id == "C-1003" && t.invoice_number.is_some()));
    assert_eq!(
        nets(&db, "C-1002").await,
        vec![dec!(80.00)],
        "T&M billed, usage blocked"
    );

    // Fix the SKU in master data: the next run bills both usage records once.
    let fixed = MS_FOR_C1002.replace("\"0.10\" }", "\"0.10\", \"NO-SUCH-SKU\" = \"5.00\" }");
    import(&db, &fixed).await;
    bill(&db, None).await;
    assert_eq!(nets(&db, "C-1002").await, vec![dec!(80.00), dec!(55.00)]);
    // A third run of the period bills nothing again: no invoice at all.
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invoices")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    bill(&db, None).await;
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invoices")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after, "nothing new, no invoice (never 0,00 €)");
}

/// Defect 3: a later run of the period gives a contingent customer no 0,00 € invoice and no
/// second fee.
async fn later_run_no_zero_invoice(db: Db) {
    import(&db, "").await;
    put(
        &db,
        &[ticket("T1", "11")],
        &[entry("1", "T1", 60, 5, "1st")],
    )
    .await;
    bill(&db, None).await;
    put(&db, &[], &[entry("2", "T1", 30, 20, "1st")]).await;
    let late = bill(&db, Some("C-1001")).await;
    assert_eq!(entry_ids(&late, "K-1001"), vec!["2"]);
    assert!(late.targets.iter().all(|t| t.invoice_number.is_none()));
    assert_eq!(
        nets(&db, "C-1001").await,
        vec![dec!(850.00)],
        "one fee, one invoice"
    );
    let numbers: Vec<String> = sqlx::query_scalar("SELECT number FROM invoices ORDER BY number")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let next: i64 = sqlx::query_scalar("SELECT next FROM number_ranges WHERE id = 'RE'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        numbers.len() as i64 + 1,
        next,
        "no number used without an invoice"
    );
}

/// Defect 4: caps count every run of the period; the held part of a split entry stays held
/// until released, then the next run bills exactly it.
async fn budget_caps_across_runs_and_release(db: Db) {
    import(&db, "").await;
    // C-1004: budget 1st level 480 min at 85 €/h, 15-min blocks.
    put(
        &db,
        &[ticket("T1", "14")],
        &[
            entry("1", "T1", 420, 5, "1st"),
            entry("2", "T1", 120, 6, "1st"),
        ],
    )
    .await;
    let first = bill(&db, None).await;
    assert_eq!(
        nets(&db, "C-1004").await,
        vec![dec!(680.00)],
        "480 min × 85 €/h"
    );
    // A late entry: the cap is used up by the first run, so it is held, not billed.
    put(&db, &[], &[entry("3", "T1", 45, 20, "1st")]).await;
    let second = bill(&db, Some("C-1004")).await;
    let e3 = second
        .targets
        .iter()
        .flat_map(|t| &t.rating.entries)
        .find(|e| e.entry_id == "3")
        .unwrap();
    assert_eq!((e3.split.invoiced, e3.split.held), (0, 45));
    assert_eq!(
        nets(&db, "C-1004").await.len(),
        1,
        "nothing billed beyond the cap"
    );
    // Entry 2's held 60 minutes were not stamped billed: releasing them bills them next run.
    assert!(
        run::release(&db, &first.id, "1", "acc").await.is_err(),
        "entry 1 has nothing held"
    );
    run::release(&db, &first.id, "2", "acc").await.unwrap();
    assert!(
        run::release(&db, &first.id, "2", "acc").await.is_err(),
        "released once"
    );
    let third = bill(&db, Some("C-1004")).await;
    assert_eq!(
        nets(&db, "C-1004").await,
        vec![dec!(680.00), dec!(85.00)],
        "60 min × 85 €/h"
    );
    assert!(entry_ids(&third, "K-1004").iter().all(|e| e == "2"));
    // Nothing more: entry 3 stays held until someone releases it.
    let fourth = run::preview(&db, period(), Some("C-1004"), "test")
        .await
        .unwrap();
    assert!(fourth.targets.iter().all(|t| t.rating.lines.is_empty()));
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'invoice_run.release'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);
}

/// Defect 5: a plain credit note keeps the items settled (by the credit note); nothing —
/// neither the credited nor the written-off work — is billed again.
async fn credit_note_keeps_items_settled(db: Db) {
    import(&db, "").await;
    put(
        &db,
        &[ticket("T1", "12")],
        &[
            entry("1", "T1", 60, 5, "1st"),
            entry("2", "T1", 30, 6, "1st"),
        ],
    )
    .await;
    let r = run::preview(&db, period(), None, "test").await.unwrap();
    run::adjust(
        &db,
        &r.id,
        drehkreuz::billing::WriteOffTarget::Entry("2".into()),
        "Kulanz",
        "acc",
    )
    .await
    .unwrap();
    run::approve(&db, &r.id, "acc").await.unwrap();
    let fin = run::finalize(&db, &r.id, "acc").await.unwrap();
    let number = fin
        .targets
        .iter()
        .find(|t| t.customer_id == "C-1002")
        .and_then(|t| t.invoice_number.clone())
        .unwrap();
    let note = run::credit(&db, &number, "Kundenreklamation", "acc")
        .await
        .unwrap();
    assert_eq!(note.totals.net, dec!(-80.00));
    let next = run::preview(&db, period(), Some("C-1002"), "test")
        .await
        .unwrap();
    assert!(
        entry_ids(&next, "K-1002").is_empty(),
        "credited and written-off work stay settled"
    );
    let state: String =
        sqlx::query_scalar("SELECT state FROM settlements WHERE item = 'entry:hd:2'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, "written_off");
    let doc: String =
        sqlx::query_scalar("SELECT document FROM settlements WHERE item = 'entry:hd:1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(doc, note.number, "settled by the credit note");
}

/// Defect 6: overlapping runs of a period never bill an entry or a fee twice: the newer preview
/// supersedes the older one's targets, and finalize refuses what another run already settled.
async fn overlapping_runs_bill_once(db: Db) {
    import(&db, "").await;
    put(
        &db,
        &[ticket("T1", "11"), ticket("T2", "12")],
        &[
            entry("1", "T1", 60, 5, "1st"),
            entry("2", "T2", 60, 5, "1st"),
        ],
    )
    .await;
    let whole = run::preview(&db, period(), None, "test").await.unwrap();
    let one = run::preview(&db, period(), Some("C-1001"), "test")
        .await
        .unwrap();
    let whole = run::load(&db, &whole.id).await.unwrap();
    assert!(
        whole.targets.iter().all(|t| t.customer_id != "C-1001"),
        "superseded"
    );
    run::approve(&db, &whole.id, "acc").await.unwrap();
    run::approve(&db, &one.id, "acc").await.unwrap();
    run::finalize(&db, &one.id, "acc").await.unwrap();
    run::finalize(&db, &whole.id, "acc").await.unwrap();
    assert_eq!(nets(&db, "C-1001").await, vec![dec!(850.00)]);
    assert_eq!(nets(&db, "C-1002").await, vec![dec!(80.00)]);

    // An approved run overlapped by a newer one that finalized first is refused as a whole.
    put(&db, &[], &[entry("3", "T2", 30, 20, "1st")]).await;
    let a = run::preview(&db, period(), Some("C-1002"), "test")
        .await
        .unwrap();
    run::approve(&db, &a.id, "acc").await.unwrap();
    bill(&db, None).await;
    let err = run::finalize(&db, &a.id, "acc")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already settled") && err.contains("entry:hd:3"),
        "{err}"
    );
    assert_eq!(nets(&db, "C-1002").await, vec![dec!(80.00), dec!(40.00)]);
}

/// Defect 9: `billable_from` — before it diagnosis (free), after it billable, whatever remains
/// of the free minutes (C-1003: 30 free minutes, 5-min blocks per ticket, 70 €/h).
async fn billable_from_grants_no_second_diagnosis(db: Db) {
    import(&db, "").await;
    let mut t = ticket("T1", "13");
    t.billable_from = Some("2026-10-05T09:00:00Z".parse().unwrap());
    let mut before = entry("1", "T1", 40, 5, "1st");
    before.started_at = "2026-10-05T08:00:00Z".parse().unwrap();
    let mut after = entry("2", "T1", 20, 5, "1st");
    after.started_at = "2026-10-05T09:10:00Z".parse().unwrap();
    put(&db, &[t], &[before, after]).await;
    let r = run::preview(&db, period(), Some("C-1003"), "test")
        .await
        .unwrap();
    let target = &r.targets[0];
    let e: Vec<(u32, u32)> = target
        .rating
        .entries
        .iter()
        .map(|e| (e.split.free_diagnosis, e.split.invoiced))
        .collect();
    assert_eq!(e, vec![(40, 0), (0, 20)]);
    assert_eq!(target.rating.totals.net, dec!(23.33), "20 min × 70 €/h");
}

/// A usage line written off stays written off: the next run does not bill it.
async fn written_off_usage_stays_written_off(db: Db) {
    import(&db, MS_FOR_C1002).await;
    usage(&db, "u1", "BACKUP-GB", dec!(500)).await;
    let r = run::preview(&db, period(), Some("C-1002"), "test")
        .await
        .unwrap();
    let line = drehkreuz::billing::WriteOffTarget::Line("USAGE:BACKUP-GB:u1".into());
    run::adjust(&db, &r.id, line, "Testphase", "acc")
        .await
        .unwrap();
    run::approve(&db, &r.id, "acc").await.unwrap();
    run::finalize(&db, &r.id, "acc").await.unwrap();
    assert!(
        nets(&db, "C-1002").await.is_empty(),
        "nothing to bill, no invoice"
    );
    let next = run::preview(&db, period(), Some("C-1002"), "test")
        .await
        .unwrap();
    assert!(next.targets.iter().all(|t| t.rating.lines.is_empty()));
    let state: String =
        sqlx::query_scalar("SELECT state FROM settlements WHERE item = 'usage:C-1002:u1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, "written_off");
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (db, _u, _d) = fresh_sqlite().await;
                super::$name(db).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some((db, _, _pg)) = fresh_pg().await else {
                    return;
                };
                super::$name(db).await
            }
        }
    };
}

both!(one_contract_per_entry);
both!(usage_once_and_blocked_target_isolated);
both!(later_run_no_zero_invoice);
both!(budget_caps_across_runs_and_release);
both!(credit_note_keeps_items_settled);
both!(overlapping_runs_bill_once);
both!(billable_from_grants_no_second_diagnosis);
both!(written_off_usage_stays_written_off);
