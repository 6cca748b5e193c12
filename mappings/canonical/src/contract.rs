//! Contracts and rate cards: what a customer pays for support work, and how.
//!
//! Kinds (see `docs/billing.md`): time and material (Kooperationsvereinbarung), prepaid
//! contingent in minutes, money or calls (Kontingent, with rollover and overdraft policy and
//! thresholds), budget caps per level, flat rate (covered elsewhere), managed service (usage ×
//! unit price). Amounts are `Decimal` EUR net; minutes are whole minutes.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How billable minutes are rounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundingPolicy {
    /// Block size in minutes (1 = no rounding).
    #[serde(default = "one")]
    pub increment_minutes: u32,
    #[serde(default)]
    pub mode: RoundingMode,
    #[serde(default)]
    pub scope: RoundingScope,
    /// Smallest billed duration of an entry that is billed at all.
    #[serde(default)]
    pub minimum_minutes: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Default for RoundingPolicy {
    fn default() -> Self {
        Self {
            increment_minutes: 1,
            mode: RoundingMode::Up,
            scope: RoundingScope::Entry,
            minimum_minutes: None,
        }
    }
}

/// `up` = each started block is billed; `nearest` = to the nearest block (half up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    #[default]
    Up,
    Nearest,
}

/// `entry` = each entry on its own; `ticket` = the sum per ticket, level and activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingScope {
    #[default]
    Entry,
    Ticket,
}

/// An hourly rate for a support level and (optionally) an activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub level: String,
    /// `None` = any activity of this level.
    #[serde(default)]
    pub activity: Option<String>,
    pub hourly: Decimal,
}

/// How travel is charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Travel {
    /// One flat charge per on-site visit.
    #[serde(default)]
    pub flat_per_visit: Option<Decimal>,
    /// Or travel time at this hourly rate.
    #[serde(default)]
    pub hourly: Option<Decimal>,
}

/// Prices of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCard {
    #[serde(default)]
    pub rates: Vec<Rate>,
    #[serde(default)]
    pub travel: Option<Travel>,
}

impl RateCard {
    /// The hourly rate for (level, activity): an exact match first, then the level's default.
    pub fn hourly(&self, level: &str, activity: &str) -> Option<Decimal> {
        self.rates
            .iter()
            .find(|r| r.level == level && r.activity.as_deref() == Some(activity))
            .or_else(|| {
                self.rates
                    .iter()
                    .find(|r| r.level == level && r.activity.is_none())
            })
            .map(|r| r.hourly)
    }
}

/// What a contingent counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContingentUnit {
    Minutes,
    Money,
    Calls,
}

/// What happens to a positive remainder at period end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollover {
    /// Nothing expires (the classic Systemhaus promise).
    Unlimited,
    /// At most this much carries over (in the contingent's unit).
    Cap(Decimal),
    /// The remainder expires.
    None,
}

/// What happens when the balance goes below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overdraft {
    /// Invoiced in this run at the overage rate; the balance goes back to 0.
    Bill,
    /// The negative balance carries into the next period.
    Carry,
    /// Work beyond the balance is held for the customer's approval, not invoiced.
    Hold,
}

/// A prepaid contingent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContingentTerms {
    pub unit: ContingentUnit,
    /// Added every period (minutes, EUR or calls).
    pub allotment: Decimal,
    /// Invoiced every period, used or not.
    pub fee: Decimal,
    pub rollover: Rollover,
    pub overdraft: Overdraft,
    /// Hourly rate for overdraft minutes (unit minutes); default: the rate card's rate.
    #[serde(default)]
    pub overage_hourly: Option<Decimal>,
    /// Price of a call beyond the allotment (unit calls).
    #[serde(default)]
    pub per_call_price: Option<Decimal>,
    /// Percentages of what is available in the period that trigger a notice.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
    /// Only these levels draw from the contingent (others are billed); `None` = all.
    #[serde(default)]
    pub levels: Option<Vec<String>>,
    /// Whether travel draws from the contingent.
    #[serde(default)]
    pub includes_travel: bool,
}

fn default_thresholds() -> Vec<u32> {
    vec![80, 100]
}

/// Contract kind and its terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContractKind {
    /// Collective invoice of all billable lines at rate-card prices.
    TimeAndMaterial,
    Contingent(ContingentTerms),
    /// Work up to each level's cap (minutes) is billed; beyond is held for approval.
    Budget {
        caps_minutes: BTreeMap<String, u32>,
        /// Percentages of each level's cap that trigger a notice to the customer, once per
        /// threshold, level and period (default 80 and 100).
        #[serde(default = "default_thresholds")]
        thresholds: Vec<u32>,
    },
    /// Covered by contract (billed elsewhere): report only.
    FlatRate,
    /// Usage × unit price per SKU.
    ManagedService {
        unit_prices: BTreeMap<String, Decimal>,
    },
}

/// A customer's support contract. (Not `deny_unknown_fields`: serde cannot combine it with the
/// flattened kind; the master-data document that produces contracts is strict instead.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub id: String,
    pub customer_id: String,
    #[serde(flatten)]
    pub kind: ContractKind,
    #[serde(default)]
    pub rate_card: RateCard,
    #[serde(default)]
    pub rounding: RoundingPolicy,
    /// Ticket classifications that are never billed (e.g. `base_bug`).
    #[serde(default)]
    pub free_classifications: Vec<String>,
    /// Free initial diagnosis per ticket (Erstdiagnose), in minutes.
    #[serde(default)]
    pub free_diagnosis_minutes: u32,
    /// VAT rate in percent (default 19) and EN 16931 category code (default `S`).
    #[serde(default = "default_vat")]
    pub vat_rate: Decimal,
    #[serde(default = "default_category")]
    pub vat_category: String,
    /// One invoice per cost centre (the ticket's `cost_centre`) instead of one per customer.
    #[serde(default)]
    pub split_by_cost_centre: bool,
    /// What work this contract covers when a customer has several (empty = anything).
    #[serde(default, skip_serializing_if = "ContractScope::is_empty")]
    pub scope: ContractScope,
    /// The customer's default contract: work no other contract claims is billed on it.
    #[serde(
        default,
        rename = "default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_default: bool,
}

/// The work a contract covers: each non-empty list must contain the work's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractScope {
    /// Support levels (`1st`, `2nd`, `3rd`).
    #[serde(default)]
    pub levels: Vec<String>,
    /// Activities (`remote`, `onsite`, `travel`, …).
    #[serde(default)]
    pub activities: Vec<String>,
    /// Services (usage SKUs) of a pay-per-use contract.
    #[serde(default)]
    pub services: Vec<String>,
    /// Branches of the customer.
    #[serde(default)]
    pub branches: Vec<String>,
}

impl ContractScope {
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
            && self.activities.is_empty()
            && self.services.is_empty()
            && self.branches.is_empty()
    }

    /// Whether work with these values falls in the scope (`None` = the work has no such value).
    pub fn matches(
        &self,
        level: Option<&str>,
        activity: Option<&str>,
        service: Option<&str>,
        branch: Option<&str>,
    ) -> bool {
        let fits = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        fits(&self.levels, level)
            && fits(&self.activities, activity)
            && fits(&self.services, service)
            && fits(&self.branches, branch)
    }
}

fn default_vat() -> Decimal {
    Decimal::from(19)
}
fn default_category() -> String {
    "S".into()
}
