//! Store conformance: the same checks against SQLite and PostgreSQL (real, on loopback).

use crate::support::*;
use async_trait::async_trait;
use canonical::Envelope;
use drehkreuz::schedule::{Entry, Job, Scheduler};
use drehkreuz::store::deadletter::{self, DeathNote};
use drehkreuz::store::{inbox, now_ms, outbox, schedule, Db};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn ev(n: usize) -> Envelope {
    let t = "2026-05-04T10:00:00.123456Z".parse().unwrap();
    Envelope::new("/test/store", "test.created", &n.to_string(), "1", t, &n).unwrap()
}

async fn migrations_are_idempotent(db: Db) {
    db.migrate().await.expect("second migrate is a no-op");
    assert!(db.ping().await);
}

async fn outbox_lifecycle(db: Db) {
    // Rolled back: nothing was written.
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(&mut tx, &ev(1)).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);

    outbox::enqueue_all(&db, &[ev(1), ev(2), ev(3)])
        .await
        .unwrap();
    assert_eq!(outbox::backlog(&db).await.unwrap(), 3);
    let claimed = outbox::claim(&db, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed[0].id < claimed[1].id, "oldest first");
    assert_eq!(claimed[0].envelope, ev(1));
    // Leased rows are invisible to the next claim.
    let rest = outbox::claim(&db, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].envelope.subject.as_deref(), Some("3"));

    let mut tx = db.begin().await.unwrap();
    outbox::mark_sent(&mut tx, &[claimed[0].id, claimed[1].id])
        .await
        .unwrap();
    outbox::mark_failed(&mut tx, rest[0].id, now_ms() + 60_000, "broker down")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outbox::backlog(&db).await.unwrap(), 1);
    assert!(
        outbox::claim(&db, 10).await.unwrap().is_empty(),
        "failed row waits for its retry time"
    );

    let mut tx = db.begin().await.unwrap();
    outbox::mark_failed(&mut tx, rest[0].id, 0, "broker down again")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let again = outbox::claim(&db, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(outbox::prune_sent(&db, now_ms() + 1).await.unwrap(), 2);
}

async fn concurrent_claims_are_disjoint(db: Db) {
    let events: Vec<_> = (0..120).map(ev).collect();
    outbox::enqueue_all(&db, &events).await.unwrap();
    let mut handles = vec![];
    for _ in 0..4 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = vec![];
            loop {
                let got = outbox::claim(&db, 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
            mine
        }));
    }
    let mut all = vec![];
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 120, "every row claimed");
    assert_eq!(unique.len(), 120, "no row claimed twice");
}

async fn inbox_dedupes_and_rolls_back(db: Db) {
    let mut tx = db.begin().await.unwrap();
    assert!(inbox::claim(&mut tx, "billing", "m1").await.unwrap());
    tx.rollback().await.unwrap();
    assert!(
        !inbox::contains(&db, "billing", "m1").await.unwrap(),
        "rolled back with the effect"
    );

    let mut tx = db.begin().await.unwrap();
    assert!(inbox::claim(&mut tx, "billing", "m1").await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(
        !inbox::claim(&mut tx, "billing", "m1").await.unwrap(),
        "duplicate"
    );
    assert!(
        inbox::claim(&mut tx, "export", "m1").await.unwrap(),
        "per consumer"
    );
    tx.commit().await.unwrap();
    assert_eq!(inbox::prune(&db, now_ms() + 1).await.unwrap(), 2);
}

async fn dead_letters_roundtrip(db: Db) {
    let e = ev(42);
    let mut tx = db.begin().await.unwrap();
    let note = DeathNote {
        consumer: "billing",
        reason: "time entry 42: `reason` is required for non-billable work",
        attempts: 1,
        first_failure_at: Some(1_700_000_000_000),
    };
    deadletter::record(&mut tx, &note, &e).await.unwrap();
    let note2 = DeathNote {
        consumer: "export",
        ..note.clone()
    };
    deadletter::record(&mut tx, &note2, &e).await.unwrap();
    tx.commit().await.unwrap();
    let list = deadletter::list(&db, Some("billing"), false, 10)
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(d.envelope, e);
    assert_eq!(d.reason, note.reason);
    assert_eq!(
        d.first_failure_at.unwrap().timestamp_millis(),
        1_700_000_000_000
    );
    assert_eq!(
        deadletter::list(&db, None, false, 10).await.unwrap().len(),
        2
    );
    deadletter::mark_replayed(&db, d.id).await.unwrap();
    assert!(deadletter::list(&db, Some("billing"), false, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        deadletter::list(&db, Some("billing"), true, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(deadletter::get(&db, d.id)
        .await
        .unwrap()
        .unwrap()
        .replayed_at
        .is_some());
    assert!(deadletter::get(&db, 999_999).await.unwrap().is_none());
    assert_eq!(
        deadletter::open_counts(&db).await.unwrap(),
        vec![("export".to_string(), 1)]
    );
}

async fn schedule_claims_once(db: Db) {
    let first = schedule::register(&db, "monthly", "0 0 6 1 * *", "Europe/Berlin")
        .await
        .unwrap();
    // A sleep is the behaviour under test: registering again *later* keeps the first time.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = schedule::register(&db, "monthly", "0 0 6 1 * *", "Europe/Berlin")
        .await
        .unwrap();
    assert_eq!(first, again, "registration time is kept");
    let mut handles = vec![];
    for i in 0..5 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            schedule::claim(&db, "monthly", 1_000, &format!("p{i}"))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for h in handles {
        if h.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

struct Count(AtomicUsize);
#[async_trait]
impl Job for Count {
    async fn run(&self, _due: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn scheduler_runs_once_across_processes_and_catches_up(db: Db) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let mk = |instance: &str| {
        Scheduler::new(
            db.clone(),
            instance,
            vec![Entry::new("monthly", "0 0 6 1 * *", "Europe/Berlin", count.clone()).unwrap()],
        )
    };
    let (a, b) = (mk("hub-a"), mk("hub-b"));
    // Registered long ago; the hubs were down on 1 March 06:00 Berlin and start later that month.
    let registered = vec![0_i64];
    let now: chrono::DateTime<chrono::Utc> = "2026-03-10T12:00:00Z".parse().unwrap();
    let (ra, rb) = tokio::join!(a.tick(now, &registered), b.tick(now, &registered));
    assert_eq!(ra.unwrap().len() + rb.unwrap().len(), 1, "caught up once");
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    // Later ticks in the same month do nothing; the next month's due time runs once.
    assert!(a.tick(now, &registered).await.unwrap().is_empty());
    let april: chrono::DateTime<chrono::Utc> = "2026-04-01T04:00:01Z".parse().unwrap();
    let (ra, rb) = tokio::join!(a.tick(april, &registered), b.tick(april, &registered));
    assert_eq!(ra.unwrap().len() + rb.unwrap().len(), 1);
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    assert_eq!(schedule::run_count(&db, "monthly").await.unwrap(), 2);
    // A schedule registered after the due time does not reach back.
    let late = vec![april.timestamp_millis() + 1];
    let c = mk("hub-c");
    let may_before: chrono::DateTime<chrono::Utc> = "2026-04-20T00:00:00Z".parse().unwrap();
    assert!(c.tick(may_before, &late).await.unwrap().is_empty());
}

macro_rules! conformance {
    ($modname:ident, $db:expr) => {
        mod $modname {
            use super::*;
            #[tokio::test]
            async fn migrations_are_idempotent() {
                let Some((db, _g)) = ($db) else { return };
                super::migrations_are_idempotent(db).await
            }
            #[tokio::test]
            async fn outbox_lifecycle() {
                let Some((db, _g)) = ($db) else { return };
                super::outbox_lifecycle(db).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_claims_are_disjoint() {
                let Some((db, _g)) = ($db) else { return };
                super::concurrent_claims_are_disjoint(db).await
            }
            #[tokio::test]
            async fn inbox_dedupes_and_rolls_back() {
                let Some((db, _g)) = ($db) else { return };
                super::inbox_dedupes_and_rolls_back(db).await
            }
            #[tokio::test]
            async fn dead_letters_roundtrip() {
                let Some((db, _g)) = ($db) else { return };
                super::dead_letters_roundtrip(db).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn schedule_claims_once() {
                let Some((db, _g)) = ($db) else { return };
                super::schedule_claims_once(db).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn scheduler_runs_once_across_processes_and_catches_up() {
                let Some((db, _g)) = ($db) else { return };
                super::scheduler_runs_once_across_processes_and_catches_up(db).await
            }
        }
    };
}

async fn sqlite_db() -> Option<(Db, Option<tempfile::TempDir>)> {
    let (db, _url, dir) = fresh_sqlite().await;
    Some((db, Some(dir)))
}

conformance!(sqlite, sqlite_db().await);
conformance!(
    postgres,
    fresh_pg()
        .await
        .map(|(db, _url, dropped_with_the_test)| (db, dropped_with_the_test))
);
