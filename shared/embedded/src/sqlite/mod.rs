//! SQLite as the warehouse and the run-log store.
//!
//! # Layout
//! - `mod.rs`: [`SqliteWarehouse`]: the database files, one connection, attaching datasets.
//! - `load/`: the [`Warehouse`](conveyor_core::ports::Warehouse) port: load jobs (by role:
//!   job, input, batch, table).
//! - `run_log.rs`: the [`RunLog`](conveyor_core::ports::RunLog) port.
//! - `rows.rs`: the [`RowSink`](conveyor_core::ports::RowSink) port: message rows, once per
//!   batch id.

mod googlesql;
mod load;
mod rows;
mod run_log;
mod sql;

pub use sql::SqliteSqlEngine;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use crate::LocalStore;
use crate::formats::ColumnType;
use conveyor_core::names::TableRef;
use conveyor_core::ports::{ObjectStore, PortError};

/// SQLite databases under one directory: one file per dataset (`analytics.sqlite`), attached
/// under the dataset's name so tables are addressed as `dataset.table`, as in BigQuery. Load
/// jobs are recorded in their dataset's file (`_conveyor_load_jobs`) in the same transaction
/// as their rows, so a load happens exactly once per job id and never half.
#[derive(Clone)]
pub struct SqliteWarehouse {
    dir: PathBuf,
    /// An async lock: callers wait for the connection without holding a blocking thread, so
    /// the one holding it (a streaming load reads its files through the runtime) always
    /// finds a thread free.
    conn: Arc<tokio::sync::Mutex<Db>>,
    store: Arc<dyn ObjectStore>,
    /// The same store when it is a [`LocalStore`]: loads read its files on their own thread.
    local: Option<LocalStore>,
    /// Run-log rows waiting for the connection (written together: group commit).
    log_queue: Arc<std::sync::Mutex<Vec<run_log::Queued>>>,
}

struct Db {
    conn: Connection,
    attached: HashSet<String>,
    /// Run-log tables created (or checked) on this connection; one is forgotten when a write
    /// to it fails, so the next write checks it again.
    run_logs: HashSet<String>,
}

fn transient(e: impl std::fmt::Display) -> PortError {
    PortError::transient(format!("sqlite: {e}"))
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl SqliteWarehouse {
    /// A warehouse in `dir` (created when missing) that reads load sources from `store`.
    ///
    /// # Errors
    /// When the directory or the jobs database cannot be created.
    pub fn open(dir: impl Into<PathBuf>, store: Arc<dyn ObjectStore>) -> Result<Self, PortError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(transient)?;
        let conn = Connection::open(dir.join("_jobs.sqlite")).map_err(transient)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(transient)?;
        wal(&conn, "main")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS load_jobs (
                job_id TEXT PRIMARY KEY, destination TEXT NOT NULL, source TEXT NOT NULL,
                rows INTEGER NOT NULL, finished_at TEXT NOT NULL)",
        )
        .map_err(transient)?;
        // The statements a load or a run-log row runs are prepared once per connection.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            dir,
            conn: Arc::new(tokio::sync::Mutex::new(Db {
                conn,
                attached: HashSet::new(),
                run_logs: HashSet::new(),
            })),
            store,
            local: None,
            log_queue: Arc::default(),
        })
    }

    /// A warehouse in `dir` that reads load sources from the local `store`: a load reads
    /// each file on the load's own thread (as [`LocalStore::open_blocking`] does), not
    /// through the async runtime.
    ///
    /// # Errors
    /// As [`SqliteWarehouse::open`].
    pub fn open_local(dir: impl Into<PathBuf>, store: LocalStore) -> Result<Self, PortError> {
        let mut warehouse = Self::open(dir, Arc::new(store.clone()))?;
        warehouse.local = Some(store);
        Ok(warehouse)
    }

    /// The directory holding the database files.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db, &std::path::Path) -> Result<T, PortError> + Send + 'static,
    ) -> Result<T, PortError> {
        let mut db = self.conn.clone().lock_owned().await;
        let dir = self.dir.clone();
        // A panic in `f` drops the guard and any open transaction (SQLite rolls it back), so
        // the connection stays consistent.
        tokio::task::spawn_blocking(move || f(&mut db, &dir))
            .await
            .map_err(transient)?
    }
}

fn attach(db: &mut Db, dir: &std::path::Path, dataset: &str) -> Result<(), PortError> {
    if db.attached.contains(dataset) {
        return Ok(());
    }
    // `main` and `temp` are SQLite's own: attaching one fails every time, so it is permanent
    // (`conveyor validate` refuses them where the file names them; this catches a name made
    // from a placeholder).
    if let Some(why) = conveyor_core::names::reserved_dataset(dataset) {
        return Err(PortError::permanent(why));
    }
    let path = dir.join(format!("{dataset}.sqlite"));
    // The dataset name passed TableRef's parser ([A-Za-z0-9_]+), so quoting it is safe.
    db.conn
        .execute(
            &format!("ATTACH DATABASE ?1 AS \"{dataset}\""),
            params![path.to_string_lossy()],
        )
        .map_err(transient)?;
    wal(&db.conn, dataset)?;
    db.attached.insert(dataset.to_owned());
    Ok(())
}

/// Write-ahead logging with `synchronous=NORMAL` for database `schema`: a commit appends to
/// the log without waiting for the disk (a checkpoint syncs it), so each load and run-log row
/// costs no fsync; a crash of the process loses nothing committed, a power cut at most the
/// last commits, never half of one. (A transaction spanning two database files is not
/// atomic in this mode, which is why a load job's record lives in its dataset's file.)
fn wal(conn: &Connection, schema: &str) -> Result<(), PortError> {
    conn.execute_batch(&format!(
        "PRAGMA \"{schema}\".journal_mode = WAL; PRAGMA \"{schema}\".synchronous = NORMAL;"
    ))
    .map_err(transient)
}

fn quoted(t: &TableRef) -> String {
    format!("\"{}\".\"{}\"", t.dataset, t.table)
}

fn sql_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::String | ColumnType::Json => "TEXT",
        ColumnType::Int64 => "INTEGER",
        ColumnType::Float64 => "REAL",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Bytes => "BLOB",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
    }
}

fn table_columns(conn: &Connection, t: &TableRef) -> Result<Option<Vec<String>>, PortError> {
    // The schema is the table-valued pragma's second argument: a `schema.` prefix on the
    // function is ignored, and the same table name in another dataset would answer.
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1, ?2)")
        .map_err(transient)?;
    let cols: Vec<String> = stmt
        .query_map(params![t.table, t.dataset], |r| r.get(0))
        .map_err(transient)?
        .collect::<Result<_, _>>()
        .map_err(transient)?;
    Ok(if cols.is_empty() { None } else { Some(cols) })
}

/// At most `limit` rows of `table`, each column as text (NULL as no entry).
/// The first `limit` rows of a read-only query on every dataset of the warehouse, each
/// column as text. A query SQLite refuses (a syntax error, a missing table) is permanent.
fn select(
    db: &mut Db,
    dir: &std::path::Path,
    sql: &str,
    limit: usize,
) -> Result<Vec<std::collections::BTreeMap<String, String>>, PortError> {
    sql::attach_all(db, dir)?;
    let sql = sql::sqlite_dialect(sql);
    let refused = |e: rusqlite::Error| PortError::permanent(format!("query refused: {e}"));
    let mut stmt = db.conn.prepare(&sql).map_err(refused)?;
    if !stmt.readonly() {
        return Err(PortError::permanent(
            "the query would write: a condition must only read",
        ));
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt.query([]).map_err(refused)?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(r) = rows.next().map_err(refused)? else {
            break;
        };
        out.push(row_as_text(r, &columns).map_err(refused)?);
    }
    Ok(out)
}

/// A row's cells as text, by column name (`columns` in the row's order); NULL as no entry.
fn row_as_text(
    r: &rusqlite::Row<'_>,
    columns: &[String],
) -> rusqlite::Result<std::collections::BTreeMap<String, String>> {
    let mut row = std::collections::BTreeMap::new();
    for (i, name) in columns.iter().enumerate() {
        let text = match r.get(i)? {
            rusqlite::types::Value::Null => continue,
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Real(f) => f.to_string(),
            rusqlite::types::Value::Text(t) => t,
            rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        };
        row.insert(name.clone(), text);
    }
    Ok(row)
}

fn read_table(
    db: &mut Db,
    dir: &std::path::Path,
    table: &TableRef,
    limit: usize,
) -> Result<Vec<std::collections::BTreeMap<String, String>>, PortError> {
    attach(db, dir, &table.dataset)?;
    // The table's SQLite name (a table whose name differs only in case has another).
    let (name, exists) = load::sqlite_name(&db.conn, table)?;
    if !exists {
        return Err(PortError::not_found(format!("table {table}")));
    }
    let table = &TableRef {
        project: None,
        dataset: table.dataset.clone(),
        table: name,
    };
    let Some(columns) = table_columns(&db.conn, table)? else {
        return Err(PortError::not_found(format!("table {table}")));
    };
    let sql = format!("SELECT * FROM {} LIMIT {limit}", quoted(table));
    let mut stmt = db.conn.prepare(&sql).map_err(transient)?;
    let rows = stmt
        .query_map([], |r| row_as_text(r, &columns))
        .map_err(transient)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(transient)
}
