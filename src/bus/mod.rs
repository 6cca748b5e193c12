//! The bus: publish canonical events, run consumers, dead-letter what cannot be processed.
//!
//! One [`Bus`] trait, two implementations with the same observable behaviour:
//! [`rabbitmq::RabbitBus`] (lapin, quorum queues, TTL retry tiers, DLX) for the scaled mode and
//! [`embedded::EmbeddedBus`] (durable queue tables in the hub's own database) for one machine.
//!
//! Delivery is at-least-once everywhere; consumers are made effectively-once by [`apply`],
//! which records `(consumer, message_id)` in the inbox in the same transaction as the handler's
//! effect. A handler says whether a failure is worth retrying ([`HandlerError::Transient`]: the
//! message comes back after a growing delay) or not ([`HandlerError::Permanent`]: straight to
//! the consumer's dead letters with the reason). After `bus.delivery_limit` failed attempts a
//! message is dead-lettered too.

pub mod embedded;
pub mod rabbitmq;
pub mod topology;

use crate::store::{deadletter::DeadLetter, inbox, Db, Tx};
use async_trait::async_trait;
use canonical::Envelope;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A consumer's name (its queue) and the routing keys (event types, topic patterns) it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    pub name: String,
    pub routing_keys: Vec<String>,
}

impl ConsumerSpec {
    pub fn new(name: &str, routing_keys: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            routing_keys: routing_keys.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Why a handler could not apply a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (a peer is down, a lock timed out).
    #[error("transient: {0}")]
    Transient(String),
    /// Bad data: retrying cannot help; the message goes to the dead letters with this reason.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_transient(&e) {
            HandlerError::Transient(format!("database: {e}"))
        } else {
            // Constraint violations and the like will fail the same way again, but a database
            // hiccup we did not classify should not lose data: retry, and let the delivery limit
            // dead-letter it if it keeps failing.
            HandlerError::Transient(format!("database: {e}"))
        }
    }
}

/// What a handler fetched from outside (Zammad, an HTTP sink) before its transaction opened.
pub type Prepared = Option<Arc<dyn std::any::Any + Send + Sync>>;

/// Applies one message's effect, in two phases:
///
/// 1. [`Handler::prepare`] runs **outside** any transaction (no SQLite write lock, no pooled
///    connection held): every outside call (Zammad, HTTP sinks, SMTP) belongs here. It may
///    read the store through `db`. It is skipped for messages already in the inbox.
/// 2. [`Handler::apply`] runs inside a short transaction that already holds the inbox claim;
///    write state and follow-up events (via the outbox) through `tx` only, and make no
///    outside call there.
///
/// Handlers without outside calls implement only [`Handler::handle`] (phase 2).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Whether [`Handler::prepare`] does anything (then the bus checks the inbox before it);
    /// handlers that implement `prepare` say `true`.
    fn calls_out(&self) -> bool {
        false
    }
    /// Phase 1: fetch (or deliver) outside the transaction. Default: nothing.
    async fn prepare(&self, _db: &Db, _event: &Envelope) -> Result<Prepared, HandlerError> {
        Ok(None)
    }
    /// Phase 2 with what phase 1 produced. Default: [`Handler::handle`].
    async fn apply(
        &self,
        event: &Envelope,
        _prepared: Prepared,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        self.handle(event, tx).await
    }
    /// The transactional effect of a handler without outside calls.
    async fn handle(&self, event: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError>;
}

/// Phase 1 for one message unless the inbox already has it (then `Ok(None)`: a duplicate).
async fn prepare_one(
    db: &Db,
    consumer: &str,
    handler: &dyn Handler,
    event: &Envelope,
) -> Result<Option<Prepared>, Outcome> {
    if !handler.calls_out() {
        // Nothing to do outside: the inbox claim in the transaction decides duplicates.
        return Ok(Some(None));
    }
    match inbox::contains(db, consumer, &event.id).await {
        Ok(true) => return Ok(None),
        Ok(false) => {}
        Err(e) => return Err(Outcome::Retry(format!("inbox: {e}"))),
    }
    match handler.prepare(db, event).await {
        Ok(p) => Ok(Some(p)),
        Err(HandlerError::Transient(r)) => Err(Outcome::Retry(r)),
        Err(HandlerError::Permanent(r)) => Err(Outcome::Dead(r)),
    }
}

/// A consumer: its spec and its handler.
#[derive(Clone)]
pub struct Consumer {
    pub spec: ConsumerSpec,
    pub handler: Arc<dyn Handler>,
}

impl Consumer {
    pub fn new(spec: ConsumerSpec, handler: Arc<dyn Handler>) -> Self {
        Self { spec, handler }
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The effect is committed.
    Applied,
    /// The inbox already had it; nothing was done again.
    Duplicate,
    /// Failed transiently; try again later.
    Retry(String),
    /// Failed permanently; dead-letter with this reason.
    Dead(String),
}

/// Runs `handler` for `event`: phase 1 outside, then phase 2 with the inbox claim in the
/// same transaction.
pub async fn apply(db: &Db, consumer: &str, handler: &dyn Handler, event: &Envelope) -> Outcome {
    let prepared = match prepare_one(db, consumer, handler, event).await {
        Ok(Some(p)) => p,
        Ok(None) => return Outcome::Duplicate,
        Err(o) => return o,
    };
    apply_prepared(db, consumer, handler, event, prepared).await
}

async fn apply_prepared(
    db: &Db,
    consumer: &str,
    handler: &dyn Handler,
    event: &Envelope,
    prepared: Prepared,
) -> Outcome {
    let mut tx = match db.begin().await {
        Ok(tx) => tx,
        Err(e) => return Outcome::Retry(format!("database: {e}")),
    };
    match inbox::claim(&mut tx, consumer, &event.id).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = tx.rollback().await;
            return Outcome::Duplicate;
        }
        Err(e) => return Outcome::Retry(format!("inbox: {e}")),
    }
    match handler.apply(event, prepared, &mut tx).await {
        Ok(()) => match tx.commit().await {
            Ok(()) => Outcome::Applied,
            Err(e) => Outcome::Retry(format!("commit: {e}")),
        },
        Err(HandlerError::Transient(reason)) => {
            let _ = tx.rollback().await;
            Outcome::Retry(reason)
        }
        Err(HandlerError::Permanent(reason)) => {
            let _ = tx.rollback().await;
            Outcome::Dead(reason)
        }
    }
}

/// Applies a batch of messages in one transaction (one commit instead of one per message).
///
/// The inbox claims are one statement for the whole batch; a message already in the inbox,
/// or twice in the batch, is a [`Outcome::Duplicate`]. If a handler fails, the transaction is
/// rolled back, that message gets its failure outcome and the rest of the batch is applied
/// again without it: a handler may therefore run more than once for a message whose batch was
/// rolled back, which is why handlers keep every effect inside the transaction.
pub async fn apply_batch(
    db: &Db,
    consumer: &str,
    handler: &dyn Handler,
    events: &[&Envelope],
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
    // Phase 1 for every message before the transaction opens.
    let mut prepared: Vec<Prepared> = vec![None; events.len()];
    let mut pending: Vec<usize> = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        match prepare_one(db, consumer, handler, ev).await {
            Ok(Some(p)) => {
                prepared[i] = p;
                pending.push(i);
            }
            Ok(None) => outcomes[i] = Some(Outcome::Duplicate),
            Err(o) => outcomes[i] = Some(o),
        }
    }
    while !pending.is_empty() {
        if pending.len() == 1 {
            let i = pending[0];
            outcomes[i] =
                Some(apply_prepared(db, consumer, handler, events[i], prepared[i].clone()).await);
            break;
        }
        match try_batch(db, consumer, handler, events, &prepared, &pending).await {
            BatchResult::Committed(done) => {
                for (i, o) in done {
                    outcomes[i] = Some(o);
                }
                break;
            }
            BatchResult::Failed(i, o) => {
                outcomes[i] = Some(o);
                pending.retain(|&j| j != i);
            }
            BatchResult::Unavailable(reason) => {
                for &i in &pending {
                    outcomes[i] = Some(Outcome::Retry(reason.clone()));
                }
                break;
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Retry("not processed".into())))
        .collect()
}

enum BatchResult {
    Committed(Vec<(usize, Outcome)>),
    Failed(usize, Outcome),
    Unavailable(String),
}

async fn try_batch(
    db: &Db,
    consumer: &str,
    handler: &dyn Handler,
    events: &[&Envelope],
    prepared: &[Prepared],
    which: &[usize],
) -> BatchResult {
    let mut tx = match db.begin().await {
        Ok(tx) => tx,
        Err(e) => return BatchResult::Unavailable(format!("database: {e}")),
    };
    let ids: Vec<&str> = which.iter().map(|&i| events[i].id.as_str()).collect();
    let mut fresh = match inbox::claim_many(&mut tx, consumer, &ids).await {
        Ok(f) => f,
        Err(e) => return BatchResult::Unavailable(format!("inbox: {e}")),
    };
    let mut done = Vec::with_capacity(which.len());
    for &i in which {
        // `remove`: a second copy of the same id in this batch is a duplicate.
        if !fresh.remove(events[i].id.as_str()) {
            done.push((i, Outcome::Duplicate));
            continue;
        }
        match handler.apply(events[i], prepared[i].clone(), &mut tx).await {
            Ok(()) => done.push((i, Outcome::Applied)),
            Err(e) => {
                let _ = tx.rollback().await;
                let o = match e {
                    HandlerError::Transient(r) => Outcome::Retry(r),
                    HandlerError::Permanent(r) => Outcome::Dead(r),
                };
                return BatchResult::Failed(i, o);
            }
        }
    }
    match tx.commit().await {
        Ok(()) => BatchResult::Committed(done),
        Err(e) => BatchResult::Unavailable(format!("commit: {e}")),
    }
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No queue is bound for the routing key (AMQP `NO_ROUTE` on a mandatory publish).
    #[error("unroutable: no consumer is bound to `{0}`")]
    Unroutable(String),
    /// The broker refused the message (`basic.nack`).
    #[error("nacked by the broker")]
    Nacked,
    /// The bus is not reachable right now.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Connection state for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BusHealth {
    pub kind: &'static str,
    pub ready: bool,
    pub detail: String,
}

/// The message bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// `embedded` or `rabbitmq`.
    fn kind(&self) -> &'static str;
    /// Declares exchanges, queues, retry tiers, dead-letter queues and bindings (idempotent).
    async fn declare(&self, consumers: &[ConsumerSpec]) -> anyhow::Result<()>;
    /// Publishes a batch durably and waits for the confirms; one result per event, in order.
    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), PublishError>>;
    /// Runs the consumers until `shutdown` is cancelled, then finishes in-flight work and
    /// returns. Unfinished work is never acknowledged.
    async fn run(
        &self,
        consumers: Vec<Consumer>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()>;
    /// Re-injects a dead letter into its own consumer's queue (no other consumer sees it).
    async fn replay(&self, dead: &DeadLetter) -> anyhow::Result<()>;
    /// Connection state.
    fn health(&self) -> BusHealth;
}

/// Builds the configured bus.
pub async fn from_config(cfg: &crate::config::Config, db: &Db) -> anyhow::Result<Arc<dyn Bus>> {
    use crate::config::BusKind;
    Ok(match cfg.bus_kind() {
        BusKind::Embedded => Arc::new(embedded::EmbeddedBus::new(
            db.clone(),
            embedded::Settings::from_config(cfg),
        )),
        BusKind::Rabbitmq => Arc::new(rabbitmq::RabbitBus::new(
            db.clone(),
            rabbitmq::Settings::from_config(cfg)?,
        )),
    })
}

/// Replays a dead letter of the outbox relay (an event no consumer bound): publishes it again
/// by its type, since a consumer may bind it now. Both buses' `replay` use it.
pub(crate) async fn republish_by_type<B: Bus + ?Sized>(
    bus: &B,
    dead: &DeadLetter,
) -> anyhow::Result<()> {
    match bus
        .publish(std::slice::from_ref(&dead.envelope))
        .await
        .pop()
    {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(anyhow::anyhow!(
            "replay of dead letter {} failed: {e}",
            dead.id
        )),
        None => Err(anyhow::anyhow!("replay of dead letter {} failed", dead.id)),
    }
}
