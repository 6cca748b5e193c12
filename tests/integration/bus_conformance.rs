//! Bus conformance: the same scenarios against the embedded bus (SQLite) and RabbitMQ
//! (with PostgreSQL as the store), both real, on loopback.

use crate::support::{self, *};
use async_trait::async_trait;
use canonical::Envelope;
use drehkreuz::bus::{Bus, Consumer, ConsumerSpec, Handler, HandlerError};
use drehkreuz::config::{BusKind, Config};
use drehkreuz::relay::Relay;
use drehkreuz::store::{deadletter, outbox, Db, Tx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the test handler does with the n-th attempt (1-based) of a message.
type Behaviour = dyn Fn(&Envelope, usize) -> Result<(), HandlerError> + Send + Sync;

/// A handler that records an effect row per applied message and the time of every attempt.
struct Recorder {
    behaviour: Box<Behaviour>,
    attempts: Mutex<HashMap<String, Vec<Instant>>>,
    work: Duration,
}

impl Recorder {
    fn new(
        b: impl Fn(&Envelope, usize) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Box::new(b),
            attempts: Mutex::new(HashMap::new()),
            work: Duration::ZERO,
        })
    }
    fn slow(
        b: impl Fn(&Envelope, usize) -> Result<(), HandlerError> + Send + Sync + 'static,
        work: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Box::new(b),
            attempts: Mutex::new(HashMap::new()),
            work,
        })
    }
    fn attempts_of(&self, id: &str) -> Vec<Instant> {
        self.attempts
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let n = {
            let mut a = self.attempts.lock().unwrap();
            let v = a.entry(event.id.clone()).or_default();
            v.push(Instant::now());
            v.len()
        };
        (self.behaviour)(event, n)?;
        if !self.work.is_zero() {
            // A sleep is the behaviour here: a handler that takes this long per message.
            tokio::time::sleep(self.work).await;
        }
        sqlx::query("INSERT INTO test_effects (message_id) VALUES ($1)")
            .bind(&event.id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

fn event(n: usize, kind: &str) -> Envelope {
    Envelope::new(
        "/test/conformance",
        kind,
        &format!("rec-{n}"),
        "1",
        chrono::Utc::now(),
        &serde_json::json!({ "n": n, "pad": "x".repeat(64) }),
    )
    .unwrap()
}

/// One running bus with its store, relay and consumers.
struct Fixture {
    cfg: Config,
    db: Db,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<String>,
    _dir: Option<tempfile::TempDir>,
    /// Dropped last: the test's vhost (with its queues) and its database.
    _vhost: Option<Arc<support::RabbitVhost>>,
    _pg: Option<Arc<support::PgDatabase>>,
}

async fn fixture(kind: BusKind, tweak: impl FnOnce(&mut Config)) -> Option<Fixture> {
    let (db, url, dir, vhost, pg) = match kind {
        BusKind::Embedded => {
            let (db, url, dir) = fresh_sqlite().await;
            (db, url, Some(dir), None, None)
        }
        BusKind::Rabbitmq => {
            let vhost = support::rabbit_vhost().await?;
            let (db, url, pg) = fresh_pg().await?;
            (db, url, None, Some(Arc::new(vhost)), Some(Arc::new(pg)))
        }
    };
    sqlx::query("CREATE TABLE test_effects (message_id TEXT NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut cfg = test_config(kind, &url);
    if let Some(v) = &vhost {
        v.configure(&mut cfg);
    }
    tweak(&mut cfg);
    let bus = drehkreuz::bus::from_config(&cfg, &db).await.unwrap();
    Some(Fixture {
        cfg,
        db,
        bus,
        shutdown: CancellationToken::new(),
        tasks: vec![],
        consumers: vec![],
        _dir: dir,
        _vhost: vhost,
        _pg: pg,
    })
}

impl Fixture {
    async fn start(&mut self, consumers: Vec<(&str, Arc<dyn Handler>)>) {
        let list: Vec<Consumer> = consumers
            .into_iter()
            .map(|(name, h)| Consumer::new(ConsumerSpec::new(name, &["test.#"]), h))
            .collect();
        self.consumers = list.iter().map(|c| c.spec.name.clone()).collect();
        let specs: Vec<_> = list.iter().map(|c| c.spec.clone()).collect();
        self.bus.declare(&specs).await.unwrap();
        let bus = self.bus.clone();
        let sd = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            bus.run(list, sd).await.unwrap();
        }));
        let relay = Relay::new(
            self.db.clone(),
            self.bus.clone(),
            Arc::new(Notify::new()),
            Duration::from_millis(20),
            self.cfg.bus.retry_delays_ms.clone(),
        );
        self.tasks
            .push(tokio::spawn(relay.run(self.shutdown.clone())));
    }

    async fn send(&self, events: &[Envelope]) {
        outbox::enqueue_all(&self.db, events).await.unwrap();
    }

    async fn effects(&self, id: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM test_effects WHERE message_id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn total_effects(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM test_effects")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn dead(&self, consumer: &str) -> Vec<deadletter::DeadLetter> {
        deadletter::list(&self.db, Some(consumer), true, 1000)
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("graceful stop")
                .unwrap();
        }
        let names: Vec<&str> = self.consumers.iter().map(|s| s.as_str()).collect();
        cleanup_rabbit(&self.cfg, &names).await;
    }
}

const WAIT: Duration = Duration::from_secs(30);

async fn publish_consume_ack(kind: BusKind) {
    let Some(mut f) = fixture(kind, |_| {}).await else {
        return;
    };
    let rec = Recorder::new(|_, _| Ok(()));
    f.start(vec![("worker", rec.clone())]).await;
    let events: Vec<_> = (0..20).map(|n| event(n, "test.created")).collect();
    f.send(&events).await;
    eventually(WAIT, "20 effects", || async {
        f.total_effects().await == 20
    })
    .await;
    for e in &events {
        assert_eq!(f.effects(&e.id).await, 1, "each message applied once");
    }
    assert_eq!(outbox::backlog(&f.db).await.unwrap(), 0, "outbox drained");
    // Acked: nothing left in the consumer's queue.
    match kind {
        BusKind::Embedded => {
            eventually(WAIT, "embedded queue empty", || async {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM bus_queue")
                    .fetch_one(&f.db.pool)
                    .await
                    .unwrap()
                    == 0
            })
            .await
        }
        BusKind::Rabbitmq => {
            let q = drehkreuz::bus::topology::Names::new(&f.cfg.bus.prefix).queue("worker");
            eventually(WAIT, "rabbit queue empty", || async {
                rabbit_queue_depth(&f.cfg, &q).await == 0
            })
            .await;
        }
    }
    f.stop().await;
}

async fn transient_failure_retried_with_growing_delay(kind: BusKind) {
    let Some(mut f) = fixture(kind, |c| c.bus.delivery_limit = 5).await else {
        return;
    };
    let rec = Recorder::new(|_, attempt| {
        if attempt <= 3 {
            Err(HandlerError::Transient(format!(
                "peer down (attempt {attempt})"
            )))
        } else {
            Ok(())
        }
    });
    f.start(vec![("worker", rec.clone())]).await;
    let e = event(1, "test.created");
    f.send(std::slice::from_ref(&e)).await;
    eventually(WAIT, "effect after retries", || async {
        f.effects(&e.id).await == 1
    })
    .await;
    let at = rec.attempts_of(&e.id);
    assert_eq!(at.len(), 4, "three failures, then success");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Configured tiers: 200, 400, 800 ms.
    assert!(
        gaps[0] >= Duration::from_millis(190),
        "first retry waited {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_millis(390),
        "second retry waited {:?}",
        gaps[1]
    );
    assert!(
        gaps[2] >= Duration::from_millis(790),
        "third retry waited {:?}",
        gaps[2]
    );
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "delays grow: {gaps:?}"
    );
    assert!(f.dead("worker").await.is_empty());
    f.stop().await;
}

async fn permanent_failure_goes_to_dlq_with_reason(kind: BusKind) {
    let Some(mut f) = fixture(kind, |_| {}).await else {
        return;
    };
    let rec = Recorder::new(|e, _| {
        if e.subject.as_deref() == Some("rec-666") {
            Err(HandlerError::Permanent(
                "customer `C-404` is unknown".into(),
            ))
        } else {
            Ok(())
        }
    });
    f.start(vec![("worker", rec.clone())]).await;
    let bad = event(666, "test.created");
    let good = event(1, "test.created");
    f.send(&[bad.clone(), good.clone()]).await;
    eventually(WAIT, "dead letter recorded", || async {
        !f.dead("worker").await.is_empty()
    })
    .await;
    eventually(WAIT, "the rest keeps flowing", || async {
        f.effects(&good.id).await == 1
    })
    .await;
    let dead = f.dead("worker").await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.message_id, bad.id);
    assert_eq!(d.consumer, "worker");
    assert_eq!(d.routing_key, "test.created");
    assert!(
        d.reason.contains("customer `C-404` is unknown"),
        "reason: {}",
        d.reason
    );
    assert_eq!(d.attempts, 1, "permanent errors are not retried");
    assert!(d.first_failure_at.is_some());
    assert_eq!(d.envelope.data, bad.data, "the message is kept whole");
    assert_eq!(rec.attempts_of(&bad.id).len(), 1);
    assert_eq!(f.effects(&bad.id).await, 0);
    f.stop().await;
}

async fn delivery_limit_sends_to_dlq(kind: BusKind) {
    let Some(mut f) = fixture(kind, |c| {
        c.bus.delivery_limit = 3;
        c.bus.retry_delays_ms = vec![50, 100];
    })
    .await
    else {
        return;
    };
    let rec = Recorder::new(|_, n| Err(HandlerError::Transient(format!("still down ({n})"))));
    f.start(vec![("worker", rec.clone())]).await;
    let e = event(7, "test.updated");
    f.send(std::slice::from_ref(&e)).await;
    eventually(WAIT, "dead letter after the limit", || async {
        !f.dead("worker").await.is_empty()
    })
    .await;
    let d = &f.dead("worker").await[0];
    assert_eq!(d.attempts, 3);
    assert!(
        d.reason.contains("delivery limit reached after 3 attempts"),
        "reason: {}",
        d.reason
    );
    assert!(
        d.reason.contains("still down (3)"),
        "last error kept: {}",
        d.reason
    );
    consistently(
        Duration::from_millis(300),
        "no attempt beyond the limit",
        || async { rec.attempts_of(&e.id).len() == 3 },
    )
    .await;
    assert_eq!(f.effects(&e.id).await, 0);
    f.stop().await;
}

async fn same_message_twice_one_effect(kind: BusKind) {
    let Some(mut f) = fixture(kind, |c| c.bus.concurrency = 1).await else {
        return;
    };
    let rec = Recorder::new(|_, _| Ok(()));
    f.start(vec![("worker", rec.clone())]).await;
    let e = event(5, "test.created");
    let marker = event(6, "test.created");
    // The same event id twice (a redelivered webhook), published as two messages.
    f.send(std::slice::from_ref(&e)).await;
    f.send(std::slice::from_ref(&e)).await;
    f.send(std::slice::from_ref(&marker)).await;
    eventually(WAIT, "marker applied", || async {
        f.effects(&marker.id).await == 1
    })
    .await;
    eventually(WAIT, "both copies delivered", || async {
        outbox::backlog(&f.db).await.unwrap() == 0
    })
    .await;
    consistently(
        Duration::from_millis(300),
        "one effect for two deliveries",
        || async { f.effects(&e.id).await == 1 },
    )
    .await;
    assert_eq!(
        rec.attempts_of(&e.id).len(),
        1,
        "the duplicate never reached the handler"
    );
    f.stop().await;
}

async fn outbox_rows_survive_restart(kind: BusKind) {
    let Some(f) = fixture(kind, |_| {}).await else {
        return;
    };
    // Declare the consumer so the events are routable, but run nothing yet.
    f.bus
        .declare(&[ConsumerSpec::new("worker", &["test.#"])])
        .await
        .unwrap();
    let events: Vec<_> = (0..10).map(|n| event(n, "test.created")).collect();
    f.send(&events).await;
    // "Crash": the process goes away before the relay ran.
    let cfg = f.cfg.clone();
    let (dir, vhost, pg) = (f._dir, f._vhost, f._pg);
    f.db.pool.close().await;
    drop(f.bus);

    // Restart: a new pool and bus on the same store and broker.
    let db = Db::open(&cfg.database_url(), 5).await.unwrap();
    assert_eq!(outbox::backlog(&db).await.unwrap(), 10, "rows survived");
    let bus = drehkreuz::bus::from_config(&cfg, &db).await.unwrap();
    let mut f2 = Fixture {
        cfg,
        db,
        bus,
        shutdown: CancellationToken::new(),
        tasks: vec![],
        consumers: vec![],
        _dir: dir,
        _vhost: vhost,
        _pg: pg,
    };
    let rec = Recorder::new(|_, _| Ok(()));
    f2.start(vec![("worker", rec.clone())]).await;
    eventually(WAIT, "all 10 applied after restart", || async {
        f2.total_effects().await == 10
    })
    .await;
    assert_eq!(outbox::backlog(&f2.db).await.unwrap(), 0);
    f2.stop().await;
}

async fn unroutable_event_is_a_failure(kind: BusKind) {
    let Some(f) = fixture(kind, |_| {}).await else {
        return;
    };
    f.bus
        .declare(&[ConsumerSpec::new("worker", &["test.#"])])
        .await
        .unwrap();
    let r = f
        .bus
        .publish(&[event(1, "nobody.listens"), event(2, "test.created")])
        .await;
    assert!(
        matches!(&r[0], Err(drehkreuz::bus::PublishError::Unroutable(k)) if k == "nobody.listens"),
        "{r:?}"
    );
    assert!(r[1].is_ok(), "{r:?}");
    cleanup_rabbit(&f.cfg, &["worker"]).await;
}

async fn replay_dead_letter(kind: BusKind) {
    let Some(mut f) = fixture(kind, |_| {}).await else {
        return;
    };
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fx = fixed.clone();
    let rec = Recorder::new(move |_, _| {
        if fx.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(HandlerError::Permanent("rate card missing".into()))
        }
    });
    f.start(vec![
        ("worker", rec.clone()),
        ("bystander", Recorder::new(|_, _| Ok(()))),
    ])
    .await;
    let e = event(9, "test.created");
    f.send(std::slice::from_ref(&e)).await;
    eventually(WAIT, "dead letter", || async {
        f.dead("worker").await.len() == 1
    })
    .await;
    eventually(WAIT, "bystander applied", || async {
        f.effects(&e.id).await == 1
    })
    .await;
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let d = f.dead("worker").await.remove(0);
    f.bus.replay(&d).await.unwrap();
    deadletter::mark_replayed(&f.db, d.id).await.unwrap();
    // Applied by `worker`; the bystander (same routing key) does not see the replay.
    eventually(WAIT, "replayed message applied", || async {
        f.effects(&e.id).await == 2
    })
    .await;
    consistently(
        Duration::from_millis(300),
        "replayed once, not more",
        || async { f.effects(&e.id).await == 2 },
    )
    .await;
    assert!(deadletter::list(&f.db, Some("worker"), false, 10)
        .await
        .unwrap()
        .is_empty());
    f.stop().await;
}

macro_rules! conformance {
    ($modname:ident, $kind:expr) => {
        mod $modname {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn publish_consume_ack() {
                super::publish_consume_ack($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transient_failure_retried_with_growing_delay() {
                super::transient_failure_retried_with_growing_delay($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn permanent_failure_goes_to_dlq_with_reason() {
                super::permanent_failure_goes_to_dlq_with_reason($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delivery_limit_sends_to_dlq() {
                super::delivery_limit_sends_to_dlq($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn same_message_twice_one_effect() {
                super::same_message_twice_one_effect($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn outbox_rows_survive_restart() {
                super::outbox_rows_survive_restart($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unroutable_event_is_a_failure() {
                super::unroutable_event_is_a_failure($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replay_dead_letter() {
                super::replay_dead_letter($kind).await
            }
        }
    };
}

conformance!(embedded, BusKind::Embedded);
conformance!(rabbitmq, BusKind::Rabbitmq);

/// RabbitMQ only: every connection is closed by the broker mid-stream; the hub rebuilds its
/// connections and nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_connection_closed_mid_stream_recovers() {
    let instance = format!("test-{}", uuid::Uuid::now_v7().simple());
    let Some(mut f) = fixture(BusKind::Rabbitmq, |c| {
        c.bus.concurrency = 4;
        c.hub.instance = instance;
    })
    .await
    else {
        return;
    };
    let rec = Recorder::slow(|_, _| Ok(()), Duration::from_millis(5));
    f.start(vec![("worker", rec.clone())]).await;
    let events: Vec<_> = (0..400).map(|n| event(n, "test.created")).collect();
    f.send(&events[..200]).await;
    eventually(WAIT, "work under way", || async {
        f.total_effects().await >= 20
    })
    .await;
    // Close only this hub's connections (its own vhost, its unique instance name).
    let vhost = f._vhost.clone().expect("a RabbitMQ fixture has a vhost");
    let instance = f.cfg.hub.instance.clone();
    let closed = tokio::task::spawn_blocking(move || {
        vhost.close_hub_connections(&instance, "drehkreuz conformance test: forced close")
    })
    .await
    .unwrap();
    assert!(
        closed >= 1,
        "the hub's named connections were found and closed"
    );
    f.send(&events[200..]).await;
    eventually(
        Duration::from_secs(60),
        "all 400 applied after reconnect",
        || async { f.total_effects().await >= 400 },
    )
    .await;
    consistently(
        Duration::from_millis(500),
        "no more than 400 effects",
        || async { f.total_effects().await == 400 },
    )
    .await;
    let dupes: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT message_id FROM test_effects GROUP BY message_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(dupes, 0, "no message applied twice");
    assert_eq!(f.total_effects().await, 400, "nothing lost");
    assert_eq!(outbox::backlog(&f.db).await.unwrap(), 0);
    assert!(f.bus.health().ready, "reconnected: {:?}", f.bus.health());
    f.stop().await;
}

async fn shutdown_finishes_in_flight_and_loses_nothing(kind: BusKind) {
    let Some(mut f) = fixture(kind, |c| {
        c.bus.concurrency = 1;
        c.bus.batch_size = 1;
        c.bus.prefetch = 5;
    })
    .await
    else {
        return;
    };
    let rec = Recorder::slow(|_, _| Ok(()), Duration::from_millis(40));
    f.start(vec![("worker", rec.clone())]).await;
    let events: Vec<_> = (0..40).map(|n| event(n, "test.created")).collect();
    f.send(&events).await;
    eventually(WAIT, "some work done", || async {
        f.total_effects().await >= 3
    })
    .await;
    // Stop mid-stream: in-flight work finishes, the rest stays queued.
    let cfg = f.cfg.clone();
    let db = f.db.clone();
    f.shutdown.cancel();
    for t in f.tasks.drain(..) {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("graceful stop")
            .unwrap();
    }
    let done_at_stop = f.total_effects().await;
    assert!(done_at_stop < 40, "stopped before the end ({done_at_stop})");
    let started: usize = events
        .iter()
        .filter(|e| !rec.attempts_of(&e.id).is_empty())
        .count();
    assert_eq!(
        started as i64, done_at_stop,
        "every started message finished and committed"
    );

    // A new process picks up the rest; nothing lost, nothing applied twice.
    let bus = drehkreuz::bus::from_config(&cfg, &db).await.unwrap();
    let mut f2 = Fixture {
        cfg,
        db,
        bus,
        shutdown: CancellationToken::new(),
        tasks: vec![],
        consumers: vec![],
        _dir: f._dir.take(),
        _vhost: f._vhost.clone(),
        _pg: f._pg.clone(),
    };
    f2.start(vec![("worker", Recorder::new(|_, _| Ok(())))])
        .await;
    eventually(WAIT, "the rest applied after restart", || async {
        f2.total_effects().await == 40
    })
    .await;
    for e in &events {
        assert_eq!(f2.effects(&e.id).await, 1);
    }
    f2.stop().await;
}

mod shutdown {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_shutdown_finishes_in_flight_and_loses_nothing() {
        super::shutdown_finishes_in_flight_and_loses_nothing(BusKind::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq_shutdown_finishes_in_flight_and_loses_nothing() {
        super::shutdown_finishes_in_flight_and_loses_nothing(BusKind::Rabbitmq).await
    }
}
