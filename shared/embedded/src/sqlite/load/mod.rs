//! Load jobs: stream a job's files into its table, exactly once per job id.
//!
//! A job runs in one IMMEDIATE transaction on the warehouse connection: the write lock is
//! taken when the job starts (so SQLite's busy timeout applies, and another process holding
//! the lock makes the job wait, then fail as transient), every source is decoded row by row
//! and inserted as it is read (memory stays flat in the files' size), and the job's
//! record (`_conveyor_load_jobs` in the dataset's file) commits with its rows, or nothing
//! does.
//!
//! BigQuery's behaviours kept here:
//! - `maxBadRecords`: up to that many bad rows (over all the job's files) are skipped; one
//!   more fails the job and it loads nothing.
//! - Autodetect with several files: the schema is detected from one file (here the first
//!   that has columns) and every other file is read with it, as BigQuery samples one file
//!   (<https://cloud.google.com/bigquery/docs/schema-detect>): a CSV file lacking a detected
//!   column fails the job, an NDJSON key outside it makes its row bad. (The load step sends
//!   NDJSON batches whose later files add keys with the union of their keys as a declared
//!   schema and `ALLOW_FIELD_ADDITION`; see `conveyor_core`'s `steps::load::fields`.)
//! - Table names are case-sensitive, as in a BigQuery dataset by default
//!   (`isCaseInsensitive` false,
//!   <https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets#Dataset>). SQLite's
//!   are not, so a table whose name differs only in case from an existing one is kept as
//!   `<name>__<8 hex digits of its name's SHA-256>` ([`sqlite_name`]).
//! - A file with no data (empty, or only a header) loads 0 rows and succeeds; with
//!   autodetect and no header there are no columns to create a table from, so none is
//!   created (the job is still recorded, so a redelivery adopts it).

//!
//! # Layout
//! - `job.rs`: one job's transaction, its record, the loop over its sources.
//! - `input.rs`: opening a source for the decoder (and the content check of a local file).
//! - `batch.rs`: rows decoded ahead on a thread of their own, inserted in batches.
//! - `table.rs`: the target table: its SQLite name, created or checked, its INSERTs.
//! - this file: the [`Warehouse`] port over them; each file's tests beside it.

mod batch;
#[cfg(test)]
mod fixtures;
mod input;
mod job;
mod table;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{ErrorCode, OptionalExtension, params};
use tokio::runtime::Handle;

use conveyor_core::names::{JobId, TableRef};
use conveyor_core::ports::{LoadJob, LoadStatus, PortError, Warehouse};

use super::{SqliteWarehouse, attach, transient};

use job::{done_status, run};
use table::ident;

pub(super) use table::sqlite_name;

/// Classifies a SQLite error: a busy or locked database, I/O trouble, a full disk are
/// transient (another process holds the lock; retrying later succeeds); a constraint or a
/// type mismatch is the data's fault and permanent.
fn sqlite_error(e: rusqlite::Error) -> PortError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig) => {
            PortError::permanent(format!("sqlite: {e}"))
        }
        _ => transient(e),
    }
}

impl SqliteWarehouse {
    /// The rows of the load job `job_id` when it has run (from the index in `_jobs.sqlite`).
    async fn finished_load(&self, job_id: &JobId) -> Result<Option<i64>, PortError> {
        let job_id = job_id.clone();
        self.with_db(move |db, _| {
            db.conn
                .prepare_cached("SELECT rows FROM load_jobs WHERE job_id = ?1")
                .and_then(|mut s| {
                    s.query_row(params![job_id.as_str()], |r| r.get(0))
                        .optional()
                })
                .map_err(sqlite_error)
        })
        .await
    }
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    async fn load(&self, job: &LoadJob, _wait: Duration) -> Result<LoadStatus, PortError> {
        if job.sources.is_empty() {
            return Err(PortError::permanent(format!(
                "load job {} names no source",
                job.job_id
            )));
        }
        let job = job.clone();
        let store = self.store.clone();
        let local = self.local.clone();
        let handle = Handle::current();
        self.with_db(move |db, dir| run(db, dir, &store, local.as_ref(), &handle, &job))
            .await
    }

    async fn load_state(&self, job_id: &JobId) -> Result<LoadStatus, PortError> {
        // Embedded loads end within their request: a job is done, or was never run.
        match self.finished_load(job_id).await? {
            Some(n) => Ok(done_status(n, true)),
            None => Err(PortError::not_found(format!("load job {job_id}"))),
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

    async fn select(
        &self,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let sql = sql.to_owned();
        self.with_db(move |db, dir| super::select(db, dir, &sql, limit))
            .await
    }

    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| {
            attach(db, dir, &table.dataset)?;
            let (name, exists) = sqlite_name(&db.conn, &table)?;
            if !exists {
                return Err(PortError::not_found(format!("table {table}")));
            }
            let n: i64 = db
                .conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM \"{}\".{}",
                        table.dataset,
                        ident(&name)
                    ),
                    [],
                    |r| r.get(0),
                )
                .map_err(sqlite_error)?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}
