//! Master data: seller, invoice number ranges, customers and contracts, from one TOML document
//! (`drehkreuz import master-data FILE`, `PUT /api/v1/master-data`). The whole document is
//! checked first; every problem names its place (`contracts[1].contingent.overage_hourly`) and
//! nothing is written unless all of it is valid. Amounts are decimal strings (`"95.00"`), never
//! floats. Schema with a full example: `docs/master-data.md`.

use crate::store::{audit, now_ms, work, Db, Tx};
use canonical::contract::{
    ContingentTerms, ContingentUnit, Contract, ContractKind, ContractScope, Overdraft, RateCard,
    RoundingPolicy,
};
use canonical::customer::{Customer, Seller};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};

/// An invoice number range: numbers are `prefix` + `next` zero-padded to `width`, gapless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberRange {
    pub id: String,
    pub prefix: String,
    #[serde(default = "one")]
    pub next: u64,
    #[serde(default = "five")]
    pub width: u32,
}

fn one() -> u64 {
    1
}
fn five() -> u32 {
    5
}

/// The contract kinds as written in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    TimeAndMaterial,
    Contingent,
    Budget,
    FlatRate,
    ManagedService,
}

/// A contract as written in the document (kind-specific terms in their own table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractDoc {
    pub id: String,
    pub customer_id: String,
    pub kind: KindName,
    #[serde(default = "default_range")]
    pub number_range: String,
    #[serde(default)]
    pub rate_card: RateCard,
    #[serde(default)]
    pub rounding: RoundingPolicy,
    #[serde(default)]
    pub free_classifications: Vec<String>,
    #[serde(default)]
    pub free_diagnosis_minutes: u32,
    #[serde(default)]
    pub vat_rate: Option<Decimal>,
    #[serde(default)]
    pub vat_category: Option<String>,
    /// One invoice per cost centre (from the ticket's `cost_centre`); not for contingents.
    #[serde(default)]
    pub split_by_cost_centre: bool,
    /// What work the contract covers when the customer has several.
    #[serde(default, skip_serializing_if = "ContractScope::is_empty")]
    pub scope: ContractScope,
    /// The customer's default contract (work no other contract claims).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default)]
    pub contingent: Option<ContingentTerms>,
    #[serde(default)]
    pub budget: Option<BudgetDoc>,
    #[serde(default)]
    pub managed_service: Option<ManagedDoc>,
}

fn default_range() -> String {
    "RE".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetDoc {
    pub caps_minutes: BTreeMap<String, u32>,
    /// Percentages of each level's cap that trigger a notice (default 80, 100).
    #[serde(default = "default_budget_thresholds")]
    pub thresholds: Vec<u32>,
}

fn default_budget_thresholds() -> Vec<u32> {
    vec![80, 100]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedDoc {
    pub unit_prices: BTreeMap<String, Decimal>,
}

/// The master-data document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterData {
    #[serde(default)]
    pub seller: Option<Seller>,
    #[serde(default)]
    pub number_ranges: Vec<NumberRange>,
    #[serde(default)]
    pub customers: Vec<Customer>,
    #[serde(default)]
    pub contracts: Vec<ContractDoc>,
}

/// Problems found in a document, each with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid master data:\n  {}", .0.join("\n  "))]
pub struct Problems(pub Vec<String>);

impl MasterData {
    /// Parses TOML; a syntax or type error names line, column and key.
    pub fn from_toml(text: &str) -> Result<Self, Problems> {
        toml::from_str(text).map_err(|e| Problems(vec![e.to_string().trim().replace('\n', " ")]))
    }

    /// Checks the document against itself and the already stored customers/ranges.
    pub fn check(
        &self,
        known_customers: &HashSet<String>,
        known_ranges: &HashSet<String>,
    ) -> Result<Vec<Contract>, Problems> {
        let mut p = Vec::new();
        let empty = |s: &str| s.trim().is_empty();
        let mut ids = HashSet::new();
        for (i, c) in self.customers.iter().enumerate() {
            let at = format!("customers[{i}]");
            if empty(&c.id) {
                p.push(format!("{at}.id: must not be empty"));
            }
            if !ids.insert(c.id.clone()) {
                p.push(format!("{at}.id: duplicate customer id {:?}", c.id));
            }
            if empty(&c.name) {
                p.push(format!("{at}.name: must not be empty"));
            }
            if empty(&c.debitor_number) {
                p.push(format!("{at}.debitor_number: must not be empty"));
            }
            if !(10000..=69999).contains(&c.datev_account) {
                p.push(format!(
                    "{at}.datev_account: expected a DATEV debitor account 10000–69999, got {}",
                    c.datev_account
                ));
            }
            if c.address.country.len() != 2 {
                p.push(format!(
                    "{at}.address.country: expected an ISO 3166 alpha-2 code like \"DE\""
                ));
            }
            if let Some(v) = &c.vat_id {
                if v.len() < 4 || !v.chars().take(2).all(|ch| ch.is_ascii_uppercase()) {
                    p.push(format!("{at}.vat_id: expected a VAT id starting with the country code, e.g. DE123456789"));
                }
            }
            for (j, b) in c.branches.iter().enumerate() {
                if empty(&b.id) {
                    p.push(format!("{at}.branches[{j}].id: must not be empty"));
                }
            }
        }
        let mut ranges: HashSet<String> = known_ranges.clone();
        for (i, r) in self.number_ranges.iter().enumerate() {
            if empty(&r.id) {
                p.push(format!("number_ranges[{i}].id: must not be empty"));
            }
            if r.next == 0 || !(1..=12).contains(&r.width) {
                p.push(format!(
                    "number_ranges[{i}]: `next` must be ≥ 1 and `width` 1–12"
                ));
            }
            ranges.insert(r.id.clone());
        }
        let customers: HashSet<String> = known_customers.union(&ids).cloned().collect();
        let mut contracts = Vec::new();
        let mut contract_ids = HashSet::new();
        for (i, d) in self.contracts.iter().enumerate() {
            let at = format!("contracts[{i}]");
            if empty(&d.id) || !contract_ids.insert(d.id.clone()) {
                p.push(format!("{at}.id: must be a unique, non-empty id"));
            }
            if !customers.contains(&d.customer_id) {
                p.push(format!(
                    "{at}.customer_id: unknown customer {:?}",
                    d.customer_id
                ));
            }
            if !ranges.contains(&d.number_range) {
                p.push(format!("{at}.number_range: unknown number range {:?} (define it under [[number_ranges]])", d.number_range));
            }
            if d.split_by_cost_centre && d.kind == KindName::Contingent {
                p.push(format!("{at}.split_by_cost_centre: a contingent is shared; it cannot be split by cost centre"));
            }
            if d.rounding.increment_minutes == 0 {
                p.push(format!(
                    "{at}.rounding.increment_minutes: must be at least 1"
                ));
            }
            for (j, r) in d.rate_card.rates.iter().enumerate() {
                if r.hourly.is_sign_negative() {
                    p.push(format!(
                        "{at}.rate_card.rates[{j}].hourly: must not be negative"
                    ));
                }
            }
            let needs_rates = matches!(
                d.kind,
                KindName::TimeAndMaterial | KindName::Contingent | KindName::Budget
            );
            if needs_rates && d.rate_card.rates.is_empty() {
                p.push(format!(
                    "{at}.rate_card.rates: a {:?} contract needs hourly rates",
                    d.kind
                ));
            }
            let vat_rate = d.vat_rate.unwrap_or(Decimal::from(19));
            if vat_rate.is_sign_negative() || vat_rate > Decimal::from(100) {
                p.push(format!("{at}.vat_rate: expected a percentage 0–100"));
            }
            let kind = match d.kind {
                KindName::TimeAndMaterial => Some(ContractKind::TimeAndMaterial),
                KindName::FlatRate => Some(ContractKind::FlatRate),
                KindName::Contingent => match &d.contingent {
                    None => {
                        p.push(format!("{at}.contingent: required for kind \"contingent\""));
                        None
                    }
                    Some(t) => {
                        if t.allotment.is_sign_negative() || t.fee.is_sign_negative() {
                            p.push(format!(
                                "{at}.contingent: `allotment` and `fee` must not be negative"
                            ));
                        }
                        if t.overdraft == Overdraft::Bill
                            && t.unit == ContingentUnit::Minutes
                            && t.overage_hourly.is_none()
                        {
                            p.push(format!("{at}.contingent.overage_hourly: required with overdraft = \"bill\""));
                        }
                        if t.unit == ContingentUnit::Calls
                            && t.overdraft == Overdraft::Bill
                            && t.per_call_price.is_none()
                        {
                            p.push(format!("{at}.contingent.per_call_price: required for a calls contingent with overdraft = \"bill\""));
                        }
                        if t.thresholds.iter().any(|&x| x == 0 || x > 1000) {
                            p.push(format!("{at}.contingent.thresholds: percentages 1–1000"));
                        }
                        Some(ContractKind::Contingent(t.clone()))
                    }
                },
                KindName::Budget => match &d.budget {
                    None => {
                        p.push(format!("{at}.budget: required for kind \"budget\""));
                        None
                    }
                    Some(b) => {
                        if b.thresholds.iter().any(|x| *x == 0 || *x > 1000) {
                            p.push(format!("{at}.budget.thresholds: percentages 1–1000"));
                        }
                        Some(ContractKind::Budget {
                            caps_minutes: b.caps_minutes.clone(),
                            thresholds: b.thresholds.clone(),
                        })
                    }
                },
                KindName::ManagedService => match &d.managed_service {
                    None => {
                        p.push(format!(
                            "{at}.managed_service: required for kind \"managed_service\""
                        ));
                        None
                    }
                    Some(m) => Some(ContractKind::ManagedService {
                        unit_prices: m.unit_prices.clone(),
                    }),
                },
            };
            if let Some(kind) = kind {
                contracts.push(Contract {
                    id: d.id.clone(),
                    customer_id: d.customer_id.clone(),
                    kind,
                    rate_card: d.rate_card.clone(),
                    rounding: d.rounding.clone(),
                    free_classifications: d.free_classifications.clone(),
                    free_diagnosis_minutes: d.free_diagnosis_minutes,
                    vat_rate,
                    vat_category: d.vat_category.clone().unwrap_or_else(|| "S".into()),
                    split_by_cost_centre: d.split_by_cost_centre,
                    scope: d.scope.clone(),
                    is_default: d.default,
                });
            }
        }
        if p.is_empty() {
            Ok(contracts)
        } else {
            Err(Problems(p))
        }
    }
}

/// What an import changed.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    pub seller: bool,
    pub number_ranges: usize,
    pub customers: usize,
    pub contracts: usize,
}

async fn known(db: &Db) -> Result<(HashSet<String>, HashSet<String>), sqlx::Error> {
    let c: Vec<String> = sqlx::query_scalar("SELECT id FROM customers")
        .fetch_all(&db.pool)
        .await?;
    let r: Vec<String> = sqlx::query_scalar("SELECT id FROM number_ranges")
        .fetch_all(&db.pool)
        .await?;
    Ok((c.into_iter().collect(), r.into_iter().collect()))
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Invalid(#[from] Problems),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
}

/// Checks and stores a document in one transaction (audited as `master_data.import`).
pub async fn import(db: &Db, doc: &MasterData, actor: &str) -> Result<ImportSummary, ImportError> {
    let (kc, kr) = known(db).await?;
    let contracts = doc.check(&kc, &kr)?;
    let mut tx = db.begin().await?;
    if let Some(s) = &doc.seller {
        let json = serde_json::to_string(s).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query("INSERT INTO seller (id, document) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET document = excluded.document")
            .bind(json)
            .execute(&mut *tx)
            .await?;
    }
    for r in &doc.number_ranges {
        // `next` only moves forward: re-importing a file never reuses a number.
        sqlx::query(
            "INSERT INTO number_ranges (id, prefix, next, width) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, width = excluded.width, \
             next = CASE WHEN excluded.next > number_ranges.next THEN excluded.next ELSE number_ranges.next END",
        )
        .bind(&r.id)
        .bind(&r.prefix)
        .bind(r.next as i64)
        .bind(i64::from(r.width))
        .execute(&mut *tx)
        .await?;
    }
    for c in &doc.customers {
        let json = serde_json::to_value(c).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        work::upsert_customer(&mut tx, &c.id, &c.name, c.helpdesk_org_id.as_deref(), &json).await?;
    }
    for (d, c) in doc.contracts.iter().zip(&contracts) {
        upsert_contract(&mut tx, c, &d.number_range).await?;
    }
    let summary = ImportSummary {
        seller: doc.seller.is_some(),
        number_ranges: doc.number_ranges.len(),
        customers: doc.customers.len(),
        contracts: contracts.len(),
    };
    audit::record(
        &mut tx,
        &audit::AuditRecord {
            actor,
            action: "master_data.import",
            object: "master_data",
            before: None,
            after: Some(serde_json::to_value(&summary).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(summary)
}

async fn upsert_contract(
    tx: &mut Tx<'_>,
    c: &Contract,
    number_range: &str,
) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(c).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO contracts (id, customer_id, number_range, document, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, number_range = excluded.number_range, \
         document = excluded.document, updated_at = excluded.updated_at",
    )
    .bind(&c.id)
    .bind(&c.customer_id)
    .bind(number_range)
    .bind(json)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored customer.
pub async fn customer(db: &Db, id: &str) -> Result<Option<Customer>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    customer_in(&mut conn, id).await
}

/// [`customer`] on a given connection or transaction.
pub async fn customer_in(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<Customer>, sqlx::Error> {
    let doc: Option<String> = sqlx::query_scalar("SELECT document FROM customers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(doc.and_then(|d| serde_json::from_str(&d).ok()))
}

/// All stored customers (only those with complete master data).
pub async fn customers(db: &Db) -> Result<Vec<Customer>, sqlx::Error> {
    let docs: Vec<String> = sqlx::query_scalar("SELECT document FROM customers ORDER BY id")
        .fetch_all(&db.pool)
        .await?;
    Ok(docs
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect())
}

/// The contracts of a customer (or all), with their number range.
pub async fn contracts(
    db: &Db,
    customer_id: Option<&str>,
) -> Result<Vec<(Contract, String)>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    contracts_in(&mut conn, customer_id).await
}

/// [`contracts`] on a given connection or transaction.
pub async fn contracts_in(
    conn: &mut sqlx::AnyConnection,
    customer_id: Option<&str>,
) -> Result<Vec<(Contract, String)>, sqlx::Error> {
    let rows =
        match customer_id {
            Some(c) => sqlx::query(
                "SELECT document, number_range FROM contracts WHERE customer_id = $1 ORDER BY id",
            )
            .bind(c)
            .fetch_all(&mut *conn)
            .await?,
            None => {
                sqlx::query("SELECT document, number_range FROM contracts ORDER BY customer_id, id")
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let d: String = r.try_get("document")?;
        let c: Contract = serde_json::from_str(&d).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        out.push((c, r.try_get("number_range")?));
    }
    Ok(out)
}

/// The seller, if configured.
pub async fn seller(db: &Db) -> Result<Option<Seller>, sqlx::Error> {
    let doc: Option<String> = sqlx::query_scalar("SELECT document FROM seller WHERE id = 1")
        .fetch_optional(&db.pool)
        .await?;
    Ok(doc.and_then(|d| serde_json::from_str(&d).ok()))
}

impl ContractDoc {
    /// The document form of a stored contract.
    pub fn from_contract(c: &Contract, number_range: &str) -> Self {
        let (kind, contingent, budget, managed_service) = match &c.kind {
            ContractKind::TimeAndMaterial => (KindName::TimeAndMaterial, None, None, None),
            ContractKind::FlatRate => (KindName::FlatRate, None, None, None),
            ContractKind::Contingent(t) => (KindName::Contingent, Some(t.clone()), None, None),
            ContractKind::Budget {
                caps_minutes,
                thresholds,
            } => (
                KindName::Budget,
                None,
                Some(BudgetDoc {
                    caps_minutes: caps_minutes.clone(),
                    thresholds: thresholds.clone(),
                }),
                None,
            ),
            ContractKind::ManagedService { unit_prices } => (
                KindName::ManagedService,
                None,
                None,
                Some(ManagedDoc {
                    unit_prices: unit_prices.clone(),
                }),
            ),
        };
        Self {
            id: c.id.clone(),
            customer_id: c.customer_id.clone(),
            kind,
            number_range: number_range.to_string(),
            rate_card: c.rate_card.clone(),
            rounding: c.rounding.clone(),
            free_classifications: c.free_classifications.clone(),
            free_diagnosis_minutes: c.free_diagnosis_minutes,
            vat_rate: Some(c.vat_rate),
            vat_category: Some(c.vat_category.clone()),
            split_by_cost_centre: c.split_by_cost_centre,
            scope: c.scope.clone(),
            default: c.is_default,
            contingent,
            budget,
            managed_service,
        }
    }
}

/// The stored master data as one document (the same schema the import reads).
pub async fn export(db: &Db) -> Result<MasterData, sqlx::Error> {
    let rows = sqlx::query("SELECT id, prefix, next, width FROM number_ranges ORDER BY id")
        .fetch_all(&db.pool)
        .await?;
    let mut number_ranges = Vec::with_capacity(rows.len());
    for r in rows {
        number_ranges.push(NumberRange {
            id: r.try_get("id")?,
            prefix: r.try_get("prefix")?,
            next: r.try_get::<i64, _>("next")?.max(1) as u64,
            width: r.try_get::<i64, _>("width")?.clamp(1, 12) as u32,
        });
    }
    Ok(MasterData {
        seller: seller(db).await?,
        number_ranges,
        customers: customers(db).await?,
        contracts: contracts(db, None)
            .await?
            .iter()
            .map(|(c, r)| ContractDoc::from_contract(c, r))
            .collect(),
    })
}
