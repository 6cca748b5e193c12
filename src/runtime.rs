//! Wiring of one hub process: store, bus, consumers, outbox relay, scheduler and HTTP server,
//! started from the configuration and stopped gracefully.
//!
//! Shutdown order (SIGINT/SIGTERM or the caller's token): the HTTP server stops accepting and
//! finishes open requests; consumers stop taking deliveries and finish the ones in flight
//! (anything not finished is never acked and comes back); the relay then flushes the outbox
//! rows written by that last work; the scheduler stops; connections close.

use crate::bus::{self, Bus, Consumer, ConsumerSpec};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::relay::Relay;
use crate::schedule::{Entry, Housekeeping, Job, Scheduler};

use crate::store::Db;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A built hub, ready to run.
pub struct Hub {
    pub cfg: Config,
    pub db: Db,
    pub bus: Arc<dyn Bus>,
    pub relay_wakeup: Arc<Notify>,
    pub consumers: Vec<Consumer>,
    pub jobs: BTreeMap<String, Arc<dyn Job>>,
}

impl Hub {
    /// Opens (and migrates) the store, builds the bus, the consumers and the jobs.
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let db = Db::open_with(
            &cfg.database_url(),
            crate::store::DbOptions::from_config(&cfg),
        )
        .await?;
        let bus = bus::from_config(&cfg, &db).await?;
        let consumers = crate::pipeline::consumers(&cfg, &db);
        let mut jobs: BTreeMap<String, Arc<dyn Job>> = BTreeMap::new();
        jobs.insert(
            "housekeeping".into(),
            Arc::new(Housekeeping {
                db: db.clone(),
                keep_inbox_days: 90,
                keep_outbox_days: 30,
            }),
        );
        jobs.insert(
            "invoice_run".into(),
            Arc::new(crate::schedule::MonthlyPreview { db: db.clone() }),
        );
        jobs.insert(
            "asset_reminders".into(),
            Arc::new(crate::warehouse::reminders::AssetReminders {
                db: db.clone(),
                windows: cfg.warehouse.reminder_days.clone(),
            }),
        );
        if let Some(z) = &cfg.zammad {
            jobs.insert(
                "zammad_reconcile".into(),
                Arc::new(crate::helpdesk::ZammadReconcile {
                    db: db.clone(),
                    client: zammad::Client::new(&z.base_url, z.token.clone()),
                    source: z.source.clone(),
                    mapping: z.mapping.clone(),
                    per_page: 500,
                }),
            );
        }
        Ok(Self {
            cfg,
            db,
            bus,
            relay_wakeup: Arc::new(Notify::new()),
            consumers,
            jobs,
        })
    }

    /// The consumer specs (queues and bindings) this hub declares.
    pub fn specs(&self) -> Vec<ConsumerSpec> {
        self.consumers.iter().map(|c| c.spec.clone()).collect()
    }

    /// Declares the bus topology, retrying with capped backoff until it succeeds (the broker may
    /// be starting or down) or `shutdown` is cancelled; returns whether it was declared. The
    /// HTTP server already serves `/healthz` and `/readyz` (503) while this waits.
    pub async fn declare(&self, shutdown: &CancellationToken) -> anyhow::Result<bool> {
        use backon::BackoffBuilder;
        let mut delays = backon::ExponentialBuilder::default()
            .with_jitter()
            .with_max_delay(Duration::from_millis(
                self.cfg.bus.reconnect_max_delay_ms.max(100),
            ))
            .without_max_times()
            .build();
        loop {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            match self.bus.declare(&self.specs()).await {
                Ok(()) => return Ok(true),
                Err(e) => {
                    let wait = delays
                        .next()
                        .unwrap_or(Duration::from_millis(self.cfg.bus.reconnect_max_delay_ms));
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "Declaring the bus topology failed; retrying.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    fn schedule_entries(&self) -> anyhow::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut schedule = self.cfg.schedule.clone();
        // With [zammad], reconcile every 15 minutes unless configured otherwise.
        if self.jobs.contains_key("zammad_reconcile") && !schedule.contains_key("zammad_reconcile")
        {
            schedule.insert(
                "zammad_reconcile".into(),
                crate::config::ScheduleSection {
                    cron: "0 */15 * * * *".into(),
                    timezone: "Europe/Berlin".into(),
                    enabled: true,
                },
            );
        }
        for (name, s) in &schedule {
            if !s.enabled {
                continue;
            }
            let job = self.jobs.get(name).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "schedule.{name}: no job of that name (known: {})",
                    self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            entries.push(Entry::new(name, &s.cron, &s.timezone, job)?);
        }
        Ok(entries)
    }

    /// Runs everything until `shutdown` is cancelled, then stops in order. Binds
    /// `http.listen` (and `http.metrics_listen` when set) itself.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = tokio::net::TcpListener::bind(&self.cfg.http.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", self.cfg.http.listen))?;
        let metrics = match &self.cfg.http.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?,
            ),
            None => None,
        };
        self.run_with_listeners(api, metrics, shutdown).await
    }

    /// Like [`Hub::run`] on listeners the caller has already bound (tests bind port 0 and
    /// read the address, so no port is ever released and re-bound). `metrics`, when given,
    /// serves `/metrics` alone and the API listener does not; `http.listen` and
    /// `http.metrics_listen` are not used.
    pub async fn run_with_listeners(
        self,
        listener: tokio::net::TcpListener,
        metrics_listener: Option<tokio::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let entries = self.schedule_entries()?;
        let metrics = crate::telemetry::prometheus();
        let state = AppState {
            db: self.db.clone(),
            bus: self.bus.clone(),
            relay_wakeup: self.relay_wakeup.clone(),
            metrics,
            warehouse: Arc::new(self.cfg.warehouse.clone()),
            consumer_bindings: Arc::new(
                self.specs()
                    .into_iter()
                    .flat_map(|s| s.routing_keys)
                    .collect(),
            ),
            zammad_webhook: self.cfg.zammad.as_ref().and_then(|z| {
                z.webhook_secret
                    .clone()
                    .map(|secret| crate::http::webhooks::ZammadWebhook {
                        secret,
                        source: z.source.clone(),
                    })
            }),
        };
        let app = http::router(
            state.clone(),
            metrics_listener.is_none(),
            self.cfg.http.body_limit_bytes,
        );
        let listen = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.cfg.http.listen.clone());
        tracing::info!(
            listen = %listen,
            store = self.db.backend.name(),
            bus = self.bus.kind(),
            "drehkreuz is running."
        );
        let http_sd = shutdown.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(http_sd.cancelled_owned())
                .await
        });
        let metrics_task = match metrics_listener {
            Some(l) => {
                let sd = shutdown.clone();
                let r = http::metrics_router(state);
                Some(tokio::spawn(async move {
                    axum::serve(l, r)
                        .with_graceful_shutdown(sd.cancelled_owned())
                        .await
                }))
            }
            None => None,
        };

        // The bus comes up after the HTTP server: with the broker down the hub still answers
        // `/healthz` (200) and `/readyz` (503) and takes ingress into the outbox.
        if !self.declare(&shutdown).await? {
            tracing::info!("Shutting down before the bus was reachable.");
            let _ = http_task.await;
            if let Some(t) = metrics_task {
                let _ = t.await;
            }
            self.db.pool.close().await;
            return Ok(());
        }
        let relay_stop = CancellationToken::new();
        let relay = Relay::new(
            self.db.clone(),
            self.bus.clone(),
            self.relay_wakeup.clone(),
            Duration::from_millis(self.cfg.bus.poll_interval_ms.max(1)),
            self.cfg.bus.retry_delays_ms.clone(),
        )
        .with_lease(Duration::from_millis(self.cfg.bus.lease_ms));
        let relay_task =
            tokio::spawn(relay.run_workers(self.cfg.bus.relay_workers, relay_stop.clone()));
        let scheduler = Scheduler::new(self.db.clone(), &self.cfg.hub.instance, entries);
        let sched_task = tokio::spawn(scheduler.run(shutdown.clone()));
        let bus = self.bus.clone();
        let consumers = self.consumers.clone();
        let cons_sd = shutdown.clone();
        let consumer_task = tokio::spawn(async move { bus.run(consumers, cons_sd).await });

        shutdown.cancelled().await;
        tracing::info!("Shutting down: finishing in-flight work.");
        let grace = Duration::from_secs(self.cfg.hub.shutdown_grace_secs);
        let stop = async {
            let _ = http_task.await;
            if let Some(t) = metrics_task {
                let _ = t.await;
            }
            match consumer_task.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "Consumers ended with an error."),
                Err(e) => tracing::warn!(error = %e, "Consumer task panicked."),
                Ok(Ok(())) => {}
            }
            relay_stop.cancel();
            let _ = relay_task.await;
            let _ = sched_task.await;
        };
        if tokio::time::timeout(grace, stop).await.is_err() {
            tracing::warn!("Graceful shutdown timed out; unfinished work was not acknowledged and will be redelivered.");
        }
        self.db.pool.close().await;
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        t.cancel();
    });
    token
}
