//! The scheduler: cron expressions read in a time zone (Europe/Berlin by default), each due
//! time claimed in the store so it runs once, even with several hub processes on one
//! PostgreSQL. A due time missed while no hub ran is caught up at the next start (the latest
//! missed one, never one from before the schedule was first registered).

use crate::store::{schedule as ledger, Db};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Work that runs on a schedule.
#[async_trait]
pub trait Job: Send + Sync + 'static {
    /// Runs the job for the due time `due` (UTC).
    async fn run(&self, due: DateTime<Utc>) -> anyhow::Result<()>;
}

/// One scheduled job.
pub struct Entry {
    pub name: String,
    pub schedule: cron::Schedule,
    pub timezone: Tz,
    pub job: Arc<dyn Job>,
}

impl Entry {
    pub fn new(
        name: &str,
        cron_expr: &str,
        timezone: &str,
        job: Arc<dyn Job>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            schedule: cron::Schedule::from_str(cron_expr)
                .map_err(|e| anyhow::anyhow!("schedule.{name}.cron: {e}"))?,
            timezone: timezone.parse().map_err(|_| {
                anyhow::anyhow!("schedule.{name}.timezone: unknown time zone {timezone:?}")
            })?,
            job,
        })
    }

    /// The latest due time at or before `now`.
    pub fn latest_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone) + chrono::Duration::milliseconds(1);
        self.schedule
            .after(&local)
            .next_back()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next due time after `now`.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone);
        self.schedule
            .after(&local)
            .next()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// Runs scheduled jobs.
pub struct Scheduler {
    db: Db,
    instance: String,
    entries: Vec<Entry>,
}

impl Scheduler {
    pub fn new(db: Db, instance: &str, entries: Vec<Entry>) -> Self {
        Self {
            db,
            instance: instance.to_string(),
            entries,
        }
    }

    /// Runs every job whose latest due time is claimed by this call; returns their names.
    pub async fn tick(
        &self,
        now: DateTime<Utc>,
        registered: &[i64],
    ) -> anyhow::Result<Vec<String>> {
        let mut ran = Vec::new();
        for (entry, since) in self.entries.iter().zip(registered) {
            let Some(due) = entry.latest_due(now) else {
                continue;
            };
            let due_ms = due.timestamp_millis();
            if due_ms < *since {
                continue;
            }
            if !ledger::claim(&self.db, &entry.name, due_ms, &self.instance).await? {
                continue;
            }
            tracing::info!(schedule = %entry.name, due = %due, "Running scheduled job.");
            let result = entry.job.run(due).await;
            let error = result.as_ref().err().map(|e| format!("{e:#}"));
            if let Some(e) = &error {
                tracing::error!(schedule = %entry.name, error = %e, "Scheduled job failed.");
            }
            ledger::finish(&self.db, &entry.name, due_ms, error.as_deref()).await?;
            ran.push(entry.name.clone());
        }
        Ok(ran)
    }

    /// Registers the schedules and ticks until shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut registered = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            registered.push(
                ledger::register(
                    &self.db,
                    &e.name,
                    &e.schedule.to_string(),
                    e.timezone.name(),
                )
                .await?,
            );
        }
        loop {
            let now = Utc::now();
            if let Err(e) = self.tick(now, &registered).await {
                tracing::warn!(error = %e, "Scheduler tick failed.");
            }
            let next = self
                .entries
                .iter()
                .filter_map(|e| e.next_due(now))
                .min()
                .map(|n| (n - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60))
                + Duration::from_millis(5);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(next) => {},
            }
        }
    }
}

/// The built-in housekeeping job: forgets old inbox entries and published outbox rows.
pub struct Housekeeping {
    pub db: Db,
    pub keep_inbox_days: i64,
    pub keep_outbox_days: i64,
}

#[async_trait]
impl Job for Housekeeping {
    async fn run(&self, due: DateTime<Utc>) -> anyhow::Result<()> {
        let inbox_before = (due - chrono::Duration::days(self.keep_inbox_days)).timestamp_millis();
        let outbox_before =
            (due - chrono::Duration::days(self.keep_outbox_days)).timestamp_millis();
        let a = crate::store::inbox::prune(&self.db, inbox_before).await?;
        let b = crate::store::outbox::prune_sent(&self.db, outbox_before).await?;
        tracing::info!(inbox_pruned = a, outbox_pruned = b, "Housekeeping done.");
        Ok(())
    }
}

/// The monthly billing job: creates (or refreshes) the preview run of the month before the
/// due time (in Europe/Berlin). Runs once per due time (the scheduler's claim); accounting
/// then adjusts, approves and finalizes it.
pub struct MonthlyPreview {
    pub db: Db,
}

#[async_trait]
impl Job for MonthlyPreview {
    async fn run(&self, due: DateTime<Utc>) -> anyhow::Result<()> {
        let period = canonical::work::Period::of(due).previous();
        let run =
            crate::billing::run::preview(&self.db, period, None, "schedule:invoice_run").await?;
        tracing::info!(run = %run.id, %period, targets = run.summary.targets, problems = run.problems.len(), "Monthly preview run created.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    #[async_trait]
    impl Job for Nothing {
        async fn run(&self, _due: DateTime<Utc>) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn monthly_at_six_berlin_is_read_in_local_time() {
        let e = Entry::new("m", "0 0 6 1 * *", "Europe/Berlin", Arc::new(Nothing)).unwrap();
        // 2026-03-01 06:00 CET = 05:00 UTC; 2026-04-01 06:00 CEST = 04:00 UTC.
        let now: DateTime<Utc> = "2026-03-15T12:00:00Z".parse().unwrap();
        assert_eq!(
            e.latest_due(now).unwrap().to_rfc3339(),
            "2026-03-01T05:00:00+00:00"
        );
        assert_eq!(
            e.next_due(now).unwrap().to_rfc3339(),
            "2026-04-01T04:00:00+00:00"
        );
        // Exactly at the due time it is due.
        let at: DateTime<Utc> = "2026-04-01T04:00:00Z".parse().unwrap();
        assert_eq!(e.latest_due(at).unwrap(), at);
    }
}
