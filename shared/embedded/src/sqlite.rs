//! SQLite as the warehouse and the run-log store.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params, types::Value as Sql};
use tokio::io::AsyncReadExt;

use crate::formats::{self, ColumnType, DecodeOptions, FormatError, Rows, Value};
use conveyor_core::config::{CreateDisposition, SchemaSpec, WriteDisposition};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{
    LoadJob, LoadOutcome, ObjectStore, PortError, RUN_LOG_COLUMNS, RunLog, RunLogRow, Warehouse,
};

/// SQLite databases under one directory: one file per dataset (`analytics.sqlite`), attached
/// under the dataset's name so tables are addressed as `dataset.table`, as in BigQuery. Load
/// jobs are recorded in `_jobs.sqlite` in the same transaction as their rows, so a load
/// happens exactly once per job id and never half.
#[derive(Clone)]
pub struct SqliteWarehouse {
    dir: PathBuf,
    conn: Arc<Mutex<Db>>,
    store: Arc<dyn ObjectStore>,
}

struct Db {
    conn: Connection,
    attached: HashSet<String>,
}

fn transient(e: impl std::fmt::Display) -> PortError {
    PortError::Transient(format!("sqlite: {e}"))
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
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS load_jobs (
                job_id TEXT PRIMARY KEY, destination TEXT NOT NULL, source TEXT NOT NULL,
                rows INTEGER NOT NULL, finished_at TEXT NOT NULL)",
        )
        .map_err(transient)?;
        Ok(Self {
            dir,
            conn: Arc::new(Mutex::new(Db {
                conn,
                attached: HashSet::new(),
            })),
            store,
        })
    }

    /// The directory holding the database files.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db, &std::path::Path) -> Result<T, PortError> + Send + 'static,
    ) -> Result<T, PortError> {
        let conn = self.conn.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another load panicked mid-way; SQLite rolled that
            // transaction back, so the connection is still consistent.
            let mut db = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut db, &dir)
        })
        .await
        .map_err(transient)?
    }
}

fn attach(db: &mut Db, dir: &std::path::Path, dataset: &str) -> Result<(), PortError> {
    if db.attached.contains(dataset) {
        return Ok(());
    }
    let path = dir.join(format!("{dataset}.sqlite"));
    // The dataset name passed TableRef's parser ([A-Za-z0-9_]+), so quoting it is safe.
    db.conn
        .execute(
            &format!("ATTACH DATABASE ?1 AS \"{dataset}\""),
            params![path.to_string_lossy()],
        )
        .map_err(transient)?;
    db.attached.insert(dataset.to_owned());
    Ok(())
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
    let mut stmt = conn
        .prepare(&format!(
            "SELECT name FROM \"{}\".pragma_table_info(?1)",
            t.dataset
        ))
        .map_err(transient)?;
    let cols: Vec<String> = stmt
        .query_map(params![t.table], |r| r.get(0))
        .map_err(transient)?
        .collect::<Result<_, _>>()
        .map_err(transient)?;
    Ok(if cols.is_empty() { None } else { Some(cols) })
}

fn load_rows(
    db: &mut Db,
    dir: &std::path::Path,
    job: &LoadJob,
    rows: Rows,
) -> Result<LoadOutcome, PortError> {
    attach(db, dir, &job.table.dataset)?;
    let tx = db.conn.transaction().map_err(transient)?;
    let done: Option<i64> = tx
        .query_row(
            "SELECT rows FROM load_jobs WHERE job_id = ?1",
            params![job.job_id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(transient)?;
    if let Some(n) = done {
        return Ok(LoadOutcome {
            rows: n.max(0) as u64,
            already_done: true,
        });
    }
    let table = quoted(&job.table);
    match table_columns(&tx, &job.table)? {
        None => {
            if job.create == CreateDisposition::CreateNever {
                return Err(PortError::Permanent(format!(
                    "table {} does not exist and create_disposition is CREATE_NEVER",
                    job.table
                )));
            }
            let cols: Vec<String> = rows
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "\"{}\" {}{}",
                        c.name.replace('"', "\"\""),
                        sql_type(c.ty),
                        if c.nullable { "" } else { " NOT NULL" }
                    )
                })
                .collect();
            tx.execute_batch(&format!("CREATE TABLE {table} ({})", cols.join(", ")))
                .map_err(transient)?;
            if let Some(field) = job.partition.as_ref().and_then(|p| p.field.as_ref())
                && rows.columns.iter().any(|c| &c.name == field)
            {
                // SQLite has no partitions; an index on the partition column serves the same queries.
                let index = format!(
                    "\"{}\".\"{}__partition\"",
                    job.table.dataset, job.table.table
                );
                tx.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS {index} ON \"{}\" (\"{}\")",
                    job.table.table,
                    field.replace('"', "\"\"")
                ))
                .map_err(transient)?;
            }
        }
        Some(existing) => {
            let incoming: Vec<String> = rows.columns.iter().map(|c| c.name.clone()).collect();
            if existing != incoming {
                return Err(PortError::Permanent(format!(
                    "the file's columns {incoming:?} do not match table {}'s columns {existing:?}",
                    job.table
                )));
            }
            match job.write {
                WriteDisposition::WriteAppend => {}
                WriteDisposition::WriteTruncate => {
                    tx.execute_batch(&format!("DELETE FROM {table}"))
                        .map_err(transient)?;
                }
                WriteDisposition::WriteEmpty => {
                    let n: i64 = tx
                        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                        .map_err(transient)?;
                    if n > 0 {
                        return Err(PortError::Permanent(format!(
                            "table {} is not empty and write_disposition is WRITE_EMPTY",
                            job.table
                        )));
                    }
                }
            }
        }
    }
    let placeholders = vec!["?"; rows.columns.len()].join(", ");
    {
        let mut stmt = tx
            .prepare(&format!("INSERT INTO {table} VALUES ({placeholders})"))
            .map_err(transient)?;
        for row in &rows.rows {
            let values: Vec<Sql> = row
                .iter()
                .map(|v| match v {
                    Value::Null => Sql::Null,
                    Value::Int(i) => Sql::Integer(*i),
                    Value::Float(f) => Sql::Real(*f),
                    Value::Bool(b) => Sql::Integer(i64::from(*b)),
                    Value::Text(s) => Sql::Text(s.clone()),
                    Value::Bytes(b) => Sql::Blob(b.clone()),
                })
                .collect();
            stmt.execute(rusqlite::params_from_iter(values))
                .map_err(|e| PortError::Permanent(format!("insert into {}: {e}", job.table)))?;
        }
    }
    let n = rows.rows.len() as i64;
    tx.execute(
        "INSERT INTO load_jobs (job_id, destination, source, rows, finished_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![job.job_id.as_str(), job.table.to_string(), job.source.uri(), n, ts(&Utc::now())],
    )
    .map_err(transient)?;
    tx.commit().map_err(transient)?;
    Ok(LoadOutcome {
        rows: n as u64,
        already_done: false,
    })
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    async fn load(&self, job: &LoadJob) -> Result<LoadOutcome, PortError> {
        // A cheap look first spares reading and decoding the file on a redelivery; the check
        // inside the load's transaction is the one that guarantees once.
        let job_id = job.job_id.clone();
        let done = self
            .with_db(move |db, _| {
                db.conn
                    .query_row(
                        "SELECT rows FROM load_jobs WHERE job_id = ?1",
                        params![job_id.as_str()],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                    .map_err(transient)
            })
            .await?;
        if let Some(n) = done {
            return Ok(LoadOutcome {
                rows: n.max(0) as u64,
                already_done: true,
            });
        }
        let mut reader = match self.store.open(&job.source.bucket, &job.source.name).await {
            Ok(r) => r,
            Err(PortError::NotFound(_)) => {
                return Err(PortError::Permanent(format!(
                    "{} does not exist",
                    job.source.uri()
                )));
            }
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| PortError::Transient(format!("read {}: {e}", job.source.uri())))?;
        let options = DecodeOptions {
            schema: match &job.schema {
                SchemaSpec::Autodetect => None,
                SchemaSpec::Columns(c) => Some(c.clone()),
            },
            skip_leading_rows: job.skip_leading_rows,
        };
        let format = job.format;
        let rows = tokio::task::spawn_blocking(move || formats::decode(format, &bytes, &options))
            .await
            .map_err(transient)?
            .map_err(|e| match e {
                FormatError::BadRows(bad) => PortError::BadRows(bad),
                other => PortError::Permanent(other.to_string()),
            })?;
        let job = job.clone();
        self.with_db(move |db, dir| load_rows(db, dir, &job, rows))
            .await
    }

    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| {
            attach(db, dir, &table.dataset)?;
            if table_columns(&db.conn, &table)?.is_none() {
                return Err(PortError::NotFound(format!("table {table}")));
            }
            let n: i64 = db
                .conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM {}", quoted(&table)),
                    [],
                    |r| r.get(0),
                )
                .map_err(transient)?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}

fn ensure_run_log(db: &mut Db, dir: &std::path::Path, table: &TableRef) -> Result<(), PortError> {
    attach(db, dir, &table.dataset)?;
    let cols: Vec<String> = RUN_LOG_COLUMNS
        .iter()
        .map(|c| {
            let ty = match c.ty {
                "INT64" => "INTEGER",
                "TIMESTAMP" => "TIMESTAMP",
                _ => "TEXT",
            };
            // The event id keys the table: a redelivered event writes no second row.
            let constraint = match (c.name, c.required) {
                ("event_id", _) => " PRIMARY KEY",
                (_, true) => " NOT NULL",
                _ => "",
            };
            format!("\"{}\" {ty}{constraint}", c.name)
        })
        .collect();
    db.conn
        .execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quoted(table),
            cols.join(", ")
        ))
        .map_err(transient)
}

const SELECT_RUN_LOG: &str = "dbName, tableName, td_timestamp, last_modified_at, environment, status, dataproc_job_id, \
     event_id, run_id, pipeline, step, attempt, source_object, job_id, error, started_at, finished_at, rows_loaded, detail";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunLogRow> {
    Ok(RunLogRow {
        db_name: r.get(0)?,
        table_name: r.get(1)?,
        td_timestamp: parse_ts(r.get(2)?).unwrap_or_default(),
        last_modified_at: parse_ts(r.get(3)?).unwrap_or_default(),
        environment: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        status: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        dataproc_job_id: r.get(6)?,
        event_id: r.get(7)?,
        run_id: r.get(8)?,
        pipeline: r.get(9)?,
        step: r.get(10)?,
        attempt: r.get::<_, i64>(11)?.clamp(0, i64::from(u32::MAX)) as u32,
        source_object: r.get(12)?,
        job_id: r.get(13)?,
        error: r.get(14)?,
        started_at: parse_ts(r.get(15)?),
        finished_at: parse_ts(r.get(16)?),
        rows_loaded: r.get::<_, Option<i64>>(17)?.map(|n| n.max(0) as u64),
        detail: r.get::<_, Option<String>>(18)?.unwrap_or_default(),
    })
}

#[async_trait]
impl RunLog for SqliteWarehouse {
    async fn record(&self, table: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
        let table = table.clone();
        let row = row.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            db.conn
                .execute(
                    &format!("INSERT OR IGNORE INTO {} ({SELECT_RUN_LOG}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)", quoted(&table)),
                    params![
                        row.db_name,
                        row.table_name,
                        ts(&row.td_timestamp),
                        ts(&row.last_modified_at),
                        row.environment,
                        row.status,
                        row.dataproc_job_id,
                        row.event_id,
                        row.run_id,
                        row.pipeline,
                        row.step,
                        row.attempt,
                        row.source_object,
                        row.job_id,
                        row.error,
                        row.started_at.as_ref().map(ts),
                        row.finished_at.as_ref().map(ts),
                        row.rows_loaded.map(|n| n as i64),
                        row.detail,
                    ],
                )
                .map_err(transient)?;
            Ok(())
        })
        .await
    }

    async fn recent(&self, table: &TableRef, limit: usize) -> Result<Vec<RunLogRow>, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            let sql = format!(
                "SELECT {SELECT_RUN_LOG} FROM {} ORDER BY td_timestamp DESC, rowid DESC LIMIT ?1",
                quoted(&table)
            );
            let mut stmt = db.conn.prepare(&sql).map_err(transient)?;
            let rows = stmt
                .query_map(params![limit as i64], read_row)
                .map_err(transient)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(transient)
        })
        .await
    }

    async fn open_batches(&self, table: &TableRef) -> Result<Vec<RunLogRow>, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            // The newest batch row of each run: highest attempt, then furthest status.
            let sql = format!(
                "SELECT {SELECT_RUN_LOG} FROM (
                   SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY attempt DESC,
                     CASE status WHEN 'SUBMITTED' THEN 1 WHEN 'RUNNING' THEN 2 ELSE 3 END DESC,
                     td_timestamp DESC) AS rn
                   FROM {} WHERE dataproc_job_id IS NOT NULL)
                 WHERE rn = 1 AND (status IN ('SUBMITTED', 'RUNNING')
                   OR (status = 'FAILED' AND json_extract(detail, '$.retry_at') IS NOT NULL))
                 ORDER BY td_timestamp",
                quoted(&table)
            );
            let mut stmt = db.conn.prepare(&sql).map_err(transient)?;
            let rows = stmt.query_map([], read_row).map_err(transient)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(transient)
        })
        .await
    }
}
