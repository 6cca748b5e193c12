//! Billing and master-data API: invoice runs (role `accounting`), master data (`admin`),
//! customers and their contingents (`viewer:<customer>` for their own, `admin`/`accounting`
//! for all). Every change is audited by the functions it calls.

use super::problem::Problem;
use super::AppState;
use crate::access::{Caller, Permission};
use crate::billing::run::{self, RunError};
use crate::billing::WriteOffTarget;
use crate::masterdata::{self, MasterData};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_master_data, get_master_data))
        .routes(routes!(get_customer))
        .routes(routes!(get_contingents))
        .routes(routes!(get_budgets))
        .routes(routes!(get_service_reports))
        .routes(routes!(create_run))
        .routes(routes!(get_run))
        .routes(routes!(write_off))
        .routes(routes!(approve))
        .routes(routes!(finalize))
        .routes(routes!(release))
        .routes(routes!(get_invoice))
        .routes(routes!(credit_note))
}

fn run_problem(e: RunError) -> Problem {
    match e {
        RunError::NotFound(what) => Problem::not_found(format!("no {what}")),
        e @ RunError::WrongState { .. } => Problem::conflict(e.to_string()),
        RunError::Invalid(m) => Problem::unprocessable("", m),
        RunError::Store(e) => Problem::unavailable(format!("store: {e}")),
    }
}

fn store(e: sqlx::Error) -> Problem {
    Problem::unavailable(format!("store: {e}"))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::unprocessable("", format!("invalid JSON body: {e}")))
}

/// Replaces/extends master data from one document (JSON form of the TOML schema).
#[utoipa::path(put, path = "/api/v1/master-data", tag = "master data",
    request_body(content = Object, description = "The master-data document (docs/master-data.md) as JSON", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Imported", body = masterdata::ImportSummary),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid; `detail` lists every place and reason; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn put_master_data(
    caller: Caller,
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Json<masterdata::ImportSummary>, Problem> {
    caller.require(Permission::Admin)?;
    let doc: MasterData = json_body(&body)?;
    masterdata::import(&st.db, &doc, &caller.actor())
        .await
        .map(Json)
        .map_err(|e| match e {
            masterdata::ImportError::Invalid(p) => Problem::unprocessable(
                p.0.first()
                    .map(|s| s.split(':').next().unwrap_or(""))
                    .unwrap_or(""),
                p.to_string(),
            ),
            masterdata::ImportError::Store(e) => store(e),
        })
}

/// The stored master data as one document (the schema `PUT` accepts).
#[utoipa::path(get, path = "/api/v1/master-data", tag = "master data", security(("bearer" = [])),
    responses(
        (status = 200, description = "The master-data document", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn get_master_data(
    caller: Caller,
    State(st): State<AppState>,
) -> Result<Json<MasterData>, Problem> {
    caller.require(Permission::Admin)?;
    masterdata::export(&st.db).await.map(Json).map_err(store)
}

/// One customer's master data.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "master data",
    params(("id" = String, Path, description = "Customer id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The customer", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json")))]
async fn get_customer(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<canonical::customer::Customer>, Problem> {
    caller.require(Permission::ViewCustomer(&id))?;
    masterdata::customer(&st.db, &id)
        .await
        .map_err(store)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no customer {id}")))
}

/// A contingent as it stands now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContingentNow {
    pub contract_id: String,
    pub period: String,
    /// `minutes`, `money` or `calls`.
    pub unit: String,
    pub opening: String,
    pub allotment: String,
    pub consumption: String,
    /// Opening + allotment − consumption.
    pub balance: String,
    pub thresholds: Vec<u32>,
    /// Thresholds crossed in this period so far.
    pub crossed: Vec<u32>,
}

/// The contracts of a customer that exists (404 problem otherwise).
async fn contracts_of(
    st: &AppState,
    id: &str,
) -> Result<Vec<(canonical::contract::Contract, String)>, Problem> {
    if masterdata::customer(&st.db, id)
        .await
        .map_err(store)?
        .is_none()
    {
        return Err(Problem::not_found(format!("no customer {id}")));
    }
    masterdata::contracts(&st.db, Some(id)).await.map_err(store)
}

/// A customer's contingents now: balance, consumption and thresholds of the current period.
#[utoipa::path(get, path = "/api/v1/customers/{id}/contingents", tag = "billing",
    params(("id" = String, Path, description = "Customer id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Contingents", body = Vec<ContingentNow>),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn get_contingents(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ContingentNow>>, Problem> {
    caller.require(Permission::ViewCustomer(&id))?;
    let period = canonical::work::Period::of(chrono::Utc::now());
    let mut out = Vec::new();
    for (c, _) in contracts_of(&st, &id).await? {
        let canonical::contract::ContractKind::Contingent(t) = &c.kind else {
            continue;
        };
        let rating = run::rate_contract(&st.db, &c, period, &[])
            .await
            .map_err(store)?;
        let Ok(r) = rating else { continue };
        if let Some(s) = r.contingent {
            out.push(ContingentNow {
                contract_id: c.id.clone(),
                period: period.to_string(),
                unit: format!("{:?}", s.unit).to_lowercase(),
                opening: s.opening.to_string(),
                allotment: s.allotment.to_string(),
                consumption: s.consumption.to_string(),
                balance: (s.opening + s.allotment - s.consumption).to_string(),
                thresholds: t.thresholds.clone(),
                crossed: r.crossings.iter().map(|x| x.percent).collect(),
            });
        }
    }
    Ok(Json(out))
}

/// A budget contract as it stands now, per level.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetNow {
    pub contract_id: String,
    pub period: String,
    /// Percentages of each level's cap that trigger a notice.
    pub thresholds: Vec<u32>,
    /// Per capped level: cap, used, remaining, held beyond the cap, thresholds crossed.
    pub levels: Vec<crate::billing::budget::BudgetLevel>,
}

/// A customer's budgets now: per level the cap, what is used, what is left and what is held
/// beyond the cap in the current period (the sibling of `contingents`).
#[utoipa::path(get, path = "/api/v1/customers/{id}/budgets", tag = "billing",
    params(("id" = String, Path, description = "Customer id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Budgets", body = Vec<BudgetNow>),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn get_budgets(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<BudgetNow>>, Problem> {
    caller.require(Permission::ViewCustomer(&id))?;
    let period = canonical::work::Period::of(chrono::Utc::now());
    let mut out = Vec::new();
    for (c, _) in contracts_of(&st, &id).await? {
        let canonical::contract::ContractKind::Budget {
            caps_minutes,
            thresholds,
        } = &c.kind
        else {
            continue;
        };
        let rating = run::rate_contract(&st.db, &c, period, &[])
            .await
            .map_err(store)?;
        let Ok(r) = rating else { continue };
        let (levels, _) = crate::billing::budget::status(&r, caps_minutes, thresholds);
        out.push(BudgetNow {
            contract_id: c.id.clone(),
            period: period.to_string(),
            thresholds: thresholds.clone(),
            levels,
        });
    }
    Ok(Json(out))
}

/// The customer's service reports of finalized runs ("you see what we see").
#[utoipa::path(get, path = "/api/v1/customers/{id}/service-reports", tag = "billing",
    params(("id" = String, Path, description = "Customer id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Service reports, oldest first", body = Vec<Object>),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed for this customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn get_service_reports(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::billing::report::ServiceReport>>, Problem> {
    caller.require(Permission::ViewCustomer(&id))?;
    let docs: Vec<String> = sqlx::query_scalar(
        "SELECT t.document FROM invoice_run_targets t JOIN invoice_runs r ON r.id = t.run_id \
         WHERE t.customer_id = $1 AND r.state = 'finalized' ORDER BY r.finalized_at, t.seq",
    )
    .bind(&id)
    .fetch_all(&st.db.pool)
    .await
    .map_err(store)?;
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let t: run::Target = serde_json::from_str(&d)
            .map_err(|e| Problem::internal(format!("stored run target unreadable: {e}")))?;
        out.push(t.report);
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RunRequest {
    /// `YYYY-MM`.
    pub period: String,
    pub customer: Option<String>,
}

/// Creates or recomputes the preview run of a period.
#[utoipa::path(post, path = "/api/v1/invoice-runs", tag = "billing",
    request_body = RunRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "The preview run", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An approved run of the period waits for finalization", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json")))]
async fn create_run(
    caller: Caller,
    State(st): State<AppState>,
    body: Bytes,
) -> Result<Json<run::InvoiceRun>, Problem> {
    caller.require(Permission::Accounting)?;
    let req: RunRequest = json_body(&body)?;
    let period: canonical::work::Period = req
        .period
        .parse()
        .map_err(|e: canonical::work::Invalid| Problem::unprocessable("/period", e.to_string()))?;
    run::preview(&st.db, period, req.customer.as_deref(), &caller.actor())
        .await
        .map(Json)
        .map_err(run_problem)
}

/// A run with its targets, ratings and service reports.
#[utoipa::path(get, path = "/api/v1/invoice-runs/{id}", tag = "billing",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The run", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json")))]
async fn get_run(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<run::InvoiceRun>, Problem> {
    caller.require(Permission::Accounting)?;
    run::load(&st.db, &id).await.map(Json).map_err(run_problem)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WriteOffRequest {
    /// An entry id, or
    pub entry: Option<String>,
    /// a line key.
    pub line: Option<String>,
    pub reason: String,
}

/// Writes off an entry or a line of a preview run (reason mandatory).
#[utoipa::path(post, path = "/api/v1/invoice-runs/{id}/write-offs", tag = "billing",
    params(("id" = String, Path)), request_body = WriteOffRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "The recomputed run", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a preview", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or unknown entry/line", body = Problem, content_type = "application/problem+json")))]
async fn write_off(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<run::InvoiceRun>, Problem> {
    caller.require(Permission::Accounting)?;
    let req: WriteOffRequest = json_body(&body)?;
    let target = match (req.entry, req.line) {
        (Some(e), None) => WriteOffTarget::Entry(e),
        (None, Some(l)) => WriteOffTarget::Line(l),
        _ => {
            return Err(Problem::unprocessable(
                "/entry",
                "give exactly one of `entry` or `line`",
            ))
        }
    };
    run::adjust(&st.db, &id, target, &req.reason, &caller.actor())
        .await
        .map(Json)
        .map_err(run_problem)
}

/// Freezes a preview run.
#[utoipa::path(post, path = "/api/v1/invoice-runs/{id}/approve", tag = "billing",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "Approved", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a preview", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The run has problems", body = Problem, content_type = "application/problem+json")))]
async fn approve(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<run::InvoiceRun>, Problem> {
    caller.require(Permission::Accounting)?;
    run::approve(&st.db, &id, &caller.actor())
        .await
        .map(Json)
        .map_err(run_problem)
}

/// Numbers, stores and publishes the invoices of an approved run (idempotent).
#[utoipa::path(post, path = "/api/v1/invoice-runs/{id}/finalize", tag = "billing",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "Finalized", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not approved", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Master data missing", body = Problem, content_type = "application/problem+json")))]
async fn finalize(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<run::InvoiceRun>, Problem> {
    caller.require(Permission::Accounting)?;
    let r = run::finalize(&st.db, &id, &caller.actor())
        .await
        .map_err(run_problem)?;
    st.relay_wakeup.notify_one();
    Ok(Json(r))
}

/// A finalized invoice or credit note.
#[utoipa::path(get, path = "/api/v1/invoices/{number}", tag = "billing",
    params(("number" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The invoice", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invoice", body = Problem, content_type = "application/problem+json")))]
async fn get_invoice(
    caller: Caller,
    State(st): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<canonical::invoice::Invoice>, Problem> {
    caller.require(Permission::Accounting)?;
    run::invoice(&st.db, &number)
        .await
        .map_err(store)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no invoice {number}")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreditRequest {
    pub reason: String,
    /// Lines to credit (1-based); empty or absent = all.
    #[serde(default)]
    pub lines: Vec<usize>,
    /// A correction ("Storno mit Neuberechnung"): the credited lines' work is billed again.
    #[serde(default)]
    pub rebill: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReleaseRequest {
    /// The time entry whose held work is released.
    pub entry: String,
}

/// Releases held work (beyond a budget cap, overdraft `hold`) of a finalized run's entry: the
/// next run of its period bills it. Audited.
#[utoipa::path(post, path = "/api/v1/invoice-runs/{id}/release", tag = "billing",
    params(("id" = String, Path)), request_body = ReleaseRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "The released item", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The entry has no held work in the run", body = Problem, content_type = "application/problem+json")))]
async fn release(
    caller: Caller,
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.require(Permission::Accounting)?;
    let req: ReleaseRequest = json_body(&body)?;
    let item = run::release(&st.db, &id, &req.entry, &caller.actor())
        .await
        .map_err(run_problem)?;
    Ok(Json(serde_json::json!({ "released": item })))
}

/// Issues a credit note for an invoice (once).
#[utoipa::path(post, path = "/api/v1/invoices/{number}/credit-notes", tag = "billing",
    params(("number" = String, Path)), request_body = CreditRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "The credit note", body = Object),
        (status = 401, description = "Missing or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not accounting", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invoice", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, already credited, or a credit note", body = Problem, content_type = "application/problem+json")))]
async fn credit_note(
    caller: Caller,
    State(st): State<AppState>,
    Path(number): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<canonical::invoice::Invoice>), Problem> {
    caller.require(Permission::Accounting)?;
    let req: CreditRequest = json_body(&body)?;
    let note = run::credit_lines(
        &st.db,
        &number,
        &req.lines,
        req.rebill,
        &req.reason,
        &caller.actor(),
    )
    .await
    .map_err(run_problem)?;
    st.relay_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(note)))
}
