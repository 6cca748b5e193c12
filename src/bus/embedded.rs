//! The embedded bus: durable queue tables in the hub's own database.
//!
//! Publishing inserts one `bus_queue` row per consumer whose binding matches the routing key
//! (bindings live in `bus_bindings`, declared at start like RabbitMQ queues), in one
//! transaction: that is the "confirm". Consumers lease rows (`locked_until`) in batches, apply
//! them through the inbox ([`super::apply`]) and delete them ("ack"). A transient failure puts
//! the row back with `available_at` pushed by the retry delay; a permanent failure or the
//! delivery limit moves it to `dead_letters` with the reason. A process that dies mid-work
//! loses its leases when they expire (`bus.lease_ms`, default 10 s; a live worker renews the
//! leases of the batch it is working every third of that) and another worker picks the rows
//! up; the `deliveries` counter is the crash-loop backstop (like RabbitMQ's `x-delivery-limit`).

use super::{apply_batch, Bus, BusHealth, Consumer, ConsumerSpec, Outcome, PublishError};
use crate::config::{retry_delay, Config};
use crate::store::deadletter::{self, DeadLetter, DeathNote};
use crate::store::{now_ms, Db};
use crate::telemetry;
use async_trait::async_trait;
use canonical::Envelope;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Tuning of the embedded bus.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch: i64,
    pub concurrency: usize,
    pub delivery_limit: u32,
    pub retry_delays_ms: Vec<u64>,
    pub poll_interval: Duration,
    /// How long a leased row stays invisible to other workers.
    pub lease: Duration,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            batch: cfg.bus.batch_size as i64,
            concurrency: cfg.bus.concurrency,
            delivery_limit: cfg.bus.delivery_limit,
            retry_delays_ms: cfg.bus.retry_delays_ms.clone(),
            poll_interval: Duration::from_millis(cfg.bus.poll_interval_ms.max(1)),
            lease: Duration::from_millis(cfg.bus.lease_ms.max(1_000)),
        }
    }
}

/// The embedded bus.
pub struct EmbeddedBus {
    db: Db,
    settings: Settings,
    wakeup: Arc<Notify>,
}

struct Leased {
    id: i64,
    deliveries: i64,
    failures: i64,
    first_failure_at: Option<i64>,
    envelope: Envelope,
}

impl EmbeddedBus {
    pub fn new(db: Db, settings: Settings) -> Self {
        Self {
            db,
            settings,
            wakeup: Arc::new(Notify::new()),
        }
    }

    async fn bindings(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query("SELECT consumer, routing_key FROM bus_bindings")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("consumer")?, r.try_get("routing_key")?)))
            .collect()
    }

    async fn lease(&self, consumer: &str) -> Result<Vec<Leased>, sqlx::Error> {
        let now = now_ms();
        let sql = format!(
            "UPDATE bus_queue SET locked_until = $1, deliveries = deliveries + 1 WHERE id IN \
             (SELECT id FROM bus_queue WHERE consumer = $2 AND available_at <= $3 AND locked_until <= $3 \
              ORDER BY id LIMIT $4{}) \
             RETURNING id, deliveries, failures, first_failure_at, envelope",
            self.db.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(now + self.settings.lease.as_millis() as i64)
            .bind(consumer)
            .bind(now)
            .bind(self.settings.batch)
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let text: String = r.try_get("envelope")?;
            let id: i64 = r.try_get("id")?;
            let envelope = match serde_json::from_str::<Envelope>(&text) {
                Ok(e) => e,
                Err(e) => unreadable_envelope(&text, &e.to_string()),
            };
            out.push(Leased {
                id,
                deliveries: r.try_get("deliveries")?,
                failures: r.try_get("failures")?,
                first_failure_at: r.try_get("first_failure_at")?,
                envelope,
            });
        }
        out.sort_by_key(|l| l.id);
        Ok(out)
    }

    /// Pushes the leases of rows still being worked (a slow handler keeps its batch).
    async fn renew(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(&format!(
            "UPDATE bus_queue SET locked_until = $1 WHERE id IN ({list})"
        ))
        .bind(now_ms() + self.settings.lease.as_millis() as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Applies a batch while a side task renews its leases, then settles it.
    async fn work_batch(&self, consumer: &Consumer, batch: Vec<Leased>) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        let every = self.settings.lease / 3;
        let renewer = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = self.renew(&ids).await {
                    tracing::warn!(consumer = %consumer.spec.name, error = %e, "Renewing leases failed; retrying.");
                }
            }
        };
        tokio::select! {
            r = self.process_batch(consumer, batch) => r,
            _ = renewer => unreachable!("the renewer loops until the batch is settled"),
        }
    }

    /// Removes settled rows ("ack").
    async fn ack(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(&format!("DELETE FROM bus_queue WHERE id IN ({list})"))
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    async fn retry_later(&self, m: &Leased, failures: i64, error: &str) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let delay = retry_delay(&self.settings.retry_delays_ms, failures as u32);
        sqlx::query(
            "UPDATE bus_queue SET failures = $1, available_at = $2, locked_until = 0, last_error = $3, \
             first_failure_at = COALESCE(first_failure_at, $4) WHERE id = $5",
        )
        .bind(failures)
        .bind(now + delay.as_millis() as i64)
        .bind(error)
        .bind(now)
        .bind(m.id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        consumer: &str,
        m: &Leased,
        attempts: i64,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM bus_queue WHERE id = $1")
            .bind(m.id)
            .execute(&mut *tx)
            .await?;
        let note = DeathNote {
            consumer,
            reason,
            attempts,
            first_failure_at: Some(m.first_failure_at.unwrap_or_else(now_ms)),
        };
        deadletter::record(&mut tx, &note, &m.envelope).await?;
        tx.commit().await
    }

    /// Applies a leased batch in one transaction and settles every message.
    async fn process_batch(
        &self,
        consumer: &Consumer,
        batch: Vec<Leased>,
    ) -> Result<(), sqlx::Error> {
        let name = consumer.spec.name.as_str();
        let limit = i64::from(self.settings.delivery_limit);
        let mut ready = Vec::with_capacity(batch.len());
        for m in batch {
            // Crash-loop backstop: leased more often than it may be tried, with no outcome.
            if m.deliveries > limit {
                let reason = format!(
                    "delivery limit reached: delivered {} times without an outcome (limit {limit})",
                    m.deliveries
                );
                telemetry::dead_lettered(name);
                self.dead_letter(name, &m, m.deliveries, &reason).await?;
            } else {
                telemetry::consumed(name);
                ready.push(m);
            }
        }
        let envs: Vec<&Envelope> = ready.iter().map(|m| &m.envelope).collect();
        let outcomes = apply_batch(&self.db, name, consumer.handler.as_ref(), &envs).await;
        let mut done = Vec::new();
        for (m, outcome) in ready.iter().zip(outcomes) {
            match outcome {
                Outcome::Applied | Outcome::Duplicate => done.push(m.id),
                Outcome::Retry(err) => {
                    let failures = m.failures + 1;
                    if failures >= limit {
                        let reason = format!(
                            "delivery limit reached after {failures} attempts; last error: {err}"
                        );
                        tracing::warn!(consumer = name, message_id = %m.envelope.id, %reason, "Message dead-lettered.");
                        telemetry::dead_lettered(name);
                        self.dead_letter(name, m, failures, &reason).await?;
                    } else {
                        tracing::info!(consumer = name, message_id = %m.envelope.id, attempt = failures, error = %err, "Message will be retried.");
                        telemetry::retried(name);
                        self.retry_later(m, failures, &err).await?;
                    }
                }
                Outcome::Dead(reason) => {
                    tracing::warn!(consumer = name, message_id = %m.envelope.id, %reason, "Message dead-lettered.");
                    telemetry::dead_lettered(name);
                    self.dead_letter(name, m, m.failures + 1, &reason).await?;
                }
            }
        }
        self.ack(&done).await
    }

    async fn run_one(self: Arc<Self>, consumer: Consumer, shutdown: CancellationToken) {
        let name = consumer.spec.name.clone();
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        while !shutdown.is_cancelled() {
            // Lease only when a slot is free, so nothing sits leased while we are busy.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let batch = match self.lease(&name).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "Leasing from the embedded queue failed.");
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.settings.poll_interval) => continue,
                    }
                }
            };
            if batch.is_empty() {
                drop(permit);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wakeup.notified() => {},
                    _ = tokio::time::sleep(self.settings.poll_interval) => {},
                }
                continue;
            }
            let me = self.clone();
            let c = consumer.clone();
            tasks.spawn(async move {
                if let Err(e) = me.work_batch(&c, batch).await {
                    // The leases expire and the messages come back: nothing is lost.
                    tracing::warn!(consumer = %c.spec.name, error = %e, "Could not settle a batch; it will be redelivered.");
                }
                drop(permit);
            });
            while let Some(res) = tasks.try_join_next() {
                if let Err(e) = res {
                    tracing::error!(consumer = %name, error = %e, "Consumer task failed.");
                }
            }
        }
        // Graceful shutdown: in-flight batches finish and settle.
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(consumer = %name, error = %e, "Consumer task failed.");
            }
        }
    }
}

/// A placeholder envelope for a stored message that no longer parses (kept for the DLQ).
fn unreadable_envelope(text: &str, error: &str) -> Envelope {
    Envelope {
        id: canonical::event_id("/drehkreuz/bus", "unreadable", text, "0"),
        source: "/drehkreuz/bus".into(),
        event_type: "unreadable".into(),
        subject: None,
        time: chrono::Utc::now(),
        datacontenttype: "text/plain".into(),
        extensions: [("error".to_string(), error.to_string())]
            .into_iter()
            .collect(),
        data: serde_json::Value::String(text.to_string()),
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn declare(&self, consumers: &[ConsumerSpec]) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        for c in consumers {
            for key in &c.routing_keys {
                sqlx::query(
                    "INSERT INTO bus_bindings (consumer, routing_key) VALUES ($1, $2) \
                     ON CONFLICT (consumer, routing_key) DO NOTHING",
                )
                .bind(&c.name)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), PublishError>> {
        let unavailable =
            |e: sqlx::Error| vec![Err(PublishError::Unavailable(e.to_string())); events.len()];
        let bindings = match self.bindings().await {
            Ok(b) => b,
            Err(e) => return unavailable(e),
        };
        let mut results = Vec::with_capacity(events.len());
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(e) => return unavailable(e),
        };
        let now = now_ms();
        for ev in events {
            let mut targets: Vec<&str> = bindings
                .iter()
                .filter(|(_, pattern)| super::topology::topic_matches(pattern, &ev.event_type))
                .map(|(c, _)| c.as_str())
                .collect();
            targets.sort_unstable();
            targets.dedup();
            if targets.is_empty() {
                results.push(Err(PublishError::Unroutable(ev.event_type.clone())));
                continue;
            }
            let json = match serde_json::to_string(ev) {
                Ok(j) => j,
                Err(e) => {
                    results.push(Err(PublishError::Unavailable(e.to_string())));
                    continue;
                }
            };
            let mut ok = Ok(());
            for consumer in targets {
                if let Err(e) = sqlx::query(
                    "INSERT INTO bus_queue (consumer, message_id, routing_key, envelope, enqueued_at, available_at) \
                     VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(consumer)
                .bind(&ev.id)
                .bind(&ev.event_type)
                .bind(&json)
                .bind(now)
                .execute(&mut *tx)
                .await
                {
                    ok = Err(PublishError::Unavailable(e.to_string()));
                    break;
                }
            }
            results.push(ok);
        }
        if results
            .iter()
            .any(|r| matches!(r, Err(PublishError::Unavailable(_))))
        {
            let _ = tx.rollback().await;
            return results
                .into_iter()
                .map(|r| r.and(Err(PublishError::Unavailable("batch rolled back".into()))))
                .collect();
        }
        if let Err(e) = tx.commit().await {
            return unavailable(e);
        }
        for (ev, r) in events.iter().zip(&results) {
            if r.is_ok() {
                telemetry::published(&ev.event_type);
            }
        }
        self.wakeup.notify_waiters();
        results
    }

    async fn run(
        &self,
        consumers: Vec<Consumer>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let me = Arc::new(EmbeddedBus {
            db: self.db.clone(),
            settings: self.settings.clone(),
            wakeup: self.wakeup.clone(),
        });
        let mut set = tokio::task::JoinSet::new();
        for c in consumers {
            set.spawn(me.clone().run_one(c, shutdown.clone()));
        }
        while let Some(r) = set.join_next().await {
            r?;
        }
        Ok(())
    }

    async fn replay(&self, dead: &DeadLetter) -> anyhow::Result<()> {
        if dead.consumer == super::topology::RELAY_DEAD_LETTER_CONSUMER {
            return super::republish_by_type(self, dead).await;
        }
        let json = serde_json::to_string(&dead.envelope)?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO bus_queue (consumer, message_id, routing_key, envelope, enqueued_at, available_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&dead.consumer)
        .bind(&dead.message_id)
        .bind(&dead.routing_key)
        .bind(json)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        self.wakeup.notify_waiters();
        Ok(())
    }

    fn health(&self) -> BusHealth {
        BusHealth {
            kind: "embedded",
            ready: true,
            detail: format!("queue tables in the {} store", self.db.backend.name()),
        }
    }
}
