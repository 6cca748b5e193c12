//! Warranty and licence reminders (`[schedule.asset_reminders]`, daily).
//!
//! For each asset whose warranty end or licence expiry lies within the largest configured
//! window (`[warehouse] reminder_days`, default 60 and 30 days), the job emits one
//! `asset.reminder_due` for the *nearest* window the date falls into, and records that window
//! and every wider one as done (in `asset_reminders`, in the same transaction as the outbox
//! row). So an asset ending in 45 days gets its 60-day reminder today and its 30-day reminder
//! in 15 days; one ending in 30 days when first seen gets exactly one reminder, not two; a
//! repeated run emits nothing new. A changed end date (a renewed licence) starts afresh.

use crate::store::{now_ms, outbox, Db};
use async_trait::async_trait;
use canonical::customer::Contact;
use canonical::goods::Asset;
use canonical::Envelope;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub const REMINDER_DUE: &str = "asset.reminder_due";

/// The event `asset.reminder_due`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderDue {
    pub asset: Asset,
    /// `warranty` or `licence`.
    pub kind: String,
    pub ends_on: NaiveDate,
    pub window_days: u32,
    pub days_left: i64,
    pub customer_name: String,
    #[serde(default)]
    pub account_manager: Option<Contact>,
}

/// The reminder job.
pub struct AssetReminders {
    pub db: Db,
    /// Windows in days before the end date.
    pub windows: Vec<u32>,
}

/// The nearest window (smallest number of days) that `days_left` falls into.
pub fn window_for(windows: &[u32], days_left: i64) -> Option<u32> {
    windows
        .iter()
        .copied()
        .filter(|w| days_left >= 0 && days_left <= i64::from(*w))
        .min()
}

#[async_trait]
impl crate::schedule::Job for AssetReminders {
    async fn run(&self, due: DateTime<Utc>) -> anyhow::Result<()> {
        let n = run_at(
            &self.db,
            &self.windows,
            due.with_timezone(&chrono_tz::Europe::Berlin).date_naive(),
        )
        .await?;
        tracing::info!(reminders = n, "Asset reminders checked.");
        Ok(())
    }
}

/// Emits the reminders due on `today` (Berlin calendar day); returns how many.
pub async fn run_at(db: &Db, windows: &[u32], today: NaiveDate) -> anyhow::Result<usize> {
    let Some(widest) = windows.iter().copied().max() else {
        return Ok(0);
    };
    let until = today + chrono::Duration::days(i64::from(widest));
    let mut emitted = 0;
    for (kind, column) in [("warranty", "warranty_end"), ("licence", "licence_expiry")] {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM assets WHERE {column} IS NOT NULL AND {column} >= $1 AND {column} <= $2 ORDER BY {column}, id",
            super::assets::COLUMNS
        ))
        .bind(today.to_string())
        .bind(until.to_string())
        .fetch_all(&db.pool)
        .await?;
        for row in &rows {
            let asset = super::assets::asset_of(row)?;
            let ends_on = match kind {
                "warranty" => asset.warranty_end,
                _ => asset.licence_expiry,
            };
            let Some(ends_on) = ends_on else { continue };
            let days_left = (ends_on - today).num_days();
            let Some(window) = window_for(windows, days_left) else {
                continue;
            };
            let mut tx = db.begin_write().await?;
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(window_days) FROM asset_reminders WHERE asset_id = $1 AND kind = $2 AND ends_on = $3",
            )
            .bind(&asset.id)
            .bind(kind)
            .bind(ends_on.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if done.is_some_and(|d| d <= i64::from(window)) {
                continue;
            }
            for w in windows.iter().copied().filter(|w| *w >= window) {
                sqlx::query(
                    "INSERT INTO asset_reminders (asset_id, kind, window_days, ends_on, emitted, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&asset.id)
                .bind(kind)
                .bind(i64::from(w))
                .bind(ends_on.to_string())
                .bind(i64::from(w == window))
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            let customer = crate::masterdata::customer_in(&mut tx, &asset.customer_id).await?;
            let data = ReminderDue {
                kind: kind.to_string(),
                ends_on,
                window_days: window,
                days_left,
                customer_name: customer
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| asset.customer_id.clone()),
                account_manager: customer.and_then(|c| c.account_manager),
                asset: asset.clone(),
            };
            let ev = Envelope::new(
                "/warehouse/reminders",
                REMINDER_DUE,
                &asset.id,
                &format!("{kind}:{ends_on}:{window}"),
                Utc::now(),
                &data,
            )?;
            outbox::enqueue(&mut tx, &ev).await?;
            tx.commit().await?;
            emitted += 1;
        }
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::window_for;

    #[test]
    fn nearest_window() {
        let w = [60, 30];
        assert_eq!(window_for(&w, 61), None);
        assert_eq!(window_for(&w, 60), Some(60));
        assert_eq!(window_for(&w, 31), Some(60));
        assert_eq!(window_for(&w, 30), Some(30));
        assert_eq!(window_for(&w, 0), Some(30));
        assert_eq!(window_for(&w, -1), None);
    }
}
