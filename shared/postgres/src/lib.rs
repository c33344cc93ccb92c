//! Conveyor's PostgreSQL run-log sink (`run_log.postgres`): seed 000 logs the on-prem run in a
//! Cloud SQL table beside the BigQuery run log. Every row the log step records is written
//! here too, with the same columns ([`RUN_LOG_COLUMNS`]), once per event id
//! (`INSERT … ON CONFLICT (event_id) DO NOTHING`).
//!
//! The table is created when missing (columns added to an older one), with a view
//! `<table>_latest_status` holding each run's latest row, ranked as the BigQuery view ranks
//! them. The connection string comes from Secret Manager (`url_secret`) or the environment
//! (`CONVEYOR_POSTGRES_URL`), never from the pipeline file, and is never logged.
//!
//! # Layout
//! - `lib.rs`: [`PostgresSinks`], the [`RunLogSinks`] port: connections, DDL, inserts; and
//!   [`PostgresSinks::open_jobs`], the open jobs by core's rule (the run-log conformance test).
//! - `connect.rs`: connection strings, TLS through rustls, timeouts.

mod connect;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tracing::info;

use chrono::{DateTime, Utc};
use conveyor_core::config::{PgTable, PostgresSink, RunLogSink};
use conveyor_core::open_jobs::{SqlDialect, candidate_condition, open_jobs};
use conveyor_core::ports::{
    PortError, RUN_LOG_COLUMNS, RunLogRow, RunLogSinks, RunStart, RunsQuery, SecretStore,
};

use connect::Target;

/// How long one statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The run-log sinks of a runtime: PostgreSQL tables, one connection per connection string,
/// reconnecting after a failure (and re-reading the secret, so a rotated password is picked
/// up).
pub struct PostgresSinks {
    secrets: Arc<dyn SecretStore>,
    env_url: Option<String>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    ready: Mutex<HashSet<String>>,
}

impl PostgresSinks {
    /// Sinks reading `url_secret`s from `secrets`; `env_url` (the service's
    /// `CONVEYOR_POSTGRES_URL`, read once at start-up) serves a sink without one.
    pub fn new(secrets: Arc<dyn SecretStore>, env_url: Option<String>) -> Self {
        Self {
            secrets,
            env_url: env_url.filter(|u| !u.trim().is_empty()),
            clients: Mutex::default(),
            ready: Mutex::default(),
        }
    }

    /// The open client for `sink`'s connection string, connecting when there is none (or
    /// the last one closed). Returns its key too.
    async fn client(&self, sink: &PostgresSink) -> Result<(String, Arc<Client>), PortError> {
        let key = match &sink.url_secret {
            Some(s) => s.version_name(),
            None => "CONVEYOR_POSTGRES_URL".to_owned(),
        };
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key).filter(|c| !c.is_closed()) {
            return Ok((key, c.clone()));
        }
        let value = match &sink.url_secret {
            Some(secret) => {
                let v = self.secrets.access(secret).await?;
                String::from_utf8(v.expose().to_vec())
                    .map_err(|_| PortError::permanent(format!("secret {secret} is not text")))?
            }
            None => self.env_url.clone().ok_or_else(|| {
                PortError::permanent(
                    "run_log.postgres has no url_secret and CONVEYOR_POSTGRES_URL is not set"
                        .to_owned(),
                )
            })?,
        };
        let client = Arc::new(Target::parse(&value)?.connect().await?);
        info!(connection = %key, "connected to PostgreSQL");
        clients.insert(key.clone(), client.clone());
        // A new connection may be to a new server: check the tables again.
        self.ready
            .lock()
            .await
            .retain(|k| !k.starts_with(&format!("{key} ")));
        Ok((key, client))
    }

    async fn ensure_table(
        &self,
        key: &str,
        client: &Client,
        table: &PgTable,
    ) -> Result<(), PortError> {
        let ready_key = format!("{key} {table}");
        if self.ready.lock().await.contains(&ready_key) {
            return Ok(());
        }
        if let Err(e) = timed(client.batch_execute(&ddl(table))).await {
            // A statement failed inside the DDL's transaction: end it, so the connection can
            // serve the next request.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        info!(table = %table, "the PostgreSQL run-log table is ready");
        self.ready.lock().await.insert(ready_key);
        Ok(())
    }

    /// A client of `sink`'s server, its run-log table made ready.
    async fn ready(&self, sink: &PostgresSink) -> Result<Arc<Client>, PortError> {
        let (key, client) = self.client(sink).await?;
        self.ensure_table(&key, &client, &sink.table).await?;
        Ok(client)
    }

    async fn record_postgres(&self, sink: &PostgresSink, row: &RunLogRow) -> Result<(), PortError> {
        let (key, client) = self.client(sink).await?;
        let result = async {
            self.ensure_table(&key, &client, &sink.table).await?;
            insert(&client, &sink.table, row).await
        }
        .await;
        if result.is_err() && client.is_closed() {
            self.clients.lock().await.remove(&key);
        }
        result
    }

    /// The open jobs of `sink`'s table since `since`, by core's one rule
    /// ([`conveyor_core::open_jobs`]): what the poll tick would follow were this its run log.
    ///
    /// # Errors
    /// The connection's or the server's error; a sink that is not PostgreSQL is permanent.
    pub async fn open_jobs(
        &self,
        sink: &RunLogSink,
        since: DateTime<Utc>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        let RunLogSink::Postgres(sink) = sink else {
            return Err(PortError::permanent(format!(
                "{sink} is not a PostgreSQL sink"
            )));
        };
        let client = self.ready(sink).await?;
        let names = column_names();
        let sql = format!(
            "SELECT {names} FROM {t} WHERE td_timestamp >= $1
               AND run_id IN (SELECT run_id FROM {t} WHERE td_timestamp >= $1 AND {open})
             ORDER BY td_timestamp, last_modified_at",
            t = quoted(&sink.table),
            open = candidate_condition(SqlDialect::Postgres),
        );
        let rows = timed(client.query(&sql, &[&since])).await?;
        rows.iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()
            .map(open_jobs)
            .map_err(|e| PortError::permanent(format!("PostgreSQL: unreadable run-log row: {e}")))
    }
}

impl PostgresSinks {
    /// The runs `query` selects from `sink`'s table by their first row, as
    /// [`conveyor_core::ports::RunLog::run_starts`] defines it (PostgreSQL's definition; the
    /// run-log conformance suite checks it beside SQLite's and BigQuery's).
    ///
    /// # Errors
    /// The connection's or the server's error; a sink that is not PostgreSQL is permanent.
    pub async fn run_starts(
        &self,
        sink: &RunLogSink,
        query: &RunsQuery,
    ) -> Result<Vec<RunStart>, PortError> {
        let sink = postgres(sink)?;
        let client = self.ready(sink).await?;
        let (sql, args) = run_starts_sql(&sink.table, query);
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| -> &(dyn ToSql + Sync) { a.as_ref() })
            .collect();
        let rows = timed(client.query(&sql, &params)).await?;
        rows.iter()
            .map(|r| {
                Ok(RunStart {
                    run_id: r.try_get(0)?,
                    first: r.try_get(1)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| PortError::permanent(format!("PostgreSQL: unreadable run start: {e}")))
    }

    /// Every row of the runs `run_ids` in `sink`'s table, newest first.
    ///
    /// # Errors
    /// The connection's or the server's error; a sink that is not PostgreSQL is permanent.
    pub async fn rows_of_runs(
        &self,
        sink: &RunLogSink,
        run_ids: &[String],
    ) -> Result<Vec<RunLogRow>, PortError> {
        let sink = postgres(sink)?;
        let client = self.ready(sink).await?;
        let names = column_names();
        let sql = format!(
            "SELECT {} FROM {} WHERE run_id = ANY($1) ORDER BY td_timestamp DESC, last_modified_at DESC",
            names,
            quoted(&sink.table)
        );
        let rows = timed(client.query(&sql, &[&run_ids])).await?;
        rows.iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PortError::permanent(format!("PostgreSQL: unreadable run-log row: {e}")))
    }
}

fn postgres(sink: &RunLogSink) -> Result<&PostgresSink, PortError> {
    match sink {
        RunLogSink::Postgres(p) => Ok(p),
        other => Err(PortError::permanent(format!(
            "{other} is not a PostgreSQL sink"
        ))),
    }
}

/// A statement's parameter.
type Arg = Box<dyn ToSql + Sync + Send>;

/// The runs `query` selects by their first row, in PostgreSQL: the rows, newest first, that
/// no earlier row of their run (among those the filters keep) precedes; the time index is
/// walked from the cursor and the walk stops at the limit.
fn run_starts_sql(table: &PgTable, query: &RunsQuery) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |a: Arg| {
        args.push(a);
        args.len()
    };
    let mut conditions: Vec<(&str, &str, usize)> = Vec::new();
    if let Some(p) = &query.pipeline {
        conditions.push(("pipeline", "=", push(Box::new(p.clone()))));
    }
    if let Some(from) = &query.date_from {
        conditions.push(("run_date", ">=", push(Box::new(from.to_string()))));
    }
    if let Some(to) = &query.date_to {
        conditions.push(("run_date", "<=", push(Box::new(to.to_string()))));
    }
    let on = |alias: &str| -> String {
        conditions
            .iter()
            .map(|(c, op, n)| format!(" AND {alias}.{c} {op} ${n}"))
            .collect()
    };
    let t = quoted(table);
    let mut sql = format!(
        "SELECT r.run_id, r.td_timestamp FROM {t} AS r WHERE TRUE{r}
           AND NOT EXISTS (SELECT 1 FROM {t} AS e WHERE e.run_id = r.run_id{e}
             AND (e.td_timestamp < r.td_timestamp OR (e.td_timestamp = r.td_timestamp AND e.event_id < r.event_id)))",
        r = on("r"),
        e = on("e"),
    );
    let statuses = conveyor_core::run_page::candidate_statuses(&query.statuses);
    if !statuses.is_empty() {
        let s = on("s");
        let n = push(Box::new(statuses));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM {t} AS s WHERE s.run_id = r.run_id{s} AND s.status = ANY(${n}))"
        ));
    }
    if let Some(b) = &query.before {
        let at = push(Box::new(b.first));
        let id = push(Box::new(b.run_id.clone()));
        sql.push_str(&format!(
            " AND (r.td_timestamp < ${at} OR (r.td_timestamp = ${at} AND r.run_id < ${id}))"
        ));
    }
    sql.push_str(" ORDER BY r.td_timestamp DESC, r.run_id DESC");
    if query.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", query.limit));
    }
    (sql, args)
}

/// A run-log row as [`insert`] wrote it.
/// The run log's column names, quoted, in [`RUN_LOG_COLUMNS`] order, separated by commas.
fn column_names() -> String {
    let names: Vec<String> = RUN_LOG_COLUMNS
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    names.join(", ")
}

fn read_row(r: &tokio_postgres::Row) -> Result<RunLogRow, tokio_postgres::Error> {
    let text = |name: &str| -> Result<String, tokio_postgres::Error> {
        Ok(r.try_get::<_, Option<String>>(name)?.unwrap_or_default())
    };
    Ok(RunLogRow {
        db_name: r.try_get("dbName")?,
        table_name: r.try_get("tableName")?,
        td_timestamp: r
            .try_get::<_, Option<DateTime<Utc>>>("td_timestamp")?
            .unwrap_or_default(),
        last_modified_at: r
            .try_get::<_, Option<DateTime<Utc>>>("last_modified_at")?
            .unwrap_or_default(),
        environment: text("environment")?,
        status: text("status")?,
        dataproc_job_id: r.try_get("dataproc_job_id")?,
        event_id: text("event_id")?,
        run_id: text("run_id")?,
        pipeline: r.try_get("pipeline")?,
        step: text("step")?,
        attempt: r
            .try_get::<_, Option<i64>>("attempt")?
            .unwrap_or_default()
            .clamp(0, i64::from(u32::MAX)) as u32,
        source_object: r.try_get("source_object")?,
        job_id: r.try_get("job_id")?,
        error: r.try_get("error")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        rows_loaded: r
            .try_get::<_, Option<i64>>("rows_loaded")?
            .map(|n| n.max(0) as u64),
        detail: text("detail")?,
        job: r.try_get("job")?,
        run_date: r.try_get("run_date")?,
    })
}

#[async_trait]
impl RunLogSinks for PostgresSinks {
    fn lacks(&self, sink: &RunLogSink) -> Option<String> {
        match sink {
            RunLogSink::Postgres(p) if p.url_secret.is_none() && self.env_url.is_none() => Some(
                "no `url_secret` and CONVEYOR_POSTGRES_URL is not set: give one of them".to_owned(),
            ),
            _ => None,
        }
    }

    async fn record(&self, sink: &RunLogSink, row: &RunLogRow) -> Result<(), PortError> {
        match sink {
            RunLogSink::Postgres(p) => self.record_postgres(p, row).await,
            other => Err(PortError::permanent(format!(
                "{other} is not a PostgreSQL sink"
            ))),
        }
    }
}

fn quoted(table: &PgTable) -> String {
    format!("\"{}\".\"{}\"", table.schema, table.table)
}

fn pg_type(bigquery: &str) -> &'static str {
    match bigquery {
        "INT64" => "bigint",
        "TIMESTAMP" => "timestamptz",
        _ => "text",
    }
}

/// The table (and its columns, for a table an older version created), an index on `run_id`,
/// and the latest-status view, under a lock so concurrent instances do not race.
fn ddl(table: &PgTable) -> String {
    let t = quoted(table);
    let columns: Vec<String> = RUN_LOG_COLUMNS
        .iter()
        .map(|c| {
            let mut col = format!("\"{}\" {}", c.name, pg_type(c.ty));
            if c.name == "event_id" {
                col.push_str(" PRIMARY KEY");
            } else if c.required {
                col.push_str(" NOT NULL");
            }
            col
        })
        .collect();
    let additions: String = RUN_LOG_COLUMNS
        .iter()
        .filter(|c| !c.required)
        .map(|c| {
            format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS \"{}\" {};\n",
                c.name,
                pg_type(c.ty)
            )
        })
        .collect();
    let view = format!("\"{}\".\"{}_latest_status\"", table.schema, table.table);
    let index = format!("\"{}_run_id\"", table.table);
    let retry_fn = format!("\"{}\".\"conveyor_retry_pending\"", table.schema);
    let names = column_names();
    format!(
        "BEGIN;
SELECT pg_advisory_xact_lock(7310420266);
CREATE SCHEMA IF NOT EXISTS \"{schema}\";
CREATE TABLE IF NOT EXISTS {t} (
  {columns}
);
{additions}CREATE INDEX IF NOT EXISTS {index} ON {t} (run_id, td_timestamp);
CREATE INDEX IF NOT EXISTS \"{name}_by_time\" ON {t} (td_timestamp, run_id);
CREATE INDEX IF NOT EXISTS \"{name}_by_pipeline_time\" ON {t} (pipeline, td_timestamp, run_id);
CREATE INDEX IF NOT EXISTS \"{name}_by_date\" ON {t} (run_date, td_timestamp);
CREATE OR REPLACE FUNCTION {retry_fn}(status text, detail text) RETURNS boolean
  LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
  IF status IS DISTINCT FROM 'FAILED' THEN RETURN false; END IF;
  RETURN jsonb_typeof(detail::jsonb -> 'retry_at') IS DISTINCT FROM 'null'
    AND (detail::jsonb -> 'retry_at') IS NOT NULL;
EXCEPTION WHEN others THEN RETURN false;
END $fn$;
DROP VIEW IF EXISTS {view};
CREATE VIEW {view} AS
  SELECT DISTINCT ON (run_id) {names},
    CASE WHEN retry_pending THEN 'RETRYING' ELSE status END AS run_status
  FROM (
    SELECT *, MAX(attempt) OVER (PARTITION BY run_id, job_key) AS last_attempt
    FROM (
      SELECT *,
        CASE
          WHEN step = 'submit' AND job IS NULL AND job_id IS NULL AND dataproc_job_id IS NULL THEN NULL
          WHEN job IS NOT NULL THEN job
          WHEN dataproc_job_id IS NOT NULL OR step IN ('submit', 'poll') THEN 'batch'
          ELSE step
        END AS job_key,
        {retry_fn}(status, detail) AS retry_pending
      FROM {t}
    ) keyed
  ) ranked
  ORDER BY run_id,
    (status IN ('FAILED', 'TIMED_OUT', 'REJECTED') AND NOT retry_pending
      AND attempt = last_attempt) DESC,
    (job_key IS NULL) DESC,
    td_timestamp DESC,
    CASE step WHEN 'poll' THEN 4 WHEN 'submit' THEN 3 WHEN 'load' THEN 2 WHEN 'stage' THEN 1 ELSE 0 END DESC,
    CASE status WHEN 'QUEUED' THEN 0 WHEN 'SUBMITTED' THEN 1 WHEN 'RUNNING' THEN 2 ELSE 3 END DESC;
COMMIT;",
        schema = table.schema,
        name = table.table,
        columns = columns.join(",\n  "),
    )
}

/// PostgreSQL's text cannot hold NUL: it becomes U+FFFD rather than failing the row forever.
fn text(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| s.replace('\0', "\u{FFFD}"))
}

async fn insert(client: &Client, table: &PgTable, row: &RunLogRow) -> Result<(), PortError> {
    let names = column_names();
    let params: Vec<String> = (1..=RUN_LOG_COLUMNS.len())
        .map(|i| format!("${i}"))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (event_id) DO NOTHING",
        quoted(table),
        names,
        params.join(", ")
    );
    let owned = |s: &str| Some(s.to_owned());
    // In RUN_LOG_COLUMNS order (a test checks the count and the order of the names).
    let strings = (
        text(&row.db_name),
        text(&row.table_name),
        text(&owned(&row.environment)),
        text(&owned(&row.status)),
        text(&row.dataproc_job_id),
        text(&owned(&row.event_id)),
        text(&owned(&row.run_id)),
        text(&row.pipeline),
        text(&owned(&row.step)),
        text(&row.source_object),
        text(&row.job_id),
        text(&row.error),
        text(&owned(&row.detail)),
        text(&row.job),
        text(&row.run_date),
    );
    let attempt = i64::from(row.attempt);
    let rows_loaded = row
        .rows_loaded
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let values: [&(dyn ToSql + Sync); 21] = [
        &strings.0,
        &strings.1,
        &row.td_timestamp,
        &row.last_modified_at,
        &strings.2,
        &strings.3,
        &strings.4,
        &strings.5,
        &strings.6,
        &strings.7,
        &strings.8,
        &attempt,
        &strings.9,
        &strings.10,
        &strings.11,
        &row.started_at,
        &row.finished_at,
        &rows_loaded,
        &strings.12,
        &strings.13,
        &strings.14,
    ];
    timed(client.execute(&sql, &values)).await.map(|_| ())
}

/// Runs a statement with [`STATEMENT_TIMEOUT`], classifying its failure.
async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, f).await {
        Err(_) => Err(PortError::transient(format!(
            "PostgreSQL did not answer within {STATEMENT_TIMEOUT:?}"
        ))),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
    }
}

/// Connection problems, lack of resources, an operator's intervention, serialization
/// failures and deadlocks may pass; anything else the server refused (privileges, a table of
/// another shape) needs a person.
fn classify(e: &tokio_postgres::Error) -> PortError {
    let message = format!("PostgreSQL: {e}");
    let Some(code) = e.code() else {
        return PortError::transient(message);
    };
    let c = code.code();
    let transient = c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("57P")
        || code == &SqlState::T_R_SERIALIZATION_FAILURE
        || code == &SqlState::T_R_DEADLOCK_DETECTED
        || code == &SqlState::LOCK_NOT_AVAILABLE;
    if transient {
        PortError::transient(format!("{message} ({c})"))
    } else {
        PortError::permanent(format!("{message} ({c})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_run_log_schema() {
        let t = PgTable::parse("ops.run_log").unwrap();
        let sql = ddl(&t);
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS \"ops\".\"run_log\""),
            "{sql}"
        );
        assert!(sql.contains("\"event_id\" text PRIMARY KEY"), "{sql}");
        assert!(sql.contains("\"attempt\" bigint NOT NULL"), "{sql}");
        assert!(sql.contains("\"td_timestamp\" timestamptz"), "{sql}");
        assert!(sql.contains("\"dbName\" text"), "{sql}");
        assert!(
            sql.contains("VIEW \"ops\".\"run_log_latest_status\""),
            "{sql}"
        );
        assert_eq!(
            RUN_LOG_COLUMNS.len(),
            21,
            "insert() binds 21 values in this order"
        );
        let order: Vec<&str> = RUN_LOG_COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(
            order,
            [
                "dbName",
                "tableName",
                "td_timestamp",
                "last_modified_at",
                "environment",
                "status",
                "dataproc_job_id",
                "event_id",
                "run_id",
                "pipeline",
                "step",
                "attempt",
                "source_object",
                "job_id",
                "error",
                "started_at",
                "finished_at",
                "rows_loaded",
                "detail",
                "job",
                "run_date"
            ]
        );
    }
}
