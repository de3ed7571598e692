//! The ingest writer's SQLite transactions on SQLite's C API (rusqlite), beside sqlx.
//!
//! sqlx runs each SQLite connection on a thread of its own and sends it every statement over a
//! channel: a round trip between threads per statement, about 0.1 ms of CPU here, and a unary
//! ingest batch makes nine. On a SQLite file the ingest writer therefore keeps a second write
//! connection of its own, on which its thread runs the statements itself ([`CApiTxn`]); the
//! statements are the same sea-query ones, through [`ConnectionTrait`], so the ingest code is one
//! for both connections and for PostgreSQL.
//!
//! **One writer at a time.** SQLite lets one connection write at once; a second one waiting for
//! the lock sleeps in its busy handler and can miss the gaps between back-to-back ingest
//! transactions for seconds. So a transaction here first takes the sqlx writer pool's only
//! connection and holds it, unused, until it ends: every other writer (heartbeats, the guardian,
//! alert delivery, retention, admin, the checkpointer's pass on the writer) queues for that
//! connection as it always did, in the order it asked, and the two connections never contend for
//! SQLite's lock. Other processes on the same file still meet the busy timeout, as before.
//!
//! **Durability.** BEGIN IMMEDIATE and COMMIT are this module's own calls, whose errors reach the
//! caller: a transaction is acknowledged only if its COMMIT returned success. One dropped
//! without a commit is rolled back; one SQLite ended by itself (after SQLITE_FULL, SQLITE_IOERR)
//! makes the COMMIT fail, and the next BEGIN first rolls back anything still open.
//!
//! **Rows.** sea-orm decodes rows by the Rust type of each field, strictly (an `i32` field only
//! from a 32-bit integer value), while SQLite stores one INTEGER type. Each result column that
//! comes from a table column is typed as its entity declares it ([`column_types`], from the
//! entities themselves); a computed column gets SQLite's own type. sea-orm 2.0.4 builds its
//! `QueryResult` and `ExecResult` from values only through its mock database (its `proxy`
//! feature, meant for this, does not compile beside `sqlx-sqlite` in that release), so
//! [`results`] and [`exec_result`] hand the values to a `MockDatabase` made for the one call.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use rusqlite::{
    ToSql,
    types::{ToSqlOutput, ValueRef},
};
use sea_orm::{
    ColumnTrait, ColumnType, ConnectionTrait, DbBackend, DbErr, EntityTrait, ExecResult, IdenStatic, Iterable,
    MockDatabase, MockDatabaseTrait, MockExecResult, QueryResult, RuntimeErr, Statement, Value,
};
use sqlx::{Sqlite, SqlitePool, pool::PoolConnection};

use super::{StoreOptions, Synchronous, WRITER_CHECKPOINT_PAGES, entities};

/// Prepared statements kept per connection: the ingest writer's statements differ by their row
/// counts (one INSERT per chunk size), and re-preparing one costs more than running it.
const STATEMENT_CACHE: usize = 128;

/// The ingest writer's own connection to a SQLite file, and the gate it shares with sqlx's writer.
#[derive(Debug, Clone)]
pub struct CApiWriter {
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// The sqlx writer pool (one connection): held for the life of each transaction.
    gate: SqlitePool,
}

/// The settings the writer connection gets, as the sqlx writer gets them.
pub struct WriterSettings {
    pub busy_timeout: std::time::Duration,
    /// `FULL` or `NORMAL`.
    pub synchronous: &'static str,
    pub cache_kib: u64,
    pub checkpoint_pages: u32,
}

impl From<&StoreOptions> for WriterSettings {
    fn from(options: &StoreOptions) -> WriterSettings {
        WriterSettings {
            busy_timeout: options.busy_timeout,
            synchronous: match options.synchronous {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
            cache_kib: u64::from(options.writer_cache_mib.max(1)) * 1024,
            checkpoint_pages: WRITER_CHECKPOINT_PAGES,
        }
    }
}

/// A connection to the SQLite file at `path` with the writer's settings (also the benchmark's
/// bare baseline).
pub fn open_connection(path: &Path, settings: &WriterSettings) -> Result<rusqlite::Connection, DbErr> {
    let conn =
        rusqlite::Connection::open(path).map_err(|e| conn_err(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(settings.busy_timeout).map_err(|e| conn_err(e.to_string()))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let cache = format!("-{}", settings.cache_kib);
    let pages = settings.checkpoint_pages.to_string();
    for (pragma, value) in [
        ("journal_mode", "WAL"),
        ("synchronous", settings.synchronous),
        ("foreign_keys", "ON"),
        ("temp_store", "MEMORY"),
        ("cache_size", cache.as_str()),
        ("wal_autocheckpoint", pages.as_str()),
    ] {
        conn.pragma_update(None, pragma, value).map_err(|e| conn_err(format!("PRAGMA {pragma}={value}: {e}")))?;
    }
    Ok(conn)
}

impl CApiWriter {
    /// Opens `path`, which sqlx has opened (and migrated or created) already.
    pub fn open(path: &Path, gate: SqlitePool, settings: &WriterSettings) -> Result<CApiWriter, DbErr> {
        Ok(CApiWriter { conn: Arc::new(Mutex::new(open_connection(path, settings)?)), gate })
    }

    /// Begins an IMMEDIATE transaction, once every other writer of this process is out of the way
    /// (see the module's documentation).
    pub async fn begin(&self) -> Result<CApiTxn, DbErr> {
        let gate = self.gate.acquire().await.map_err(|e| conn_err(format!("the SQLite writer is unavailable: {e}")))?;
        let mut txn = CApiTxn { conn: self.conn.clone(), open: false, _gate: gate };
        {
            let conn = txn.lock()?;
            if !conn.is_autocommit() {
                metrics::counter!("runwarden_sqlite_ingest_stale_transaction_total").increment(1);
                tracing::warn!("the SQLite ingest connection was left inside a transaction; rolling it back");
                conn.execute_batch("ROLLBACK").map_err(exec_err)?;
            }
            conn.execute_batch("BEGIN IMMEDIATE").map_err(exec_err)?;
        }
        txn.open = true;
        Ok(txn)
    }
}

/// A write transaction on [`CApiWriter`]'s connection: statements run on the calling thread.
/// Rolled back when dropped without [`CApiTxn::commit`].
#[derive(Debug)]
pub struct CApiTxn {
    conn: Arc<Mutex<rusqlite::Connection>>,
    open: bool,
    /// The sqlx writer's connection, held so that no other writer of this process begins.
    /// Declared last: dropped after `drop` has rolled back.
    _gate: PoolConnection<Sqlite>,
}

impl CApiTxn {
    /// Commits; `Ok` only if SQLite reports the transaction durable.
    pub fn commit(mut self) -> Result<(), DbErr> {
        self.open = false;
        let conn = self.lock()?;
        match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                // A COMMIT that failed may leave the transaction open (SQLITE_BUSY) or ended.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(exec_err(e))
            }
        }
    }

    /// Rolls back everything the transaction wrote.
    pub fn rollback(mut self) -> Result<(), DbErr> {
        self.open = false;
        let conn = self.lock()?;
        if conn.is_autocommit() {
            return Ok(());
        }
        conn.execute_batch("ROLLBACK").map_err(exec_err)
    }

    /// SQLite's `PRAGMA data_version` on this connection. Two readings differ if another
    /// connection (of this process or another) committed in between; this connection's own
    /// commits leave it as it is.
    pub fn data_version(&self) -> Result<i64, DbErr> {
        let conn = self.lock()?;
        let mut statement = conn.prepare_cached("PRAGMA data_version").map_err(query_err)?;
        statement.query_row([], |row| row.get(0)).map_err(query_err)
    }

    fn lock(&self) -> Result<MutexGuard<'_, rusqlite::Connection>, DbErr> {
        self.conn.lock().map_err(|_| conn_err("the SQLite ingest connection's lock is poisoned".into()))
    }

    fn execute(&self, statement: &Statement) -> Result<ExecResult, DbErr> {
        let conn = self.lock()?;
        let mut prepared = prepare(&conn, statement)?;
        let rows_affected = prepared.raw_execute().map_err(exec_err)? as u64;
        let last_insert_id = u64::try_from(conn.last_insert_rowid()).unwrap_or_default();
        exec_result(last_insert_id, rows_affected)
    }

    fn query(&self, statement: &Statement, limit: Option<usize>) -> Result<Vec<QueryResult>, DbErr> {
        let conn = self.lock()?;
        let mut prepared = prepare(&conn, statement)?;
        let types = column_types();
        let columns: Vec<(String, String, Option<&ColumnType>)> = prepared
            .columns_with_metadata()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let declared = c.table_name().zip(c.origin_name()).and_then(|(t, o)| types.get(t)?.get(o));
                (c.name().to_owned(), position_key(i), declared)
            })
            .collect();
        let mut rows = prepared.raw_query();
        let mut results = Vec::new();
        while limit.is_none_or(|n| results.len() < n)
            && let Some(row) = rows.next().map_err(query_err)?
        {
            let mut values = BTreeMap::new();
            for (i, (name, position, declared)) in columns.iter().enumerate() {
                let raw = row.get_ref(i).map_err(query_err)?;
                let value = typed(raw, *declared).map_err(|rule| query_err(format!("column {name}: {rule}")))?;
                // sea-orm reads a mock row's columns by name and, for tuples, by position in key
                // order: each value is kept under a key that sorts by position before any name.
                values.insert(position.clone(), value.clone());
                values.insert(name.clone(), value);
            }
            results.push(values);
        }
        drop(rows);
        drop(prepared);
        drop(conn);
        self::results(results)
    }
}

impl Drop for CApiTxn {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match self.conn.lock() {
            Ok(conn) if !conn.is_autocommit() => {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::warn!(error = %e, "cannot roll back an abandoned ingest transaction; the next one will");
                }
            }
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for CApiTxn {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Sqlite
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        self.execute(&statement)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let conn = self.lock()?;
        conn.execute_batch(sql).map_err(exec_err)?;
        exec_result(0, conn.changes())
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        Ok(self.query(&statement, Some(1))?.into_iter().next())
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.query(&statement, None)
    }
}

/// Rows of values as sea-orm's query results.
fn results(rows: Vec<BTreeMap<String, Value>>) -> Result<Vec<QueryResult>, DbErr> {
    MockDatabase::new(DbBackend::Sqlite)
        .append_query_results([rows])
        .query(0, Statement::from_string(DbBackend::Sqlite, ""))
}

/// What a statement did as sea-orm's execution result.
fn exec_result(last_insert_id: u64, rows_affected: u64) -> Result<ExecResult, DbErr> {
    MockDatabase::new(DbBackend::Sqlite)
        .append_exec_results([MockExecResult { last_insert_id, rows_affected }])
        .execute(0, Statement::from_string(DbBackend::Sqlite, ""))
}

/// `statement` prepared (from the connection's cache) with its values bound.
fn prepare<'c>(conn: &'c rusqlite::Connection, statement: &Statement) -> Result<rusqlite::CachedStatement<'c>, DbErr> {
    let mut prepared = conn.prepare_cached(&statement.sql).map_err(exec_err)?;
    for (i, value) in statement.values.iter().flat_map(|v| v.0.iter()).enumerate() {
        prepared.raw_bind_parameter(i + 1, Bound(value)).map_err(exec_err)?;
    }
    Ok(prepared)
}

/// A statement value as SQLite binds it, by reference (a stored report is not copied again).
struct Bound<'a>(&'a Value);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
        let value = match self.0 {
            Value::Bool(v) => int(v.map(i64::from)),
            Value::TinyInt(v) => int(v.map(i64::from)),
            Value::SmallInt(v) => int(v.map(i64::from)),
            Value::Int(v) => int(v.map(i64::from)),
            Value::BigInt(v) => int(*v),
            Value::TinyUnsigned(v) => int(v.map(i64::from)),
            Value::SmallUnsigned(v) => int(v.map(i64::from)),
            Value::Unsigned(v) => int(v.map(i64::from)),
            Value::BigUnsigned(Some(v)) => ValueRef::Integer(i64::try_from(*v).map_err(|_| {
                rusqlite::Error::ToSqlConversionFailure(format!("{v} does not fit SQLite's 64-bit integer").into())
            })?),
            Value::BigUnsigned(None) => ValueRef::Null,
            Value::Float(v) => v.map_or(ValueRef::Null, |f| ValueRef::Real(f64::from(f))),
            Value::Double(v) => v.map_or(ValueRef::Null, ValueRef::Real),
            Value::String(v) => v.as_deref().map_or(ValueRef::Null, |s| ValueRef::Text(s.as_bytes())),
            Value::Char(v) => {
                return Ok(v.map_or(ToSqlOutput::Borrowed(ValueRef::Null), |c| ToSqlOutput::from(c.to_string())));
            }
            Value::Bytes(v) => v.as_deref().map_or(ValueRef::Null, ValueRef::Blob),
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("the SQLite ingest connection binds no {other:?}").into(),
                ));
            }
        };
        Ok(ToSqlOutput::Borrowed(value))
    }
}

/// A result value typed as its column is declared (`None`: a computed column, SQLite's type).
/// The error names the rule the stored value breaks.
fn typed(raw: ValueRef<'_>, declared: Option<&ColumnType>) -> Result<Value, String> {
    let integer = |raw: ValueRef<'_>| match raw {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i)),
        other => Err(format!("expected an INTEGER, found {:?}", other.data_type())),
    };
    let narrow = |i: Option<i64>, bits: &str| format!("{} does not fit {bits}", i.unwrap_or_default());
    let text = |raw: ValueRef<'_>| match raw {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => String::from_utf8(t.to_vec()).map(Some).map_err(|_| "TEXT that is not UTF-8".to_owned()),
        other => Err(format!("expected TEXT, found {:?}", other.data_type())),
    };
    let real = |raw: ValueRef<'_>| match raw {
        ValueRef::Null => Ok(None),
        ValueRef::Real(f) => Ok(Some(f)),
        ValueRef::Integer(i) => Ok(Some(i as f64)),
        other => Err(format!("expected a REAL, found {:?}", other.data_type())),
    };
    let blob = |raw: ValueRef<'_>| match raw {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => Ok(Some(b.to_vec())),
        other => Err(format!("expected a BLOB, found {:?}", other.data_type())),
    };
    Ok(match declared {
        Some(ColumnType::BigInteger) => Value::BigInt(integer(raw)?),
        Some(ColumnType::Integer) => {
            let i = integer(raw)?;
            Value::Int(i.map(i32::try_from).transpose().map_err(|_| narrow(i, "32 bits"))?)
        }
        Some(ColumnType::SmallInteger) => {
            let i = integer(raw)?;
            Value::SmallInt(i.map(i16::try_from).transpose().map_err(|_| narrow(i, "16 bits"))?)
        }
        Some(ColumnType::TinyInteger) => {
            let i = integer(raw)?;
            Value::TinyInt(i.map(i8::try_from).transpose().map_err(|_| narrow(i, "8 bits"))?)
        }
        Some(ColumnType::Boolean) => Value::Bool(integer(raw)?.map(|i| i != 0)),
        Some(ColumnType::Double | ColumnType::Decimal(_)) => Value::Double(real(raw)?),
        Some(ColumnType::Float) => Value::Float(real(raw)?.map(|f| f as f32)),
        Some(ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_)) => Value::String(text(raw)?),
        Some(ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob) => Value::Bytes(blob(raw)?),
        Some(other) => return Err(format!("columns of type {other:?} are not read on this connection")),
        None => match raw {
            ValueRef::Null => Value::BigInt(None),
            ValueRef::Integer(i) => Value::BigInt(Some(i)),
            ValueRef::Real(f) => Value::Double(Some(f)),
            ValueRef::Text(_) => Value::String(text(raw)?),
            ValueRef::Blob(b) => Value::Bytes(Some(b.to_vec())),
        },
    })
}

/// The key of a row's `i`th value by position: `\0` and the position, zero-padded, sorts before
/// every column name and in order.
fn position_key(i: usize) -> String {
    format!("\0{i:05}")
}

/// Every table's columns and the type its entity declares, by table and column name.
fn column_types() -> &'static HashMap<&'static str, HashMap<&'static str, ColumnType>> {
    static TYPES: OnceLock<HashMap<&'static str, HashMap<&'static str, ColumnType>>> = OnceLock::new();
    TYPES.get_or_init(|| {
        fn of<E: EntityTrait + Default>(types: &mut HashMap<&'static str, HashMap<&'static str, ColumnType>>) {
            let columns = E::Column::iter().map(|c| (c.as_str(), c.def().get_column_type().clone())).collect();
            types.insert(E::default().table_name(), columns);
        }
        use entities::*;
        let mut types = HashMap::new();
        of::<alert_attempts::Entity>(&mut types);
        of::<alert_outbox::Entity>(&mut types);
        of::<alert_rules::Entity>(&mut types);
        of::<alert_sends::Entity>(&mut types);
        of::<anomalies::Entity>(&mut types);
        of::<api_tokens::Entity>(&mut types);
        of::<executions::Entity>(&mut types);
        of::<guardian_snapshots::Entity>(&mut types);
        of::<streams::Entity>(&mut types);
        of::<worker_rollups::Entity>(&mut types);
        of::<workers::Entity>(&mut types);
        types
    })
}

fn conn_err(message: String) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(message))
}

fn exec_err(e: impl std::fmt::Display) -> DbErr {
    DbErr::Exec(RuntimeErr::Internal(e.to_string()))
}

fn query_err(e: impl std::fmt::Display) -> DbErr {
    DbErr::Query(RuntimeErr::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};

    use super::CApiTxn;
    use crate::domain::anomaly::{AnomalyKind, Evidence, Finding, Severity};
    use crate::store::{
        Store, StoreOptions,
        anomalies::{self, NewAnomaly},
        entities::workers,
    };

    async fn file_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("c_api.db").display());
        let store = Store::connect(&url, &StoreOptions::default()).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    async fn begin(store: &Store) -> CApiTxn {
        store.c_api_writer().expect("a SQLite file has the C API writer").begin().await.expect("begin")
    }

    fn worker(name: &str) -> workers::ActiveModel {
        workers::ActiveModel {
            worker_name: Set(name.to_owned()),
            worker_type: Set("etl".to_owned()),
            first_seen_us: Set(1),
            last_seen_us: Set(2),
            last_outcome: Set(3),
            run_count: Set(4),
            runs_today_day: Set(Some(20_000)),
            recent_runs: Set(None),
            paused: Set(true),
            ..Default::default()
        }
    }

    /// A row written and read on the C API connection is the row sqlx reads after the commit:
    /// every column typed as the entity declares it (i32, i64, f64, bool, NULLs, text).
    #[tokio::test]
    async fn rows_read_on_the_c_api_are_the_rows_sqlx_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = file_store(&dir).await;
        let txn = begin(&store).await;
        let inserted = worker("alpha").insert(&txn).await.expect("insert");
        assert!(inserted.id > 0);
        let on_c_api = workers::Entity::find().all(&txn).await.expect("select on the C API");
        txn.commit().expect("commit");
        let on_sqlx = workers::Entity::find().all(store.reader()).await.expect("select through sqlx");
        assert_eq!(on_c_api, on_sqlx);
        assert_eq!(on_c_api, vec![inserted]);
    }

    /// Tuples are read by position: `open_kinds` selects (worker_id, kind), whose names sort the
    /// other way round.
    #[tokio::test]
    async fn tuples_are_read_by_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = file_store(&dir).await;
        let txn = begin(&store).await;
        let id = worker("beta").insert(&txn).await.expect("insert").id;
        let finding = Finding {
            kind: AnomalyKind::MissedRun,
            severity: Severity::Warning,
            evidence: Evidence {
                value: 1.0,
                baseline_median: None,
                mad: None,
                threshold: 1.0,
                window: 1,
                detail: "no run".to_owned(),
            },
        };
        let anomaly = NewAnomaly { worker_id: id, finding, opened_at_us: 10, resolved_at_us: None, execution_id: None };
        anomalies::insert(&txn, &[anomaly]).await.expect("insert anomaly");
        let kind = AnomalyKind::MissedRun.as_str().to_owned();
        assert_eq!(anomalies::open_kinds(&txn, &[id]).await.expect("open kinds"), vec![(id, kind)]);
    }

    /// A transaction dropped without a commit leaves nothing.
    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = file_store(&dir).await;
        let txn = begin(&store).await;
        worker("gamma").insert(&txn).await.expect("insert");
        drop(txn);
        assert!(workers::Entity::find().all(store.reader()).await.expect("select").is_empty());
        // And the connection is usable again.
        let txn = begin(&store).await;
        worker("gamma").insert(&txn).await.expect("insert again");
        txn.commit().expect("commit");
        assert_eq!(workers::Entity::find().all(store.reader()).await.expect("select").len(), 1);
    }

    /// While a C API transaction is open, sqlx's writers wait for it (rather than for SQLite's
    /// busy handler), and go on once it commits.
    #[tokio::test]
    async fn other_writers_wait_for_the_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = file_store(&dir).await;
        let txn = begin(&store).await;
        worker("delta").insert(&txn).await.expect("insert");
        let blocked = tokio::time::timeout(Duration::from_millis(300), store.begin_write()).await;
        assert!(blocked.is_err(), "a sqlx write transaction began beside an open C API transaction");
        txn.commit().expect("commit");
        let other = store.begin_write().await.expect("begins once the C API transaction ended");
        worker("epsilon").insert(&other).await.expect("insert through sqlx");
        other.commit().await.expect("commit through sqlx");
        assert_eq!(workers::Entity::find().all(store.reader()).await.expect("select").len(), 2);
    }

    /// `data_version` stays as it is across this connection's own commits and changes when
    /// another connection commits: what the ingest writer's memory of its own rows rests on.
    #[tokio::test]
    async fn data_version_changes_only_with_other_connections_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = file_store(&dir).await;
        let txn = begin(&store).await;
        let first = txn.data_version().expect("data_version");
        worker("zeta").insert(&txn).await.expect("insert");
        txn.commit().expect("commit");
        let txn = begin(&store).await;
        assert_eq!(txn.data_version().expect("data_version"), first, "after this connection's own commit");
        txn.rollback().expect("rollback");

        let other = store.begin_write().await.expect("begin through sqlx");
        worker("eta").insert(&other).await.expect("insert through sqlx");
        other.commit().await.expect("commit through sqlx");
        let txn = begin(&store).await;
        assert_ne!(txn.data_version().expect("data_version"), first, "after sqlx's connection committed");
    }

    /// In-memory databases exist per connection: they keep sqlx's writer for ingest.
    #[tokio::test]
    async fn in_memory_stores_have_no_c_api_writer() {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.expect("open");
        assert!(store.c_api_writer().is_none());
        let off = StoreOptions { ingest_c_api: false, ..StoreOptions::default() };
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("off.db").display());
        assert!(Store::connect(&url, &off).await.expect("open").c_api_writer().is_none());
    }
}
