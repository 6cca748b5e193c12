//! Invoice runs end to end on the real store (SQLite and PostgreSQL): master data, intake
//! through the bus, preview → adjust → approve → finalize, gapless numbers under concurrent
//! finalizers, immutability, credit notes, late entries in the next run.

use crate::support::*;
use canonical::work::{Period, Ticket, TimeEntry};
use drehkreuz::billing::run::{self, RunState};
use drehkreuz::billing::WriteOffTarget;
use drehkreuz::masterdata::MasterData;
use drehkreuz::store::{work, Db};
use rust_decimal_macros::dec;

const MD: &str = include_str!("../../docs/examples/master-data.toml");

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
        title: "Drucker".into(),
        classification: None,
        level: None,
        billable_from: None,
        asset: None,
        branch: None,
        cost_centre: None,
        contract_id: None,
    }
}

fn entry(id: &str, ticket: &str, minutes: u32, day: u32) -> TimeEntry {
    TimeEntry {
        source: "hd".into(),
        id: id.into(),
        version: 1,
        ticket_id: ticket.into(),
        customer_id: None,
        technician: "anna".into(),
        level: "1st".into(),
        activity: "remote".into(),
        started_at: format!("2026-10-{day:02}T08:00:00Z").parse().unwrap(),
        minutes,
        billable: true,
        non_billable_reason: None,
        visit_id: None,
        note: None,
    }
}

/// Stores work directly through the intake handler's store functions (the bus path is covered
/// by tests/intake.rs and the demo).
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

async fn setup(db: &Db) {
    drehkreuz::masterdata::import(db, &MasterData::from_toml(MD).unwrap(), "test")
        .await
        .unwrap();
    put(
        db,
        &[ticket("T1", "11"), ticket("T2", "12"), ticket("T3", "13")],
        &[
            entry("1", "T1", 90, 5),
            entry("2", "T1", 20, 6),
            entry("3", "T2", 7, 7),
            entry("4", "T2", 50, 8),
            entry("5", "T3", 45, 9),
        ],
    )
    .await;
}

async fn invoices(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT number FROM invoices ORDER BY number")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn run_lifecycle(db: Db) {
    setup(&db).await;
    let r = run::preview(&db, period(), None, "test").await.unwrap();
    assert_eq!(r.state, RunState::Preview);
    assert_eq!(r.targets.len(), 5, "{:?}", r.problems);
    // C-1002 (T&M, 15 min up, 1st 80 €/h): 7 → 15, 50 → 60 = 75 min = 100,00 €.
    let t2 = r
        .targets
        .iter()
        .find(|t| t.customer_id == "C-1002")
        .unwrap();
    assert_eq!(t2.rating.totals.net, dec!(100.00));
    // Same period again: the same open run, recomputed.
    let again = run::preview(&db, period(), None, "test").await.unwrap();
    assert_eq!(again.id, r.id);

    // Adjust: write off entry 3 (reason required), then approve.
    assert!(
        run::adjust(&db, &r.id, WriteOffTarget::Entry("3".into()), " ", "acc")
            .await
            .is_err()
    );
    let adj = run::adjust(
        &db,
        &r.id,
        WriteOffTarget::Entry("3".into()),
        "Kulanz",
        "acc",
    )
    .await
    .unwrap();
    let t2 = adj
        .targets
        .iter()
        .find(|t| t.customer_id == "C-1002")
        .unwrap();
    assert_eq!(t2.rating.totals.net, dec!(80.00));
    assert!(t2
        .report
        .entries
        .iter()
        .any(|e| e.entry_id == "3" && e.status.contains("abgeschrieben: Kulanz")));
    let ap = run::approve(&db, &r.id, "acc").await.unwrap();
    assert_eq!(ap.state, RunState::Approved);
    assert!(
        run::adjust(&db, &r.id, WriteOffTarget::Entry("4".into()), "x", "acc")
            .await
            .is_err(),
        "frozen"
    );

    let fin = run::finalize(&db, &r.id, "acc").await.unwrap();
    assert_eq!(fin.state, RunState::Finalized);
    assert_eq!(
        invoices(&db).await,
        vec!["RE-2026-00001", "RE-2026-00002", "RE-2026-00003"]
    );
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE routing_key = 'invoice.finalized'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(events, 3);
    // Finalizing twice changes nothing.
    let fin2 = run::finalize(&db, &r.id, "acc").await.unwrap();
    assert_eq!(fin2, fin);
    assert_eq!(invoices(&db).await.len(), 3);
    // The invoice carries what exporters need.
    let inv = run::invoice(&db, "RE-2026-00003").await.unwrap().unwrap();
    assert_eq!(inv.buyer.id, "C-1003");
    assert_eq!(inv.buyer_reference.as_deref(), Some("04011000-12345-67"));
    assert!(inv.seller.is_some());
    assert_eq!(
        inv.service_report_id.as_deref(),
        Some("LN-2026-10-C-1003-K-1003")
    );
    assert_eq!(inv.totals.gross, inv.totals.net + inv.totals.vat);
    // Immutable.
    let upd = sqlx::query("UPDATE invoices SET gross = '0'")
        .execute(&db.pool)
        .await;
    assert!(upd.unwrap_err().to_string().contains("immutable"));
    assert!(sqlx::query("DELETE FROM invoices")
        .execute(&db.pool)
        .await
        .is_err());

    // A late entry: the next run of the same period bills only it; the contingent fee is not charged twice.
    put(
        &db,
        &[],
        &[entry("6", "T2", 30, 20), entry("7", "T1", 15, 21)],
    )
    .await;
    let late = run::preview(&db, period(), None, "test").await.unwrap();
    assert_ne!(late.id, r.id);
    let t2 = late
        .targets
        .iter()
        .find(|t| t.customer_id == "C-1002")
        .unwrap();
    assert_eq!(t2.rating.entries.len(), 1);
    assert_eq!(t2.rating.totals.net, dec!(40.00));
    let t1 = late
        .targets
        .iter()
        .find(|t| t.customer_id == "C-1001")
        .unwrap();
    assert_eq!(t1.rating.entries.len(), 1);
    assert!(
        t1.rating
            .lines
            .iter()
            .all(|l| l.key != "FEE" || l.net.is_zero()),
        "no second fee"
    );
    let c = t1.rating.contingent.as_ref().unwrap();
    assert_eq!(
        (c.opening, c.allotment),
        (dec!(480), dec!(0)),
        "continues from the booked closing"
    );
    run::approve(&db, &late.id, "acc").await.unwrap();
    run::finalize(&db, &late.id, "acc").await.unwrap();
    // C-1001's late entry is drawn from the contingent whose fee this period already paid:
    // nothing to bill, so no invoice and no number (never 0,00 €).
    let all = invoices(&db).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[3], "RE-2026-00004");
    let zero: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM invoices WHERE net = '0.00' OR net = '0'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(zero, 0, "no 0,00 € invoice");

    // Correction credit note (Storno mit Neuberechnung): new number, references the original,
    // negative amounts; exactly the credited line's entries are billable again — entry 3, written
    // off in that run, stays written off.
    let note = run::credit_lines(
        &db,
        "RE-2026-00002",
        &[],
        true,
        "Leistung doppelt erfasst",
        "acc",
    )
    .await
    .unwrap();
    assert_eq!(note.number, "RE-2026-00005");
    assert_eq!(note.original_number.as_deref(), Some("RE-2026-00002"));
    assert_eq!(note.totals.net, dec!(-80.00));
    assert!(run::credit(&db, "RE-2026-00002", "again", "acc")
        .await
        .is_err());
    assert!(run::credit(&db, "RE-2026-00002", "", "acc").await.is_err());
    let reopened: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM time_entries WHERE id = '4' AND billed_invoice IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(reopened, 1);
    let next = run::preview(&db, period(), Some("C-1002"), "test")
        .await
        .unwrap();
    let ids: Vec<&str> = next
        .targets
        .iter()
        .flat_map(|t| t.rating.entries.iter().map(|e| e.entry_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec!["4"],
        "only the credited line's entry; the written-off one stays"
    );
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for a in [
        "master_data.import",
        "invoice_run.write_off",
        "invoice_run.approve",
        "invoice_run.finalize",
        "invoice.credit_note",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}

async fn concurrent_finalizers_are_gapless(db: Db) {
    setup(&db).await;
    // Three approved runs (one per customer), each finalized by three racing finalizers.
    let mut ids = vec![];
    for c in ["C-1001", "C-1002", "C-1003"] {
        let r = run::preview(&db, period(), Some(c), "t").await.unwrap();
        run::approve(&db, &r.id, "t").await.unwrap();
        ids.push(r.id);
    }
    let mut handles = vec![];
    for id in &ids {
        for _ in 0..3 {
            let (db, id) = (db.clone(), id.clone());
            handles.push(tokio::spawn(async move {
                run::finalize(&db, &id, "t").await.map(|r| r.state)
            }));
        }
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap(), RunState::Finalized);
    }
    assert_eq!(
        invoices(&db).await,
        vec!["RE-2026-00001", "RE-2026-00002", "RE-2026-00003"]
    );
    let next: i64 = sqlx::query_scalar("SELECT next FROM number_ranges WHERE id = 'RE'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(next, 4, "no number consumed without an invoice");
}

async fn invalid_master_data_names_the_place_and_changes_nothing(db: Db) {
    let bad = MD
        .replace("datev_account = 10002", "datev_account = 5")
        .replace("overage_hourly = \"95.00\", ", "");
    let doc = MasterData::from_toml(&bad).unwrap();
    let err = drehkreuz::masterdata::import(&db, &doc, "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("customers[1].datev_account"), "{err}");
    assert!(
        err.contains("contracts[0].contingent.overage_hourly"),
        "{err}"
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing written");
    let syntax = MasterData::from_toml("[[customers]]\nid = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        syntax.contains("line 2") || syntax.contains("id"),
        "{syntax}"
    );
    let unknown = MasterData::from_toml("[[contracts]]\nid = \"K\"\ncustomer_id = \"X\"\nkind = \"time_and_material\"\nrateCard = 1\n").unwrap_err().to_string();
    assert!(unknown.contains("rateCard"), "{unknown}");
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

both!(run_lifecycle);
both!(concurrent_finalizers_are_gapless);
both!(invalid_master_data_names_the_place_and_changes_nothing);

/// The monthly schedule creates the previous month's preview run once, even with several hub
/// processes ticking at the same moment.
async fn monthly_schedule_creates_the_preview_once(db: Db) {
    use drehkreuz::schedule::{Entry, MonthlyPreview, Scheduler};
    setup(&db).await;
    let mk = |name: &str| {
        Scheduler::new(
            db.clone(),
            name,
            vec![Entry::new(
                "invoice_run",
                "0 0 6 1 * *",
                "Europe/Berlin",
                std::sync::Arc::new(MonthlyPreview { db: db.clone() }),
            )
            .unwrap()],
        )
    };
    let (a, b) = (mk("hub-a"), mk("hub-b"));
    let now: chrono::DateTime<chrono::Utc> = "2026-11-01T05:00:01Z".parse().unwrap(); // 06:00:01 Berlin
    let reg = vec![0i64];
    let (ra, rb) = tokio::join!(a.tick(now, &reg), b.tick(now, &reg));
    assert_eq!(ra.unwrap().len() + rb.unwrap().len(), 1);
    let runs = run::list(&db, Some("2026-10")).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].2, "preview");
    assert!(a.tick(now, &reg).await.unwrap().is_empty());
    assert_eq!(run::list(&db, Some("2026-10")).await.unwrap().len(), 1);
}

both!(monthly_schedule_creates_the_preview_once);

/// Decentral branches and cost centres get their own invoices; a central branch does not.
async fn billing_targets_split_by_branch_and_cost_centre(db: Db) {
    let md = MD
        .replace(
            "address = { street = \"Ostertorsteinweg 3\", postcode = \"28203\", city = \"Bremen\" }",
            "address = { street = \"Ostertorsteinweg 3\", postcode = \"28203\", city = \"Bremen\" }\n\
             branches = [{ id = \"VEG\", name = \"Filiale Vegesack\", billing = \"decentral\", address = { street = \"Gerhard-Rohlfs-Straße 1\", postcode = \"28757\", city = \"Bremen\" } }, { id = \"HAST\", name = \"Filiale Hastedt\", billing = \"central\" }]",
        )
        .replace("id = \"K-1002\"\ncustomer_id = \"C-1002\"\nkind = \"time_and_material\"", "id = \"K-1002\"\ncustomer_id = \"C-1002\"\nkind = \"time_and_material\"\nsplit_by_cost_centre = true");
    drehkreuz::masterdata::import(&db, &MasterData::from_toml(&md).unwrap(), "t")
        .await
        .unwrap();
    let mut veg = ticket("V1", "12");
    veg.branch = Some("VEG".into());
    let mut hast = ticket("H1", "12");
    hast.branch = Some("HAST".into());
    let mut cc = ticket("B1", "12");
    cc.cost_centre = Some("Backstube".into());
    put(
        &db,
        &[ticket("T2", "12"), veg, hast, cc],
        &[
            entry("1", "T2", 60, 5),
            entry("2", "V1", 30, 6),
            entry("3", "H1", 15, 7),
            entry("4", "B1", 45, 8),
        ],
    )
    .await;
    let r = run::preview(&db, period(), Some("C-1002"), "t")
        .await
        .unwrap();
    let mut keys: Vec<_> = r
        .targets
        .iter()
        .map(|t| (t.branch.clone(), t.cost_centre.clone(), t.rating.totals.net))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            (None, None, dec!(100.00)), // T2 60 min + central branch H1 15 min = 75 min × 80 €/h
            (None, Some("Backstube".into()), dec!(60.00)),
            (Some("VEG".into()), None, dec!(40.00)),
        ]
    );
    run::approve(&db, &r.id, "t").await.unwrap();
    let f = run::finalize(&db, &r.id, "t").await.unwrap();
    let veg_inv = f
        .targets
        .iter()
        .find(|t| t.branch.as_deref() == Some("VEG"))
        .unwrap()
        .invoice_number
        .clone()
        .unwrap();
    let inv = run::invoice(&db, &veg_inv).await.unwrap().unwrap();
    assert_eq!(inv.buyer.name, "Bäckerei Schmidt KG – Filiale Vegesack");
    assert_eq!(inv.buyer.address.postcode, "28757");
    assert_eq!(inv.note.as_deref(), Some("Filiale VEG"));
    assert_eq!(invoices(&db).await.len(), 3);
    // The stored master data reads back as the same document schema.
    let back = drehkreuz::masterdata::export(&db).await.unwrap();
    assert!(back
        .contracts
        .iter()
        .any(|c| c.id == "K-1002" && c.split_by_cost_centre));
    assert_eq!(
        back.customers
            .iter()
            .find(|c| c.id == "C-1002")
            .unwrap()
            .branches
            .len(),
        2
    );
}

both!(billing_targets_split_by_branch_and_cost_centre);
