//! [`RunLog`]: the run-log table, its one schema, and [`RunLogSinks`], the further tables
//! each row is also written to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PortError;
use crate::config::RunLogSink;
use crate::names::TableRef;

/// A column of the run-log table, in BigQuery's terms (each adapter maps the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLogColumn {
    /// Column name.
    pub name: &'static str,
    /// BigQuery type: `STRING`, `INT64` or `TIMESTAMP`.
    pub ty: &'static str,
    /// `REQUIRED` (else `NULLABLE`).
    pub required: bool,
}

const fn col(name: &'static str, ty: &'static str, required: bool) -> RunLogColumn {
    RunLogColumn { name, ty, required }
}

/// The run-log schema, the one definition every adapter and the Terraform table follow:
/// seed 000's seven columns first, then Conveyor's ([`RunLogRow`] in the same order).
pub const RUN_LOG_COLUMNS: &[RunLogColumn] = &[
    col("dbName", "STRING", false),
    col("tableName", "STRING", false),
    col("td_timestamp", "TIMESTAMP", false),
    col("last_modified_at", "TIMESTAMP", false),
    col("environment", "STRING", false),
    col("status", "STRING", false),
    col("dataproc_job_id", "STRING", false),
    col("event_id", "STRING", true),
    col("run_id", "STRING", true),
    col("pipeline", "STRING", false),
    col("step", "STRING", true),
    col("attempt", "INT64", true),
    col("source_object", "STRING", false),
    col("job_id", "STRING", false),
    col("error", "STRING", false),
    col("started_at", "TIMESTAMP", false),
    col("finished_at", "TIMESTAMP", false),
    col("rows_loaded", "INT64", false),
    col("detail", "STRING", false),
    col("job", "STRING", false),
    col("run_date", "STRING", false),
];

/// One row of the run log: seed 000's columns first, then what operators need.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunLogRow {
    /// Seed 000 `dbName`: the dataset of the table concerned.
    pub db_name: Option<String>,
    /// Seed 000 `tableName`: the table concerned.
    pub table_name: Option<String>,
    /// Seed 000 `td_timestamp`: when the event happened.
    pub td_timestamp: DateTime<Utc>,
    /// Seed 000 `last_modified_at`: when the row was written.
    pub last_modified_at: DateTime<Utc>,
    /// Seed 000 `environment`.
    pub environment: String,
    /// Seed 000 `status`.
    pub status: String,
    /// Seed 000 `dataproc_job_id`: the batch job id (any engine).
    pub dataproc_job_id: Option<String>,
    /// The event id (deterministic; makes writes idempotent).
    pub event_id: String,
    /// The run.
    pub run_id: String,
    /// The pipeline.
    pub pipeline: Option<String>,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt: u32,
    /// `gs://bucket/object` that started the run.
    pub source_object: Option<String>,
    /// The load or batch job id.
    pub job_id: Option<String>,
    /// The error, on failure.
    pub error: Option<String>,
    /// When the step or attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (terminal statuses only).
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows loaded.
    pub rows_loaded: Option<u64>,
    /// The event's detail as JSON (engine, engine state, retry time, parameters).
    pub detail: String,
    /// The job of the pipeline this row is about (`jobs[].name`; `batch` for a pipeline's
    /// single `batch:`), so the run log reads as the DAG's task list.
    pub job: Option<String>,
    /// The run date: the logical date the run is for (`YYYY-MM-DD`: the object's `{date}`,
    /// the schedule's fire date in its time zone, a trigger's or backfill's `--date`), the
    /// same on every row of a run; `None` on rows that belong to no run date (a refusal).
    pub run_date: Option<String>,
}

/// Which run-log rows to read: every set filter must hold. Rows come newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunLogQuery {
    /// Only this run's rows.
    pub run_id: Option<String>,
    /// Only this pipeline's rows.
    pub pipeline: Option<String>,
    /// Only rows whose `td_timestamp` is at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows with one of these statuses (empty: any).
    pub statuses: Vec<String>,
    /// Only rows whose run date is on or after this date.
    pub date_from: Option<chrono::NaiveDate>,
    /// Only rows whose run date is on or before this date.
    pub date_to: Option<chrono::NaiveDate>,
    /// At most this many rows (0: no limit).
    pub limit: usize,
}

/// The run log: a BigQuery table, or a table in the embedded database.
#[async_trait]
pub trait RunLog: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Records a row. Idempotent on `row.event_id`.
    async fn record(&self, table: &TableRef, row: &RunLogRow) -> Result<(), PortError>;
    /// The rows `query` selects, newest first, each event once.
    async fn rows(
        &self,
        table: &TableRef,
        query: &RunLogQuery,
    ) -> Result<Vec<RunLogRow>, PortError>;
    /// The newest `limit` rows, newest first.
    async fn recent(&self, table: &TableRef, limit: usize) -> Result<Vec<RunLogRow>, PortError> {
        self.rows(
            table,
            &RunLogQuery {
                limit,
                ..RunLogQuery::default()
            },
        )
        .await
    }
    /// For every job of every run (`run_id`, `job`; rows of older releases without a job
    /// but with a batch id count as job `batch`) whose newest row since `since` is SUBMITTED,
    /// RUNNING, or FAILED with a retry pending, that row: the durable state the poll step
    /// works from (batches, `for_each` jobs, load jobs still running), by the one rule of
    /// [`crate::open_jobs`].
    async fn open_batches(
        &self,
        table: &TableRef,
        since: DateTime<Utc>,
    ) -> Result<Vec<RunLogRow>, PortError>;

    /// The runs `query` selects, by their first row: newest first (by that row's
    /// `td_timestamp`, then run id, descending), before `query.before`, at most `query.limit`
    /// (0: all). `query.statuses` narrows to the runs with a row of one of
    /// [`crate::run_page::candidate_statuses`] (a superset: [`crate::run_page::page`] keeps
    /// the runs whose state is one of them). What the console pages and `/api/runs` read.
    ///
    /// The default reads every row ([`RunLog::rows`]) and picks in memory
    /// ([`crate::run_page::starts_in_memory`]); the adapters answer with one query.
    async fn run_starts(
        &self,
        table: &TableRef,
        query: &RunsQuery,
    ) -> Result<Vec<RunStart>, PortError> {
        let rows = self.rows(table, &RunLogQuery::default()).await?;
        Ok(crate::run_page::starts_in_memory(&rows, query))
    }

    /// Every row of the runs `run_ids`, newest first, each event once. With `since` (the
    /// runs' first rows' time, less a margin), no row of these runs is older: a run log
    /// partitioned by time (BigQuery's, by day of `td_timestamp`) then reads only the
    /// partitions from there instead of the whole table.
    ///
    /// The default reads them run by run ([`RunLog::rows`]) and needs no `since`.
    async fn rows_of_runs(
        &self,
        table: &TableRef,
        run_ids: &[String],
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        let _ = since;
        let mut out = Vec::new();
        for id in run_ids {
            out.extend(
                self.rows(
                    table,
                    &RunLogQuery {
                        run_id: Some(id.clone()),
                        ..RunLogQuery::default()
                    },
                )
                .await?,
            );
        }
        Ok(out)
    }
}

/// Which runs a page of the console shows: every set filter must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunsQuery {
    /// Only this pipeline's runs.
    pub pipeline: Option<String>,
    /// Only runs in one of these states ([`crate::run_state::RunState`]'s status, `RETRYING`
    /// included; empty: any).
    pub statuses: Vec<String>,
    /// Only runs whose run date is on or after this date.
    pub date_from: Option<chrono::NaiveDate>,
    /// Only runs whose run date is on or before this date.
    pub date_to: Option<chrono::NaiveDate>,
    /// Only runs that come after this one, newest first (the next page).
    pub before: Option<RunStart>,
    /// At most this many runs (0: no limit).
    pub limit: usize,
}

/// Where a run stands in the newest-first order of pages: its first row's time, then its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunStart {
    /// The `td_timestamp` of its first row.
    pub first: DateTime<Utc>,
    /// The run id.
    pub run_id: String,
}

/// The additional run-log sinks a pipeline file names (a PostgreSQL table): the log step
/// writes each row there after the run log.
#[async_trait]
pub trait RunLogSinks: Send + Sync {
    /// What `sink` lacks to be written to (a connection string that no setting gives), naming
    /// the setting; `None` when it can be. Checked at start-up for every sink of the file.
    fn lacks(&self, sink: &RunLogSink) -> Option<String> {
        let _ = sink;
        None
    }
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Records `row` in `sink`, creating its table when missing. Idempotent on
    /// `row.event_id`: a redelivered event writes nothing twice.
    async fn record(&self, sink: &RunLogSink, row: &RunLogRow) -> Result<(), PortError>;
}
