//! The scheduler's ledger: which schedules exist since when, and which due time was claimed by
//! which process. The primary key `(schedule, due_at)` makes every due time run exactly once,
//! however many hub processes share the database.

use super::{now_ms, Db};

/// Registers a schedule (idempotent) and returns when it was first registered: catch-up after
/// downtime never reaches back before that moment.
pub async fn register(db: &Db, name: &str, cron: &str, timezone: &str) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO schedules (name, cron, timezone, registered_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone",
    )
    .bind(name)
    .bind(cron)
    .bind(timezone)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    let at: i64 = sqlx::query_scalar("SELECT registered_at FROM schedules WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(at)
}

/// Claims one due time for this process; `false` if another process (or an earlier start of
/// this one) already has it.
pub async fn claim(db: &Db, name: &str, due_at: i64, instance: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO schedule_runs (schedule, due_at, claimed_by, claimed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (schedule, due_at) DO NOTHING",
    )
    .bind(name)
    .bind(due_at)
    .bind(instance)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records how a claimed run ended.
pub async fn finish(
    db: &Db,
    name: &str,
    due_at: i64,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE schedule_runs SET finished_at = $1, error = $2 WHERE schedule = $3 AND due_at = $4",
    )
    .bind(now_ms())
    .bind(error)
    .bind(name)
    .bind(due_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// How many runs of a schedule were claimed (tests, diagnostics).
pub async fn run_count(db: &Db, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM schedule_runs WHERE schedule = $1")
        .bind(name)
        .fetch_one(&db.pool)
        .await
}
