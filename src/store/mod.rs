//! Storage: connections, migrations and the queries every other layer uses, on SQLite (the
//! embedded default) and PostgreSQL. Query functions are free async functions over
//! `&impl ConnectionTrait`, so they run on a pool or inside the caller's transaction.
//!
//! SQLite gets one writer connection (WAL, `synchronous=FULL` by default, write transactions
//! opened IMMEDIATE) and a small pool of readers beside it; on a file, the ingest writer also has a
//! connection of its own through SQLite's C API, which takes turns with that writer ([`c_api`]).
//! PostgreSQL gets one pool for both.

pub mod alerts;
pub mod anomalies;
pub mod c_api;
pub mod entities;
pub mod executions;
pub mod ingest;
pub mod notify;
pub mod rollups;
pub mod streams;
pub mod tokens;
pub mod workers;

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    SqlxPostgresConnector, SqlxSqliteConnector, Statement, TransactionOptions, TransactionTrait,
};
use serde::Deserialize;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// The hash maps and sets the ingest path touches for every report (a batch's workers, ids,
/// rollups): foldhash, seeded at random per process, in place of SipHash, which took 15 % of the
/// planner's time. Their keys come from a batch of authenticated callers' reports.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// See [`FastMap`].
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Key of the PostgreSQL advisory lock that serializes migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x7275_6e77_6172_6401;

/// The SQLite writer's page cache unless configured (`sqlite_writer_cache_mib`).
pub const DEFAULT_WRITER_CACHE_MIB: u32 = 32;

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Commits survive a crash of the process and of the machine (power loss). The default.
    #[default]
    Full,
    /// Commits survive a crash of the process; the last ones may be lost on power loss.
    Normal,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// Reader connections beside the SQLite writer; pool size on PostgreSQL.
    pub pool_size: u32,
    pub busy_timeout: Duration,
    pub connect_timeout: Duration,
    /// Page cache of the SQLite writer connection, in MiB. The writer touches every table ingest
    /// and heartbeats update; SQLite's own default (2 MiB) makes it re-read pages the OS still
    /// holds, and the write path slows as the file grows past it. Readers keep the default.
    pub writer_cache_mib: u32,
    /// SQLite files: the ingest writer commits on a connection of its own through SQLite's C API
    /// ([`c_api`]) instead of through sqlx's writer connection.
    pub ingest_c_api: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous: Synchronous::Full,
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            writer_cache_mib: DEFAULT_WRITER_CACHE_MIB,
            ingest_c_api: true,
        }
    }
}

/// The open database: a connection for reads and one for the single writer.
#[derive(Debug, Clone)]
pub struct Store {
    read: DatabaseConnection,
    write: DatabaseConnection,
    /// This process's id in cross-replica notifications (so it ignores its own).
    replica: std::sync::Arc<str>,
    /// How to connect, on PostgreSQL: for the LISTEN connection and for pools of one's own
    /// ([`Store::own_pool`]).
    pg_connect: Option<PgConnectOptions>,
    /// How long to wait for a pooled connection.
    acquire_timeout: Duration,
    /// The ingest writer's own connection (SQLite files, unless configured off).
    c_api: Option<c_api::CApiWriter>,
    /// SQLite files only; aborted when the last clone of the store is dropped.
    _checkpointer: Option<Arc<Checkpointer>>,
}

impl Store {
    /// Opens `url` (`sqlite://…` or `postgres://…`). SQLite files are created when missing if the
    /// URL says `mode=rwc`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, DbErr> {
        if url.starts_with("sqlite:") {
            connect_sqlite(url, options).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            connect_postgres(url, options).await
        } else {
            Err(DbErr::Custom(format!(
                "unsupported database URL {url:?}: expected sqlite://PATH or postgres://USER@HOST/DB"
            )))
        }
    }

    /// Writes a consistent copy of the SQLite database to `path` (`VACUUM INTO`, which readers and
    /// the writer keep working through). Refused on PostgreSQL (use `pg_dump`) and when `path`
    /// exists.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<(), DbErr> {
        if self.backend() != DbBackend::Sqlite {
            return Err(DbErr::Custom(
                "backup writes SQLite files; back up PostgreSQL with pg_dump or your provider's snapshots".into(),
            ));
        }
        if path.exists() {
            return Err(DbErr::Custom(format!("{} already exists; choose a new file", path.display())));
        }
        let target = path.to_str().ok_or_else(|| DbErr::Custom("the backup path must be UTF-8".into()))?;
        self.read
            .execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, "VACUUM INTO ?", [target.into()]))
            .await?;
        Ok(())
    }

    /// This process's replica id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The connection options a LISTEN connection uses (PostgreSQL only).
    pub fn listen_options(&self) -> Option<&PgConnectOptions> {
        self.pg_connect.as_ref()
    }

    /// On PostgreSQL, the same database through a pool of its own of at most `connections`
    /// connections, opened when first used: for a task on a runtime of its own (the ingest
    /// writer), so that the runtime that uses a connection is the one that opened it. A tokio
    /// socket is driven by the runtime it was opened on; a connection that such a task opened
    /// into the shared pool would fail for everyone else once its runtime stopped (at shutdown,
    /// or at the end of `runwarden demo`). The caller closes it ([`Store::close`]) when done.
    /// `None` on SQLite, whose connections each run on a thread of their own. The connections
    /// show as `application_name` in `pg_stat_activity`.
    pub fn own_pool(&self, application_name: &str, connections: u32) -> Option<Store> {
        let connect = self.pg_connect.clone()?.application_name(application_name);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(connect);
        let db = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
        Some(Store { read: db.clone(), write: db, c_api: None, _checkpointer: None, ..self.clone() })
    }

    /// The ingest writer's connection through SQLite's C API, on a SQLite file.
    pub fn c_api_writer(&self) -> Option<&c_api::CApiWriter> {
        self.c_api.as_ref()
    }

    pub fn reader(&self) -> &DatabaseConnection {
        &self.read
    }

    pub fn backend(&self) -> DbBackend {
        self.write.get_database_backend()
    }

    /// Opens a write transaction: IMMEDIATE on SQLite, so the write lock is taken at BEGIN (where
    /// the busy timeout applies) rather than on the first write, which would fail as "locked".
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        self.write.begin_with_options(options).await
    }

    /// Applies pending migrations inside one write transaction. On PostgreSQL the transaction
    /// first takes an advisory lock, so replicas starting together migrate one after another.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        let txn = self.begin_write().await?;
        if self.backend() == DbBackend::Postgres {
            txn.execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
            ))
            .await?;
        }
        Migrator::up(&txn, None).await?;
        txn.commit().await
    }

    /// True when the schema is fully migrated.
    pub async fn is_migrated(&self) -> Result<bool, DbErr> {
        Ok(Migrator::get_pending_migrations(&self.read).await?.is_empty())
    }

    /// A cheap round trip on both connections, for health checks.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.read.ping().await?;
        self.write.ping().await
    }

    pub async fn close(self) {
        let _ = self.read.close().await;
        let _ = self.write.close().await;
    }
}

async fn connect_sqlite(url: &str, options: &StoreOptions) -> Result<Store, DbErr> {
    let synchronous = match options.synchronous {
        Synchronous::Full => SqliteSynchronous::Full,
        Synchronous::Normal => SqliteSynchronous::Normal,
    };
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbErr::Custom(format!("invalid SQLite URL {url:?}: {e}")))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true)
        // Statement journals (a multi-row INSERT that may fail midway keeps one) and sorts in
        // memory, not in temporary files written on every batch.
        .pragma("temp_store", "memory");
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    // A negative cache_size is in KiB. Checkpoints are the checkpointer's job (below); the writer
    // checkpoints itself only if the WAL grows past WRITER_CHECKPOINT_PAGES anyway.
    let writer_connect = connect
        .clone()
        .pragma("cache_size", format!("-{}", u64::from(options.writer_cache_mib.max(1)) * 1024))
        .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string());
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(options.connect_timeout)
        // The pool pings every connection it takes back (sqlx 0.9's `return_to_pool`), so an idle
        // connection has been pinged since its last use; a second ping here would be one more
        // round trip to SQLite's thread in every write transaction.
        .test_before_acquire(false)
        .before_acquire(|conn, _| Box::pin(writer_is_clean(conn)))
        .connect_with(writer_connect.clone())
        .await
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(format!("cannot open {url}: {e}"))))?;
    let c_api = if options.ingest_c_api && !in_memory {
        let settings = c_api::WriterSettings::from(options);
        Some(c_api::CApiWriter::open(writer_connect.get_filename(), writer.clone(), &settings)?)
    } else {
        None
    };
    let write = SqlxSqliteConnector::from_sqlx_sqlite_pool(writer);
    // An in-memory database exists once per connection: readers must share the writer's.
    let read = if in_memory {
        write.clone()
    } else {
        let readers = SqlitePoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(format!("cannot open {url}: {e}"))))?;
        SqlxSqliteConnector::from_sqlx_sqlite_pool(readers)
    };
    let checkpointer = (!in_memory).then(|| Arc::new(Checkpointer::spawn(read.clone(), write.clone())));
    Ok(Store {
        read,
        write,
        replica: new_replica_id(),
        pg_connect: None,
        acquire_timeout: options.connect_timeout,
        c_api,
        _checkpointer: checkpointer,
    })
}

/// WAL size (pages) at which the SQLite writer checkpoints by itself, inside a commit: a safety
/// net for when the checkpointer falls behind. SQLite's default is 1,000 pages, which puts a
/// checkpoint (copying pages into the database file, and an fsync) in every few commits.
pub const WRITER_CHECKPOINT_PAGES: u32 = 20_000;

/// How often the checkpointer copies committed WAL pages into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Checkpoints the SQLite WAL off the writer's commit path: passive checkpoints, which never block
/// the writer or readers, from a reader connection, and the last short pass of each round on the
/// writer's connection between two transactions (see `spawn`), so the writer's commits no longer
/// pay for checkpoints and the WAL restarts instead of growing.
/// Stops when the last clone of its [`Store`] is dropped.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    fn spawn(read: DatabaseConnection, write: DatabaseConnection) -> Checkpointer {
        Checkpointer(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let started = std::time::Instant::now();
                // The writer keeps committing while a pass copies pages, so one pass rarely
                // reaches the end of the WAL; a few more passes, each copying only what was
                // committed during the previous one, usually do. Only a WAL checkpointed to its
                // end is restarted (written again from its start) by the writer's next commit;
                // otherwise it grows to WRITER_CHECKPOINT_PAGES and the writer checkpoints it
                // inside a commit.
                //
                // Even then, the writer has usually begun its next transaction before the last
                // pass ends, and a transaction that began on an unfinished checkpoint does not
                // restart the WAL. So the last, short pass runs on the writer's own connection,
                // between two of its transactions: it copies what the final commits added, and
                // the next transaction starts on a fully checkpointed WAL. The writer waits for
                // that pass (a few ms, mostly the database file's fsync), so it runs only once the
                // WAL has grown to WRITER_PASS_FRAMES: under a steady stream of commits, once a
                // second or so instead of every round; an idle WAL is caught up by the reader.
                let mut passes = 0;
                let outcome = loop {
                    passes += 1;
                    match checkpoint_pass(&read).await {
                        Ok(Some((log, done))) if done < log && passes < MAX_CHECKPOINT_PASSES => continue,
                        Ok(Some((log, done))) if log < WRITER_PASS_FRAMES => break Ok(Some((log, done))),
                        Ok(_) => {
                            // Timed on its own: the writer waits for this pass.
                            let on_writer = std::time::Instant::now();
                            let pass = checkpoint_pass(&write).await;
                            metrics::histogram!("runwarden_sqlite_checkpoint_writer_pass_seconds")
                                .record(on_writer.elapsed().as_secs_f64());
                            break pass;
                        }
                        Err(e) => break Err(e),
                    }
                };
                match outcome {
                    Ok(progress) => {
                        if let Some((log, _)) = progress {
                            metrics::gauge!("runwarden_sqlite_wal_frames").set(log as f64);
                        }
                        let caught_up = progress.is_some_and(|(log, done)| done >= log);
                        metrics::counter!("runwarden_sqlite_checkpoints_total", "caught_up" => caught_up.to_string())
                            .increment(1);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "WAL checkpoint failed; the writer checkpoints as a fallback");
                    }
                }
                metrics::histogram!("runwarden_sqlite_checkpoint_seconds").record(started.elapsed().as_secs_f64());
            }
        }))
    }
}

/// Most checkpoint passes in one round (see [`Checkpointer`]).
const MAX_CHECKPOINT_PASSES: u32 = 8;

/// WAL size (frames, one page each) from which a checkpoint round ends with a pass on the
/// writer's connection, so that the WAL restarts (see [`Checkpointer`]): 8,192 frames of 4 KiB is
/// 32 MiB, a few hundred milliseconds of ingest at full speed.
const WRITER_PASS_FRAMES: i64 = 8_192;

/// One `PRAGMA wal_checkpoint(PASSIVE)`: the WAL's frames and how many of them are now in the
/// database file (`None` when SQLite reports -1, as when the WAL is not in use).
async fn checkpoint_pass(read: &DatabaseConnection) -> Result<Option<(i64, i64)>, DbErr> {
    let checkpoint = Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
    let Some(row) = read.query_one_raw(checkpoint).await? else {
        return Ok(None);
    };
    let log: i64 = row.try_get_by_index(1)?;
    let done: i64 = row.try_get_by_index(2)?;
    Ok((log >= 0 && done >= 0).then_some((log, done)))
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the writer connection is outside any transaction, as every write transaction must
/// start. After some failures (SQLITE_FULL, SQLITE_IOERR) SQLite rolls a transaction back by
/// itself; the ROLLBACK sqlx then sends fails and its transaction depth stays above zero, so the
/// next BEGIN would become a SAVEPOINT and its COMMIT a RELEASE inside a transaction nobody
/// commits: acknowledged but not durable. Such a connection is closed and a fresh one opened.
///
/// No round trip is needed first: a rollback queued by a dropped transaction has run by now,
/// because the pool pings each connection it takes back before it queues it as idle, and SQLite's
/// thread runs commands in order.
async fn writer_is_clean(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        metrics::counter!("runwarden_sqlite_writer_reopened_total").increment(1);
        tracing::warn!("the SQLite writer connection was left inside a transaction; reopening it");
        return Ok(false);
    }
    Ok(true)
}

async fn connect_postgres(url: &str, options: &StoreOptions) -> Result<Store, DbErr> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| DbErr::Custom(format!("invalid PostgreSQL URL: {e}")))?
        .application_name("runwarden");
    let pool = PgPoolOptions::new()
        .max_connections(options.pool_size.max(2))
        .acquire_timeout(options.connect_timeout)
        .connect_with(connect.clone())
        .await
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(format!("cannot connect to PostgreSQL: {e}"))))?;
    let db = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
    Ok(Store {
        read: db.clone(),
        write: db,
        replica: new_replica_id(),
        pg_connect: Some(connect),
        acquire_timeout: options.connect_timeout,
        c_api: None,
        _checkpointer: None,
    })
}

/// Takes the PostgreSQL advisory lock `key` for the rest of `txn`, if no other session holds it:
/// the singleton guard of the background passes (guardian tick, detector, retention). Always true
/// on SQLite, where one process owns the file.
pub async fn try_singleton_lock(txn: &DatabaseTransaction, key: i64) -> Result<bool, DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    Ok(txn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, format!("SELECT pg_try_advisory_xact_lock({key})")))
        .await?
        .and_then(|row| row.try_get_by_index::<bool>(0).ok())
        .unwrap_or(false))
}

fn new_replica_id() -> std::sync::Arc<str> {
    uuid::Uuid::new_v4().simple().to_string().into()
}

/// Microseconds since the Unix epoch, the storage form of every time.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Test support: asserts that SQLite plans `query` as index seeks only — no SCAN of a table and no
/// temporary B-tree for a sort — on `store`'s schema. For statements that run inside the write
/// transaction, where a read of a growing table holds up every writer.
#[cfg(test)]
pub(crate) async fn assert_seeks_an_index(store: &Store, query: Statement) {
    let explain = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        format!("EXPLAIN QUERY PLAN {}", query.sql),
        query.values.map(|v| v.0).unwrap_or_default(),
    );
    let rows = store.reader().query_all_raw(explain).await.expect("explain");
    let plan: Vec<String> = rows.iter().filter_map(|row| row.try_get_by::<String, _>("detail").ok()).collect();
    assert!(!plan.is_empty(), "no plan for {}", query.sql);
    // A subquery's own line (`CORRELATED SCALAR SUBQUERY 1`, `LIST SUBQUERY 2`) only names it;
    // its steps follow, and are checked like the others.
    let names_a_subquery = |step: &str| step.ends_with(|c: char| c.is_ascii_digit()) && step.contains("SUBQUERY ");
    let steps: Vec<&String> = plan.iter().filter(|step| !names_a_subquery(step)).collect();
    assert!(
        !steps.is_empty() && steps.iter().all(|step| step.starts_with("SEARCH ") && step.contains(" INDEX ")),
        "{}\nis planned as {plan:?}",
        query.sql
    );
}
