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

impl Db {
    /// Connects (creating the SQLite file and its directory if needed). Does not migrate.
    pub async fn connect(url: &SecretString, max_connections: u32) -> anyhow::Result<Self> {
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
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; busy_timeout makes writers
                        // wait for each other instead of failing at once.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 30000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot connect to the {} database: {e}", backend.name())
            })?;
        Ok(Self { pool, backend })
    }

    /// Connects and applies the migrations.
    pub async fn open(url: &SecretString, max_connections: u32) -> anyhow::Result<Self> {
        let db = Self::connect(url, max_connections).await?;
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

    /// `SELECT 1` — for `/readyz`.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// ` FOR UPDATE SKIP LOCKED` on PostgreSQL (competing workers), nothing on SQLite (one writer).
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

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
