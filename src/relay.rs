//! The outbox relay: publishes pending outbox rows through the bus and marks them sent only
//! after the bus confirmed them.
//!
//! A batch is claimed with a lease (`outbox::claim`, `SKIP LOCKED` on PostgreSQL), so several
//! hub processes relay without publishing a row twice in the normal case, and no transaction
//! is held while waiting for the broker. A crash between the broker's confirm and marking the
//! row sent publishes the row again once the lease ran out;
//! the consumers' inboxes drop that duplicate. A row that fails (unroutable, broker down) gets
//! its error recorded and is retried later with a growing delay; the rows behind it go on.
//! A row the bus reports unroutable (no consumer binds its event type) is not retried: it
//! leaves the outbox and becomes a dead letter of [`DEAD_LETTER_CONSUMER`] with the reason
//! `unroutable: no consumer binds <type>` (`drehkreuz dlq list`; a replay publishes it again,
//! for when the consumer has been configured since). The claim lease is `bus.lease_ms`.

use crate::bus::{Bus, PublishError};
use crate::config::retry_delay;
use crate::store::deadletter::{self, DeathNote};
use crate::store::{now_ms, outbox, Db};
use crate::telemetry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows per publish batch (confirms are awaited per batch, pipelined).
pub const BATCH: i64 = 256;

/// The consumer name under which unroutable outbox rows are dead-lettered (named with the
/// bus's topology so both buses can recognise it without importing the relay).
pub use crate::bus::topology::RELAY_DEAD_LETTER_CONSUMER as DEAD_LETTER_CONSUMER;

/// The relay task.
pub struct Relay {
    db: Db,
    bus: Arc<dyn Bus>,
    wakeup: Arc<Notify>,
    poll: Duration,
    retry_delays_ms: Vec<u64>,
    lease_ms: i64,
}

impl Relay {
    pub fn new(
        db: Db,
        bus: Arc<dyn Bus>,
        wakeup: Arc<Notify>,
        poll: Duration,
        retry_delays_ms: Vec<u64>,
    ) -> Self {
        Self {
            db,
            bus,
            wakeup,
            poll,
            retry_delays_ms,
            lease_ms: outbox::CLAIM_LEASE_MS,
        }
    }

    /// Sets the claim lease (`bus.lease_ms`).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease_ms = lease.as_millis().clamp(1_000, i64::MAX as u128) as i64;
        self
    }

    /// Publishes one batch; returns how many rows were published.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let rows = outbox::claim_for(&self.db, BATCH, self.lease_ms).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events: Vec<_> = rows.iter().map(|r| r.envelope.clone()).collect();
        let results = self.bus.publish(&events).await;
        let mut tx = self.db.begin_relaxed().await?;
        let mut sent = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => sent.push(row.id),
                Err(PublishError::Unroutable(event_type)) => {
                    let reason = format!("unroutable: no consumer binds {event_type}");
                    tracing::warn!(outbox_id = row.id, event_type = %event_type, %reason, "Outbox row dead-lettered.");
                    telemetry::dead_lettered(DEAD_LETTER_CONSUMER);
                    let note = DeathNote {
                        consumer: DEAD_LETTER_CONSUMER,
                        reason: &reason,
                        attempts: row.attempts + 1,
                        first_failure_at: Some(now_ms()),
                    };
                    deadletter::record(&mut tx, &note, &row.envelope).await?;
                    // Settled: it leaves the pending list like a published row.
                    sent.push(row.id);
                }
                Err(e) => {
                    let attempts = row.attempts + 1;
                    let delay = retry_delay(&self.retry_delays_ms, attempts as u32);
                    tracing::warn!(outbox_id = row.id, event_type = %row.envelope.event_type, attempt = attempts, error = %e, "Publishing an outbox row failed; will retry.");
                    outbox::mark_failed(
                        &mut tx,
                        row.id,
                        now_ms() + delay.as_millis() as i64,
                        &e.to_string(),
                    )
                    .await?;
                }
            }
        }
        outbox::mark_sent(&mut tx, &sent).await?;
        tx.commit().await?;
        Ok(sent.len())
    }

    /// Runs `workers` relay loops side by side (claims are disjoint, so batches overlap their
    /// confirm waits) until shutdown.
    pub async fn run_workers(self, workers: usize, shutdown: CancellationToken) {
        let me = Arc::new(self);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let r = me.clone();
            let sd = shutdown.clone();
            set.spawn(async move { r.run_loop(sd).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// One relay loop until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_loop(shutdown).await
    }

    /// Publishes until shutdown; on shutdown it flushes what is pending once more, then returns.
    async fn run_loop(&self, shutdown: CancellationToken) {
        let mut last_gauge = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            let published = match self.relay_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "Outbox relay failed; retrying.");
                    0
                }
            };
            if last_gauge.elapsed() > Duration::from_secs(5) {
                if let Ok(n) = outbox::backlog(&self.db).await {
                    telemetry::outbox_backlog(n);
                }
                last_gauge = std::time::Instant::now();
            }
            if shutdown.is_cancelled() {
                // Flush: publish whatever is ready before leaving (bounded).
                for _ in 0..16 {
                    match self.relay_once().await {
                        Ok(n) if n > 0 => continue,
                        _ => break,
                    }
                }
                break;
            }
            if published == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => {},
                    _ = self.wakeup.notified() => {},
                    _ = tokio::time::sleep(self.poll) => {},
                }
            }
        }
    }
}
