//! Load jobs: decode a file and insert its rows, exactly once per job id.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, params, types::Value as Sql};
use tokio::io::AsyncReadExt;

use conveyor_core::config::{CreateDisposition, SchemaSpec, WriteDisposition};
use conveyor_core::names::{JobId, TableRef};
use conveyor_core::ports::{LoadJob, LoadState, LoadStatus, PortError, Warehouse};

use super::{Db, SqliteWarehouse, attach, quoted, sql_type, table_columns, transient, ts};
use crate::formats::{self, DecodeOptions, FormatError, Rows, Value};

fn load_rows(
    db: &mut Db,
    dir: &std::path::Path,
    job: &LoadJob,
    rows: Rows,
) -> Result<LoadStatus, PortError> {
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
        return Ok(done_status(n, true));
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
        params![job.job_id.as_str(), job.table.to_string(), job.source_uris().join(" "), n, ts(&Utc::now())],
    )
    .map_err(transient)?;
    tx.commit().map_err(transient)?;
    Ok(done_status(n, false))
}

fn done_status(rows: i64, adopted: bool) -> LoadStatus {
    LoadStatus {
        state: LoadState::Done {
            rows: rows.max(0) as u64,
        },
        adopted,
    }
}

impl SqliteWarehouse {
    /// The rows of the load job `job_id` when it has run.
    async fn finished_load(
        &self,
        job_id: &conveyor_core::names::JobId,
    ) -> Result<Option<i64>, PortError> {
        let job_id = job_id.clone();
        self.with_db(move |db, _| {
            db.conn
                .query_row(
                    "SELECT rows FROM load_jobs WHERE job_id = ?1",
                    params![job_id.as_str()],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(transient)
        })
        .await
    }

    /// Reads and decodes one source of `job`.
    async fn decode_source(
        &self,
        job: &LoadJob,
        source: &conveyor_core::event::ObjectRef,
    ) -> Result<Rows, PortError> {
        let mut reader = match self.store.open(&source.bucket, &source.name).await {
            Ok(r) => r,
            Err(PortError::NotFound(_)) => {
                return Err(PortError::Permanent(format!(
                    "{} does not exist",
                    source.uri()
                )));
            }
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| PortError::Transient(format!("read {}: {e}", source.uri())))?;
        let options = DecodeOptions {
            schema: match &job.schema {
                SchemaSpec::Autodetect => None,
                SchemaSpec::Columns(c) => Some(c.clone()),
            },
            skip_leading_rows: job.skip_leading_rows,
        };
        let format = job.format;
        tokio::task::spawn_blocking(move || formats::decode(format, &bytes, &options))
            .await
            .map_err(transient)?
            .map_err(|e| match e {
                FormatError::BadRows(bad) => PortError::BadRows(bad),
                other => PortError::Permanent(format!("{}: {other}", source.uri())),
            })
    }
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    async fn load(&self, job: &LoadJob, _wait: Duration) -> Result<LoadStatus, PortError> {
        // A cheap look first spares reading and decoding the files on a redelivery; the check
        // inside the load's transaction is the one that guarantees once.
        if let Some(n) = self.finished_load(&job.job_id).await? {
            return Ok(done_status(n, true));
        }
        let mut all: Option<Rows> = None;
        for source in &job.sources {
            let rows = self.decode_source(job, source).await?;
            match &mut all {
                None => all = Some(rows),
                Some(all) => {
                    let first: Vec<&str> = all.columns.iter().map(|c| c.name.as_str()).collect();
                    let this: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
                    if first != this {
                        return Err(PortError::Permanent(format!(
                            "{}: columns {this:?} differ from the batch's first file's {first:?}",
                            source.uri()
                        )));
                    }
                    all.rows.extend(rows.rows);
                }
            }
        }
        let rows = all.ok_or_else(|| {
            PortError::Permanent(format!("load job {} names no source", job.job_id))
        })?;
        let job = job.clone();
        self.with_db(move |db, dir| load_rows(db, dir, &job, rows))
            .await
    }

    async fn load_state(&self, job_id: &JobId) -> Result<LoadStatus, PortError> {
        // Embedded loads end within their request: a job is done, or was never run.
        match self.finished_load(job_id).await? {
            Some(n) => Ok(done_status(n, true)),
            None => Err(PortError::NotFound(format!("load job {job_id}"))),
        }
    }

    async fn read_table(
        &self,
        table: &TableRef,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| super::read_table(db, dir, &table, limit))
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
