//! The RabbitMQ bus (lapin), for the scaled mode.
//!
//! Topology (declared idempotently on every (re)connect): a topic exchange `<prefix>.events`;
//! per consumer a durable quorum queue `<prefix>.<consumer>` bound by routing key, with an
//! explicit `x-delivery-limit` and at-least-once dead-lettering to the direct exchange
//! `<prefix>.dlx`; one classic durable retry queue per delay tier whose TTL dead-letters back
//! into the work queue; and a quorum dead-letter queue `<prefix>.<consumer>.dlq`.
//!
//! Publishing uses its own connection: persistent messages, `mandatory`, publisher confirms
//! awaited as a pipelined batch; a returned (unroutable) message is a failure even though the
//! broker acks it. Consuming uses another connection: manual acks, bounded prefetch, a bounded
//! number of deliveries in flight. A delivery is acked only after its effect is committed, or
//! after its retry copy / dead letter is confirmed by the broker.
//!
//! lapin does not recover connections reliably by itself, so each consumer runs under a
//! supervisor loop that rebuilds connection, topology, channel and consumer with jittered
//! exponential backoff (`backon`) after any loss; the publisher reconnects on next use.
//! Each consumer's DLQ is drained into the `dead_letters` table so both buses answer
//! `drehkreuz dlq` from one place.

use super::topology::Names;
use super::{
    apply, apply_batch, Bus, BusHealth, Consumer, ConsumerSpec, Handler, HandlerError, Outcome,
    PublishError,
};
use crate::config::{retry_delay, Config};
use crate::store::deadletter::{self, DeadLetter, DeathNote};
use crate::store::{now_ms, Db, Tx};
use crate::telemetry;
use async_trait::async_trait;
use backon::BackoffBuilder;
use canonical::Envelope;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

/// Header: handler failures so far (the next attempt's number minus one).
const H_ATTEMPT: &str = "x-dk-attempt";
/// Header: when the first attempt failed (ms since epoch).
const H_FIRST_FAILURE: &str = "x-dk-first-failure";
/// Header: the last transient error.
const H_LAST_ERROR: &str = "x-dk-last-error";
/// Dead-letter headers.
const H_REASON: &str = "x-dk-reason";
const H_CONSUMER: &str = "x-dk-consumer";
const H_ATTEMPTS: &str = "x-dk-attempts";
const H_DEATH_ID: &str = "x-dk-death-id";

/// Settings of the RabbitMQ bus.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: SecretString,
    pub names: Names,
    pub prefetch: u16,
    pub concurrency: usize,
    pub batch_size: usize,
    pub delivery_limit: u32,
    pub retry_delays_ms: Vec<u64>,
    pub reconnect_max_delay: Duration,
    pub instance: String,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let url = cfg
            .bus
            .amqp_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("bus.amqp_url is required for the RabbitMQ bus"))?;
        Ok(Self {
            url,
            names: Names::new(&cfg.bus.prefix),
            prefetch: cfg.bus.prefetch,
            concurrency: cfg.bus.concurrency,
            batch_size: cfg.bus.batch_size,
            delivery_limit: cfg.bus.delivery_limit,
            retry_delays_ms: cfg.bus.retry_delays_ms.clone(),
            reconnect_max_delay: Duration::from_millis(cfg.bus.reconnect_max_delay_ms.max(100)),
            instance: cfg.hub.instance.clone(),
        })
    }
}

/// What a consumer session consumes: a work queue or a dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Work,
    DeadLetters,
}

struct Link {
    conn: Arc<Connection>,
    channel: Channel,
}

impl Link {
    fn alive(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

struct Shared {
    db: Db,
    s: Settings,
    publisher: Mutex<Option<Link>>,
    consumer_conn: Mutex<Option<Arc<Connection>>>,
    declared: std::sync::Mutex<Vec<ConsumerSpec>>,
    publish_up: AtomicBool,
    consume_up: AtomicBool,
    last_error: std::sync::Mutex<String>,
}

/// The RabbitMQ bus.
#[derive(Clone)]
pub struct RabbitBus {
    shared: Arc<Shared>,
}

fn s(v: &str) -> ShortString {
    ShortString::from(v)
}
fn ls(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.to_string()))
}

fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::ShortString(v) => Some(v.as_str().to_string()),
        _ => None,
    }
}

fn header_i64(headers: &FieldTable, key: &str) -> Option<i64> {
    match headers.inner().get(key)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(v) => String::from_utf8_lossy(v.as_bytes()).parse().ok(),
        _ => None,
    }
}

/// Maps an envelope to AMQP: body = JSON data, CloudEvents attributes as properties/headers.
pub fn to_amqp(ev: &Envelope) -> (Vec<u8>, BasicProperties) {
    let mut h = FieldTable::default();
    h.insert(s("ce-specversion"), ls(canonical::envelope::SPEC_VERSION));
    h.insert(s("ce-source"), ls(&ev.source));
    h.insert(
        s("ce-time"),
        ls(&ev.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    if let Some(subject) = &ev.subject {
        h.insert(s("ce-subject"), ls(subject));
    }
    for (k, v) in &ev.extensions {
        h.insert(s(&format!("ce-{k}")), ls(v));
    }
    let props = BasicProperties::default()
        .with_message_id(s(&ev.id))
        .with_type(s(&ev.event_type))
        .with_content_type(s(&ev.datacontenttype))
        .with_timestamp(ev.time.timestamp().max(0) as u64)
        .with_delivery_mode(2)
        .with_app_id(s("drehkreuz"))
        .with_headers(h);
    (ev.body_bytes(), props)
}

/// Reads an envelope back from a delivery; the error says which attribute is missing or bad.
pub fn from_amqp(props: &BasicProperties, body: &[u8]) -> Result<Envelope, String> {
    let headers = props.headers().clone().unwrap_or_default();
    let id = props
        .message_id()
        .as_ref()
        .map(|v| v.as_str().to_string())
        .filter(|v| !v.is_empty())
        .ok_or("AMQP property `message_id` (CloudEvents id) is missing")?;
    let event_type = props
        .kind()
        .as_ref()
        .map(|v| v.as_str().to_string())
        .filter(|v| !v.is_empty())
        .ok_or("AMQP property `type` (CloudEvents type) is missing")?;
    let source = header_str(&headers, "ce-source").ok_or("header `ce-source` is missing")?;
    let time = match header_str(&headers, "ce-time") {
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map_err(|e| format!("header `ce-time` is not RFC 3339: {e}"))?
            .with_timezone(&chrono::Utc),
        None => props
            .timestamp()
            .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
            .ok_or("header `ce-time` and property `timestamp` are missing")?,
    };
    let data: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let mut extensions = std::collections::BTreeMap::new();
    for k in headers.inner().keys() {
        let k = k.as_str();
        if let Some(name) = k.strip_prefix("ce-") {
            if !matches!(name, "specversion" | "source" | "time" | "subject") {
                if let Some(v) = header_str(&headers, k) {
                    extensions.insert(name.to_string(), v);
                }
            }
        }
    }
    Ok(Envelope {
        id,
        source,
        event_type,
        subject: header_str(&headers, "ce-subject"),
        time,
        datacontenttype: props
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| "application/json".into()),
        extensions,
        data,
    })
}

impl RabbitBus {
    pub fn new(db: Db, settings: Settings) -> Self {
        Self {
            shared: Arc::new(Shared {
                db,
                s: settings,
                publisher: Mutex::new(None),
                consumer_conn: Mutex::new(None),
                declared: std::sync::Mutex::new(Vec::new()),
                publish_up: AtomicBool::new(false),
                consume_up: AtomicBool::new(false),
                last_error: std::sync::Mutex::new(String::new()),
            }),
        }
    }

    fn note_error(&self, what: &str, e: &dyn std::fmt::Display) {
        if let Ok(mut last) = self.shared.last_error.lock() {
            *last = format!("{what}: {e}");
        }
    }

    async fn connect(&self, role: &str) -> anyhow::Result<Connection> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("drehkreuz {} {role}", self.shared.s.instance).into());
        Connection::connect(self.shared.s.url.expose_secret(), props)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to RabbitMQ: {e}"))
    }

    /// Declares the topology of every consumer declared so far on `channel`.
    async fn declare_on(&self, channel: &Channel, specs: &[ConsumerSpec]) -> anyhow::Result<()> {
        let n = &self.shared.s.names;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                s(&n.exchange()),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                s(&n.dead_letter_exchange()),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for spec in specs {
            let mut dlq_args = FieldTable::default();
            dlq_args.insert(s("x-queue-type"), ls("quorum"));
            channel
                .queue_declare(s(&n.dead_letter_queue(&spec.name)), qopts, dlq_args)
                .await?;
            channel
                .queue_bind(
                    s(&n.dead_letter_queue(&spec.name)),
                    s(&n.dead_letter_exchange()),
                    s(&spec.name),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut args = FieldTable::default();
            args.insert(s("x-queue-type"), ls("quorum"));
            args.insert(
                s("x-delivery-limit"),
                AMQPValue::LongLongInt(i64::from(self.shared.s.delivery_limit)),
            );
            args.insert(s("x-dead-letter-exchange"), ls(&n.dead_letter_exchange()));
            args.insert(s("x-dead-letter-routing-key"), ls(&spec.name));
            args.insert(s("x-dead-letter-strategy"), ls("at-least-once"));
            args.insert(s("x-overflow"), ls("reject-publish"));
            channel
                .queue_declare(s(&n.queue(&spec.name)), qopts, args)
                .await?;
            for key in &spec.routing_keys {
                channel
                    .queue_bind(
                        s(&n.queue(&spec.name)),
                        s(&n.exchange()),
                        s(key),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            let mut tiers = self.shared.s.retry_delays_ms.clone();
            tiers.sort_unstable();
            tiers.dedup();
            for delay in tiers {
                let mut args = FieldTable::default();
                args.insert(s("x-message-ttl"), AMQPValue::LongLongInt(delay as i64));
                args.insert(s("x-dead-letter-exchange"), ls(""));
                args.insert(s("x-dead-letter-routing-key"), ls(&n.queue(&spec.name)));
                channel
                    .queue_declare(s(&n.retry_queue(&spec.name, delay)), qopts, args)
                    .await?;
            }
        }
        Ok(())
    }

    fn declared(&self) -> Vec<ConsumerSpec> {
        self.shared
            .declared
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// The publishing channel, (re)connecting and redeclaring the topology if it was lost.
    async fn publish_channel(&self) -> anyhow::Result<Channel> {
        let mut guard = self.shared.publisher.lock().await;
        if let Some(link) = guard.as_ref() {
            if link.alive() {
                return Ok(link.channel.clone());
            }
            telemetry::reconnected("publish");
            tracing::warn!("RabbitMQ publish connection lost; reconnecting.");
        }
        self.shared.publish_up.store(false, Ordering::SeqCst);
        *guard = None;
        let conn = Arc::new(self.connect("publish").await?);
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.declare_on(&channel, &self.declared()).await?;
        *guard = Some(Link {
            conn,
            channel: channel.clone(),
        });
        self.shared.publish_up.store(true, Ordering::SeqCst);
        Ok(channel)
    }

    /// The consuming connection, (re)built with the topology if it was lost.
    async fn consume_connection(&self) -> anyhow::Result<Arc<Connection>> {
        let mut guard = self.shared.consumer_conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.status().connected() {
                return Ok(c.clone());
            }
            telemetry::reconnected("consume");
        }
        self.shared.consume_up.store(false, Ordering::SeqCst);
        *guard = None;
        let conn = Arc::new(self.connect("consume").await?);
        let ch = conn.create_channel().await?;
        self.declare_on(&ch, &self.declared()).await?;
        let _ = ch.close(200, s("topology declared")).await;
        *guard = Some(conn.clone());
        self.shared.consume_up.store(true, Ordering::SeqCst);
        Ok(conn)
    }

    /// Publishes one message to `exchange`/`routing_key` and waits for its confirm.
    async fn publish_one(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let ch = self
            .publish_channel()
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let confirm = ch
            .basic_publish(
                s(exchange),
                s(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        settle_confirm(confirm.await, routing_key)
    }

    /// Sends a delivery to its consumer's dead letters with the reason, then acks it.
    async fn dead_letter_delivery(
        &self,
        acks: &AckTracker,
        consumer: &str,
        d: &Delivery,
        attempts: i64,
        reason: &str,
    ) {
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        let first = header_i64(&headers, H_FIRST_FAILURE).unwrap_or_else(now_ms);
        headers.insert(s(H_REASON), ls(reason));
        headers.insert(s(H_CONSUMER), ls(consumer));
        headers.insert(s(H_ATTEMPTS), AMQPValue::LongLongInt(attempts));
        headers.insert(s(H_FIRST_FAILURE), AMQPValue::LongLongInt(first));
        headers.insert(s(H_DEATH_ID), ls(&uuid::Uuid::now_v7().to_string()));
        let props = d.properties.clone().with_headers(headers);
        let dlx = self.shared.s.names.dead_letter_exchange();
        match self.publish_one(&dlx, consumer, &d.data, props).await {
            Ok(()) => {
                telemetry::dead_lettered(consumer);
                acks.ack(d).await;
            }
            Err(e) => {
                tracing::warn!(consumer, error = %e, "Could not dead-letter; the message is requeued.");
                acks.requeue(d).await;
            }
        }
    }

    /// Schedules a retry through the tier queue for `failures`, then acks the delivery.
    async fn retry_delivery(
        &self,
        acks: &AckTracker,
        consumer: &str,
        d: &Delivery,
        failures: i64,
        error: &str,
    ) {
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        headers.insert(s(H_ATTEMPT), AMQPValue::LongLongInt(failures));
        if header_i64(&headers, H_FIRST_FAILURE).is_none() {
            headers.insert(s(H_FIRST_FAILURE), AMQPValue::LongLongInt(now_ms()));
        }
        headers.insert(s(H_LAST_ERROR), ls(error));
        let delay = retry_delay(&self.shared.s.retry_delays_ms, failures as u32);
        let queue = self
            .shared
            .s
            .names
            .retry_queue(consumer, delay.as_millis() as u64);
        let props = d.properties.clone().with_headers(headers);
        match self.publish_one("", &queue, &d.data, props).await {
            Ok(()) => {
                telemetry::retried(consumer);
                acks.ack(d).await;
            }
            Err(e) => {
                tracing::warn!(consumer, error = %e, "Could not schedule a retry; the message is requeued.");
                acks.requeue(d).await;
            }
        }
    }

    /// Applies a batch of deliveries in one transaction, then settles each one.
    async fn process_batch(
        &self,
        acks: &AckTracker,
        consumer: &Consumer,
        deliveries: Vec<Delivery>,
    ) {
        let name = consumer.spec.name.as_str();
        let mut ready = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            telemetry::consumed(name);
            match from_amqp(&d.properties, &d.data) {
                Ok(env) => ready.push((d, env)),
                Err(reason) => {
                    let failures = d
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| header_i64(h, H_ATTEMPT))
                        .unwrap_or(0);
                    let reason = format!("malformed message: {reason}");
                    tracing::warn!(consumer = name, %reason, "Message dead-lettered.");
                    self.dead_letter_delivery(acks, name, &d, failures + 1, &reason)
                        .await;
                }
            }
        }
        let envs: Vec<&Envelope> = ready.iter().map(|(_, e)| e).collect();
        let outcomes = apply_batch(&self.shared.db, name, consumer.handler.as_ref(), &envs).await;
        for ((d, env), outcome) in ready.iter().zip(outcomes) {
            self.settle(acks, name, d, env, outcome).await;
        }
    }

    /// Acks, schedules a retry or dead-letters one delivery according to its outcome.
    async fn settle(
        &self,
        acks: &AckTracker,
        name: &str,
        d: &Delivery,
        env: &Envelope,
        outcome: Outcome,
    ) {
        let failures = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| header_i64(h, H_ATTEMPT))
            .unwrap_or(0);
        let limit = i64::from(self.shared.s.delivery_limit);
        match outcome {
            Outcome::Applied | Outcome::Duplicate => acks.ack(d).await,
            Outcome::Retry(err) => {
                let failures = failures + 1;
                if failures >= limit {
                    let reason = format!(
                        "delivery limit reached after {failures} attempts; last error: {err}"
                    );
                    tracing::warn!(consumer = name, message_id = %env.id, %reason, "Message dead-lettered.");
                    self.dead_letter_delivery(acks, name, d, failures, &reason)
                        .await;
                } else {
                    tracing::info!(consumer = name, message_id = %env.id, attempt = failures, error = %err, "Message will be retried.");
                    self.retry_delivery(acks, name, d, failures, &err).await;
                }
            }
            Outcome::Dead(reason) => {
                tracing::warn!(consumer = name, message_id = %env.id, %reason, "Message dead-lettered.");
                self.dead_letter_delivery(acks, name, d, failures + 1, &reason)
                    .await;
            }
        }
    }

    /// One consumer session: channel, qos, consume until shutdown or connection loss.
    async fn session(
        &self,
        consumer: &Consumer,
        queue: &str,
        role: Role,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let conn = self.consume_connection().await?;
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(self.shared.s.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{}-{}", self.shared.s.instance, uuid::Uuid::now_v7());
        let mut stream = channel
            .basic_consume(
                s(queue),
                s(&tag),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue, "Consuming.");
        let permits = Arc::new(Semaphore::new(self.shared.s.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let acks = Arc::new(AckTracker::new());
        let batch_max = self.shared.s.batch_size.max(1);
        let result = loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break Ok(()) },
            };
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                n = stream.next() => n,
            };
            let mut batch = match next {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(e)) => break Err(anyhow::anyhow!("consumer of {queue} failed: {e}")),
                None => {
                    break Err(anyhow::anyhow!(
                        "consumer of {queue} ended (connection lost?)"
                    ))
                }
            };
            // Take what is already prefetched, up to the batch size, without waiting.
            let mut ended = None;
            if role == Role::Work {
                while batch.len() < batch_max {
                    match stream.next().now_or_never() {
                        Some(Some(Ok(d))) => batch.push(d),
                        Some(Some(Err(e))) => {
                            ended = Some(anyhow::anyhow!("consumer of {queue} failed: {e}"));
                            break;
                        }
                        Some(None) => {
                            ended = Some(anyhow::anyhow!(
                                "consumer of {queue} ended (connection lost?)"
                            ));
                            break;
                        }
                        None => break,
                    }
                }
            }
            for d in &batch {
                acks.received(d).await;
            }
            let me = self.clone();
            let c = consumer.clone();
            let acks = acks.clone();
            tasks.spawn(async move {
                match role {
                    Role::Work => me.process_batch(&acks, &c, batch).await,
                    Role::DeadLetters => {
                        for d in batch {
                            me.process_dead_letter(&acks, &c, d).await;
                        }
                    }
                }
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
            if let Some(e) = ended {
                break Err(e);
            }
        };
        if shutdown.is_cancelled() {
            let _ = channel
                .basic_cancel(s(&tag), BasicCancelOptions::default())
                .await;
        }
        // Finish what is in flight; acks on a dead channel fail and the broker requeues.
        while tasks.join_next().await.is_some() {}
        if channel.status().connected() {
            // Deliveries prefetched but not started are returned to the queue by the close.
            let _ = channel.close(200, s("consumer stopped")).await;
        }
        result
    }

    /// Runs `session` again and again until shutdown, with jittered exponential backoff.
    async fn supervise(
        &self,
        consumer: Consumer,
        queue: String,
        role: Role,
        shutdown: CancellationToken,
    ) {
        let backoff = || {
            backon::ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(self.shared.s.reconnect_max_delay)
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        while !shutdown.is_cancelled() {
            let started = std::time::Instant::now();
            match self.session(&consumer, &queue, role, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    self.shared.consume_up.store(false, Ordering::SeqCst);
                    self.note_error("consume", &e);
                    if started.elapsed() > Duration::from_secs(30) {
                        delays = backoff();
                    }
                    let wait = delays.next().unwrap_or(self.shared.s.reconnect_max_delay);
                    tracing::warn!(queue = %queue, error = %e, wait_ms = wait.as_millis() as u64, "Consumer lost; rebuilding.");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {},
                    }
                }
            }
        }
    }
}

/// Records what arrives in a consumer's DLQ in the `dead_letters` table.
struct DeadLetterRecorder {
    consumer: String,
}

#[async_trait]
impl Handler for DeadLetterRecorder {
    async fn handle(&self, event: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let reason = event
            .extensions
            .get("dk-reason")
            .cloned()
            .unwrap_or_else(|| "delivery limit reached (broker x-delivery-limit)".into());
        let attempts = event
            .extensions
            .get("dk-attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let first_failure_at = event
            .extensions
            .get("dk-first-failure")
            .and_then(|a| a.parse().ok());
        let mut original = event.clone();
        if let Some(id) = event.extensions.get("dk-message-id") {
            original.id = id.clone();
        }
        original.extensions.retain(|k, _| !k.starts_with("dk-"));
        let note = DeathNote {
            consumer: &self.consumer,
            reason: &reason,
            attempts,
            first_failure_at,
        };
        deadletter::record(tx, &note, &original).await?;
        Ok(())
    }
}

fn settle_confirm(c: lapin::Result<Confirmation>, routing_key: &str) -> Result<(), PublishError> {
    match c {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(_))) => Err(PublishError::Unroutable(routing_key.to_string())),
        Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked),
        Ok(Confirmation::NotRequested) => {
            Err(PublishError::Unavailable("confirms not enabled".into()))
        }
        Err(e) => Err(PublishError::Unavailable(e.to_string())),
    }
}

/// Settles deliveries of one channel with as few ack frames as possible.
///
/// Deliveries arrive in delivery-tag order; batches finish in any order. A delivery is marked
/// settled when acked (or after its nack was sent); whenever the oldest unsettled ones become
/// settled, one `basic.ack` with `multiple` covers them all. The ack is sent under the lock so
/// two multiple-acks never overtake each other. A requeued delivery is nacked on its own first,
/// so a later multiple-ack does not touch it.
pub(crate) struct AckTracker {
    state: Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    /// Received, in tag order: (tag, acker, settled, needs ack).
    window: std::collections::VecDeque<(u64, lapin::Acker, bool, bool)>,
}

impl AckTracker {
    fn new() -> Self {
        Self {
            state: Mutex::new(AckState::default()),
        }
    }

    async fn received(&self, d: &Delivery) {
        self.state
            .lock()
            .await
            .window
            .push_back((d.delivery_tag, d.acker.clone(), false, false));
    }

    async fn mark(&self, tag: u64, needs_ack: bool) {
        let mut st = self.state.lock().await;
        if let Some(entry) = st.window.iter_mut().find(|e| e.0 == tag) {
            entry.2 = true;
            entry.3 = needs_ack;
        }
        let mut last_ack: Option<lapin::Acker> = None;
        let mut any_pending_ack = false;
        while st.window.front().is_some_and(|e| e.2) {
            if let Some((_, acker, _, needs)) = st.window.pop_front() {
                if needs {
                    any_pending_ack = true;
                }
                last_ack = Some(acker);
            }
        }
        if let (true, Some(acker)) = (any_pending_ack, last_ack) {
            let multiple = BasicAckOptions { multiple: true };
            if let Err(e) = acker.ack(multiple).await {
                tracing::warn!(error = %e, "Ack failed; the broker will redeliver (the inbox drops the duplicate).");
            }
        }
    }

    /// The delivery is done: it will be acked (possibly together with others).
    async fn ack(&self, d: &Delivery) {
        self.mark(d.delivery_tag, true).await
    }

    /// The delivery goes back to the queue (its work is not done).
    async fn requeue(&self, d: &Delivery) {
        let _ = d
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
        self.mark(d.delivery_tag, false).await
    }
}

/// Turns the DLQ copy into an envelope whose `dk-*` extensions carry the death note.
fn dead_letter_envelope(d: &Delivery) -> Envelope {
    let headers = d.properties.headers().clone().unwrap_or_default();
    let mut env = from_amqp(&d.properties, &d.data).unwrap_or_else(|reason| Envelope {
        id: d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        source: "/drehkreuz/bus".into(),
        event_type: d.routing_key.as_str().to_string(),
        subject: None,
        time: chrono::Utc::now(),
        datacontenttype: "text/plain".into(),
        extensions: [("malformed".to_string(), reason)].into_iter().collect(),
        data: serde_json::Value::String(String::from_utf8_lossy(&d.data).into_owned()),
    });
    if let Some(r) = header_str(&headers, H_REASON) {
        env.extensions.insert("dk-reason".into(), r);
    }
    let attempts = header_i64(&headers, H_ATTEMPTS)
        .or_else(|| header_i64(&headers, "x-delivery-count"))
        .unwrap_or(0);
    env.extensions
        .insert("dk-attempts".into(), attempts.to_string());
    if let Some(f) = header_i64(&headers, H_FIRST_FAILURE) {
        env.extensions
            .insert("dk-first-failure".into(), f.to_string());
    }
    env
}

impl RabbitBus {
    async fn record_dead_letters(&self, consumer: String, shutdown: CancellationToken) {
        let queue = self.shared.s.names.dead_letter_queue(&consumer);
        let spec = ConsumerSpec {
            name: format!("{consumer}.dlq"),
            routing_keys: vec![],
        };
        let c = Consumer::new(spec, Arc::new(DeadLetterRecorder { consumer }));
        self.supervise(c, queue, Role::DeadLetters, shutdown).await;
    }

    /// Records one DLQ copy (once: the inbox key is its death id) and acks it.
    async fn process_dead_letter(&self, acks: &AckTracker, consumer: &Consumer, d: Delivery) {
        let mut env = dead_letter_envelope(&d);
        let headers = d.properties.headers().clone().unwrap_or_default();
        let key = header_str(&headers, H_DEATH_ID).unwrap_or_else(|| {
            format!(
                "{}:{}",
                env.id,
                header_i64(&headers, "x-delivery-count").unwrap_or(0)
            )
        });
        env.extensions
            .insert("dk-message-id".into(), env.id.clone());
        env.id = key;
        match apply(
            &self.shared.db,
            &consumer.spec.name,
            consumer.handler.as_ref(),
            &env,
        )
        .await
        {
            Outcome::Applied | Outcome::Duplicate => acks.ack(&d).await,
            Outcome::Retry(e) | Outcome::Dead(e) => {
                tracing::warn!(queue = %consumer.spec.name, error = %e, "Could not record a dead letter; it stays in the DLQ.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                acks.requeue(&d).await;
            }
        }
    }
}

#[async_trait]
impl Bus for RabbitBus {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn declare(&self, consumers: &[ConsumerSpec]) -> anyhow::Result<()> {
        if let Ok(mut d) = self.shared.declared.lock() {
            for c in consumers {
                if !d.contains(c) {
                    d.push(c.clone());
                }
            }
        }
        let ch = self.publish_channel().await?;
        self.declare_on(&ch, consumers).await
    }

    async fn publish(&self, events: &[Envelope]) -> Vec<Result<(), PublishError>> {
        let ch = match self.publish_channel().await {
            Ok(ch) => ch,
            Err(e) => {
                self.note_error("publish", &e);
                return vec![Err(PublishError::Unavailable(e.to_string())); events.len()];
            }
        };
        let exchange = self.shared.s.names.exchange();
        let mut pending = Vec::with_capacity(events.len());
        for ev in events {
            let (body, props) = to_amqp(ev);
            let sent = ch
                .basic_publish(
                    s(&exchange),
                    s(&ev.event_type),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await;
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(events.len());
        for (ev, sent) in events.iter().zip(pending) {
            let r = match sent {
                Ok(confirm) => settle_confirm(confirm.await, &ev.event_type),
                Err(e) => Err(PublishError::Unavailable(e.to_string())),
            };
            if r.is_ok() {
                telemetry::published(&ev.event_type);
            } else if let Err(e) = &r {
                self.note_error("publish", e);
            }
            results.push(r);
        }
        results
    }

    async fn run(
        &self,
        consumers: Vec<Consumer>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut set = tokio::task::JoinSet::new();
        for c in consumers {
            let queue = self.shared.s.names.queue(&c.spec.name);
            let me = self.clone();
            let sd = shutdown.clone();
            let name = c.spec.name.clone();
            set.spawn(async move { me.supervise(c, queue, Role::Work, sd).await });
            let me = self.clone();
            let sd = shutdown.clone();
            set.spawn(async move { me.record_dead_letters(name, sd).await });
        }
        while let Some(r) = set.join_next().await {
            r?;
        }
        if let Some(c) = self.shared.consumer_conn.lock().await.take() {
            let _ = c.close(200, s("shutdown")).await;
        }
        Ok(())
    }

    async fn replay(&self, dead: &DeadLetter) -> anyhow::Result<()> {
        if dead.consumer == super::topology::RELAY_DEAD_LETTER_CONSUMER {
            return super::republish_by_type(self, dead).await;
        }
        let (body, props) = to_amqp(&dead.envelope);
        let queue = self.shared.s.names.queue(&dead.consumer);
        self.publish_one("", &queue, &body, props)
            .await
            .map_err(|e| anyhow::anyhow!("replay of dead letter {} failed: {e}", dead.id))
    }

    fn health(&self) -> BusHealth {
        let p = self.shared.publish_up.load(Ordering::SeqCst);
        let c = self.shared.consume_up.load(Ordering::SeqCst);
        let last = self
            .shared
            .last_error
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        BusHealth {
            kind: "rabbitmq",
            ready: p && c,
            detail: format!(
                "publish connection {}, consume connection {}{}",
                if p { "up" } else { "down" },
                if c { "up" } else { "down" },
                if last.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last}")
                }
            ),
        }
    }
}
