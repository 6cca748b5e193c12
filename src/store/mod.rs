//! The store: one SQL database reached through sqlx, SQLite (embedded) or PostgreSQL (scaled).
//!
//! Both backends get the same schema semantics from their own migration set
//! (`migrations/sqlite`, `migrations/postgres`), applied at start and by `drehkreuz migrate`.
//! Queries are written once in the SQL both dialects share (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`); the few places that differ ask [`Db::backend`]. Instants are stored as
//! milliseconds since the Unix epoch (UTC), amounts as decimal strings, documents as JSON text.

pub mod audit;
pub mod deadletter;
pub mod inbox;
pub mod outbox;
pub mod review;
pub mod schedule;
pub mod settlement;
pub mod tokens;
pub mod work;

use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// A transaction on either backend.
pub type Tx<'a> = Transaction<'a, Any>;

/// Which SQL database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The connection pool with its backend.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Pool limits that make the store fail fast instead of hanging when it is unreachable.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    pub max_connections: u32,
    /// Longest wait for a pooled connection (including connecting) before `PoolTimedOut`.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` (zero: no limit).
    pub statement_timeout: Duration,
    /// SQLite `busy_timeout`: how long a writer waits for the write lock.
    pub busy_timeout: Duration,
}

impl DbOptions {
    /// The defaults of `[database]` with this pool size.
    pub fn with_max(max_connections: u32) -> Self {
        Self {
            max_connections,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// The `[database]` settings.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            max_connections: cfg.database.max_connections,
            acquire_timeout: Duration::from_millis(cfg.database.acquire_timeout_ms.max(1)),
            statement_timeout: Duration::from_millis(cfg.database.statement_timeout_ms),
            busy_timeout: Duration::from_millis(cfg.database.busy_timeout_ms),
        }
    }
}

/// How long the first connection of a process is retried (start-up, not requests).
pub const CONNECT_AT_START: std::time::Duration = std::time::Duration::from_secs(30);

impl Db {
    /// Connects (creating the SQLite file and its directory if needed). Does not migrate.
    pub async fn connect(url: &SecretString, max_connections: u32) -> anyhow::Result<Self> {
        Self::connect_with(url, DbOptions::with_max(max_connections)).await
    }

    /// [`Db::connect`] with explicit pool limits.
    pub async fn connect_with(url: &SecretString, opts: DbOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = url.expose_secret();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_path(url) {
                if let Some(dir) = std::path::Path::new(&path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            anyhow::anyhow!("cannot create data directory {}: {e}", dir.display())
                        })?;
                    }
                }
            }
        }
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("invalid database url: {e}"))?;
        let pool_options = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let busy_ms = opts.busy_timeout.as_millis();
                let statement_ms = opts.statement_timeout.as_millis();
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; busy_timeout makes writers
                        // wait for each other instead of failing at once.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    } else {
                        // A statement stuck behind a lock or a dying server fails instead of
                        // holding the connection (and the request) for ever.
                        sqlx::query(&format!("SET statement_timeout = {statement_ms}"))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        // At start-up the first connection may take longer than a request may wait (a server
        // still starting, a loaded machine): it is retried up to `CONNECT_AT_START`; requests
        // later wait at most `acquire_timeout`.
        let started = std::time::Instant::now();
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(e) if started.elapsed() < CONNECT_AT_START => {
                    tracing::warn!(error = %e, "database not reachable yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot connect to the {} database: {e}",
                        backend.name()
                    ))
                }
            }
        };
        Ok(Self { pool, backend })
    }

    /// Connects and applies the migrations.
    pub async fn open(url: &SecretString, max_connections: u32) -> anyhow::Result<Self> {
        Self::open_with(url, DbOptions::with_max(max_connections)).await
    }

    /// [`Db::open`] with explicit pool limits.
    pub async fn open_with(url: &SecretString, opts: DbOptions) -> anyhow::Result<Self> {
        let db = Self::connect_with(url, opts).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the pending migrations of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await.map_err(|e| {
            anyhow::anyhow!("migrating the {} database failed: {e}", self.backend.name())
        })
    }

    /// Starts a transaction that writes. On SQLite the first statement of a write transaction
    /// should be a write, so that it takes the write lock at once (see module docs of callers).
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Starts a transaction that reads before it writes: on SQLite `BEGIN IMMEDIATE`, so the write
    /// lock is taken (waiting up to the busy timeout) before the first read, instead of failing
    /// with "database is locked" when a read lock cannot be upgraded; on PostgreSQL a plain
    /// transaction (row locks and constraints serialize writers there).
    pub async fn begin_write(&self) -> Result<Tx<'static>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Starts a transaction whose commit need not wait for the disk (PostgreSQL
    /// `synchronous_commit = off`; SQLite in WAL mode with `synchronous = NORMAL` behaves so
    /// anyway). Only for bookkeeping whose loss in a crash is harmless, like the relay's
    /// leases and sent marks: a lost mark only republishes a row, and the inbox drops it.
    pub async fn begin_relaxed(&self) -> Result<Tx<'static>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// `SELECT 1` — for `/readyz`; bounded by [`PING_TIMEOUT`], so an unreachable store
    /// answers `false` quickly instead of waiting out the pool's acquire timeout.
    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// ` FOR UPDATE SKIP LOCKED` on PostgreSQL (competing workers), nothing on SQLite (one writer).
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// The bound of the `/readyz` store probe.
pub const PING_TIMEOUT: Duration = Duration::from_millis(1_000);

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(path.to_string())
    }
}

/// Milliseconds since the Unix epoch, the store's representation of an instant.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Converts a stored instant back.
pub fn from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Whether a database error is worth retrying (lock contention, lost connection, serialization).
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = db.message().to_ascii_lowercase();
            // PostgreSQL: serialization failure, deadlock, connection errors (class 08), too many
            // connections; SQLite: busy / locked.
            code == "40001"
                || code == "40P01"
                || code.starts_with("08")
                || code == "53300"
                || code == "5"
                || code == "6"
                || msg.contains("database is locked")
                || msg.contains("busy")
        }
        _ => false,
    }
}
