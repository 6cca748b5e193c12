//! The live contingent ledger: after work is recorded (event `work.recorded`, written by the
//! intake in the same transaction as the entry), the `contingent-ledger` consumer rates the
//! customer's contingent contracts for that period from the store, stores the statement
//! (`contingent_live`: opening, allotment, consumption, closing as of now) and, for every threshold
//! crossed for the first time in the period, records a notice and publishes
//! `contingent.threshold_crossed` — the moment it happens, not only at month end. The notice
//! table's key `(contract, period, percent)` makes it once per threshold and period.
//!
//! Budget contracts likewise, per level ([`crate::billing::budget`]): every threshold of a
//! level's cap (`budget.thresholds`, default 80 and 100 %) reached for the first time in the
//! period is recorded in `budget_notices` (key `(contract, period, level, percent)`) and
//! published as `budget.threshold_crossed`.

use crate::bus::{Handler, HandlerError};
use crate::masterdata;
use crate::store::{now_ms, outbox, Db, Tx};
use async_trait::async_trait;
use canonical::contract::ContractKind;
use canonical::work::Period;
use canonical::Envelope;
use serde::{Deserialize, Serialize};

/// The consumer's queue name and binding.
pub const CONSUMER: &str = "contingent-ledger";
pub const ROUTING_KEYS: &[&str] = &["work.recorded"];

/// Body of `work.recorded`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkRecorded {
    pub customer_id: String,
    pub period: Period,
}

/// Body of `contingent.threshold_crossed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdCrossed {
    pub customer_id: String,
    pub customer_name: String,
    pub contract_id: String,
    pub period: Period,
    pub percent: u32,
    pub consumed: String,
    pub available: String,
    pub entry_id: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who to tell (customer master data).
    pub notify: Vec<canonical::customer::Contact>,
}

/// Body of `budget.threshold_crossed`: a level of a budget contract reached `percent` % of its
/// cap in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetThresholdCrossed {
    pub customer_id: String,
    pub customer_name: String,
    pub contract_id: String,
    pub period: Period,
    pub level: String,
    pub percent: u32,
    pub used_minutes: u32,
    pub cap_minutes: u32,
    pub entry_id: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who to tell (customer master data).
    pub notify: Vec<canonical::customer::Contact>,
}

/// The event the intake writes with each stored entry.
pub fn work_recorded(
    customer_id: &str,
    period: Period,
    entry_key: &str,
) -> Result<Envelope, canonical::EnvelopeError> {
    Envelope::new(
        "/drehkreuz/intake",
        "work.recorded",
        entry_key,
        &format!("{customer_id}:{period}"),
        chrono::Utc::now(),
        &WorkRecorded {
            customer_id: customer_id.into(),
            period,
        },
    )
}

/// The `contingent-ledger` handler.
pub struct ContingentLedger {
    pub db: Db,
}

#[async_trait]
impl Handler for ContingentLedger {
    async fn handle(&self, ev: &Envelope, tx: &mut Tx<'_>) -> Result<(), HandlerError> {
        let w: WorkRecorded = ev
            .decode()
            .map_err(|e| HandlerError::Permanent(format!("work.recorded {}: {e}", ev.id)))?;
        // Every read goes through the handler's own transaction (see `rate_contract_in`).
        let Some(customer) = masterdata::customer_in(tx, &w.customer_id).await? else {
            return Ok(());
        };
        for (c, _) in masterdata::contracts_in(tx, Some(&w.customer_id)).await? {
            if let ContractKind::Budget {
                caps_minutes,
                thresholds,
            } = &c.kind
            {
                budget_notices(tx, &customer, &c, caps_minutes, thresholds, w.period).await?;
                continue;
            }
            if !matches!(c.kind, ContractKind::Contingent(_)) {
                continue;
            }
            let rating = match crate::billing::run::rate_contract_in(tx, &c, w.period, &[]).await? {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(contract = %c.id, error = %e, "Cannot rate the contingent for thresholds.");
                    continue;
                }
            };
            if let Some(st) = &rating.contingent {
                let json = serde_json::to_string(st)
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO contingent_live (contract_id, period, statement, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (contract_id, period) DO UPDATE SET statement = excluded.statement, updated_at = excluded.updated_at",
                )
                .bind(&c.id)
                .bind(w.period.to_string())
                .bind(json)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
            }
            for x in rating.crossings {
                let new = sqlx::query(
                    "INSERT INTO threshold_notices (contract_id, period, percent, entry_id, noticed_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&c.id)
                .bind(w.period.to_string())
                .bind(i64::from(x.percent))
                .bind(&x.entry_id)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?
                .rows_affected()
                    == 1;
                if new {
                    let body = ThresholdCrossed {
                        customer_id: customer.id.clone(),
                        customer_name: customer.name.clone(),
                        contract_id: c.id.clone(),
                        period: w.period,
                        percent: x.percent,
                        consumed: x.consumed.to_string(),
                        available: x.available.to_string(),
                        entry_id: x.entry_id.clone(),
                        at: x.at,
                        notify: customer.notification_contacts.clone(),
                    };
                    let ev = Envelope::new(
                        "/drehkreuz/billing",
                        "contingent.threshold_crossed",
                        &format!("{}:{}:{}", c.id, w.period, x.percent),
                        "1",
                        x.at,
                        &body,
                    )
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                    outbox::enqueue(tx, &ev).await?;
                }
            }
        }
        Ok(())
    }
}

/// Rates a budget contract's period and publishes `budget.threshold_crossed` for every
/// threshold of a level reached for the first time in the period (`budget_notices` keeps it
/// once per contract, period, level and threshold).
async fn budget_notices(
    tx: &mut Tx<'_>,
    customer: &canonical::customer::Customer,
    c: &canonical::contract::Contract,
    caps: &std::collections::BTreeMap<String, u32>,
    thresholds: &[u32],
    period: Period,
) -> Result<(), HandlerError> {
    let rating = match crate::billing::run::rate_contract_in(tx, c, period, &[]).await? {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(contract = %c.id, error = %e, "Cannot rate the budget for thresholds.");
            return Ok(());
        }
    };
    let (_, crossings) = crate::billing::budget::status(&rating, caps, thresholds);
    for x in crossings {
        let new = sqlx::query(
            "INSERT INTO budget_notices (contract_id, period, level, percent, entry_id, noticed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&c.id)
        .bind(period.to_string())
        .bind(&x.level)
        .bind(i64::from(x.percent))
        .bind(&x.entry_id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !new {
            continue;
        }
        let body = BudgetThresholdCrossed {
            customer_id: customer.id.clone(),
            customer_name: customer.name.clone(),
            contract_id: c.id.clone(),
            period,
            level: x.level.clone(),
            percent: x.percent,
            used_minutes: x.used_minutes,
            cap_minutes: x.cap_minutes,
            entry_id: x.entry_id.clone(),
            at: x.at,
            notify: customer.notification_contacts.clone(),
        };
        let ev = Envelope::new(
            "/drehkreuz/billing",
            "budget.threshold_crossed",
            &format!("{}:{}:{}:{}", c.id, period, x.level, x.percent),
            "1",
            x.at,
            &body,
        )
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        outbox::enqueue(tx, &ev).await?;
    }
    Ok(())
}
