//! The run log in SQLite.

use async_trait::async_trait;
use rusqlite::params;

use conveyor_core::names::TableRef;
use conveyor_core::open_jobs::{SqlDialect, candidate_condition, open_jobs};
use conveyor_core::ports::{
    PortError, RUN_LOG_COLUMNS, RunLog, RunLogQuery, RunLogRow, RunStart, RunsQuery,
};

use super::{Db, SqliteWarehouse, attach, parse_ts, quoted, transient, ts};

fn ensure_run_log(db: &mut Db, dir: &std::path::Path, table: &TableRef) -> Result<(), PortError> {
    attach(db, dir, &table.dataset)?;
    let key = table.to_string();
    if db.run_logs.contains(&key) {
        return Ok(());
    }
    create_run_log(db, table)?;
    db.run_logs.insert(key);
    Ok(())
}

fn create_run_log(db: &mut Db, table: &TableRef) -> Result<(), PortError> {
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
        .map_err(transient)?;
    // A table made by an older release lacks the columns added since: add them (nullable).
    let have = super::table_columns(&db.conn, table)?.unwrap_or_default();
    for c in RUN_LOG_COLUMNS.iter().filter(|c| !c.required) {
        if !have.iter().any(|h| h == c.name) {
            let ty = if c.ty == "INT64" { "INTEGER" } else { "TEXT" };
            db.conn
                .execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN \"{}\" {ty}",
                    quoted(table),
                    c.name
                ))
                .map_err(transient)?;
        }
    }
    // What the console's pages read by (`run_starts`, `rows_of_runs`, `rows`): a run's rows,
    // rows by time, a pipeline's rows by time, rows by run date.
    for (name, columns) in [
        ("run", "run_id, td_timestamp"),
        ("time", "td_timestamp, run_id"),
        ("pipeline_time", "pipeline, td_timestamp, run_id"),
        ("date", "run_date, td_timestamp"),
    ] {
        db.conn
            .execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS \"{ds}\".\"{t}__by_{name}\" ON \"{t}\" ({columns})",
                ds = table.dataset,
                t = table.table,
            ))
            .map_err(transient)?;
    }
    Ok(())
}

/// The conditions of `query`'s row filters on the rows named `alias`, with their values
/// pushed to `args` once (`?N`; every alias refers to the same numbers).
struct PageFilters {
    /// `(column, operator, parameter number)`.
    conditions: Vec<(&'static str, &'static str, usize)>,
    /// The parameter numbers of the candidate statuses.
    statuses: Vec<usize>,
}

impl PageFilters {
    fn new(query: &RunsQuery, args: &mut Vec<rusqlite::types::Value>) -> Self {
        let mut push = |v: String| {
            args.push(rusqlite::types::Value::Text(v));
            args.len()
        };
        let mut conditions = Vec::new();
        if let Some(p) = &query.pipeline {
            conditions.push(("pipeline", "=", push(p.clone())));
        }
        if let Some(from) = &query.date_from {
            conditions.push(("run_date", ">=", push(from.to_string())));
        }
        if let Some(to) = &query.date_to {
            conditions.push(("run_date", "<=", push(to.to_string())));
        }
        let statuses = conveyor_core::run_page::candidate_statuses(&query.statuses)
            .into_iter()
            .map(push)
            .collect();
        Self {
            conditions,
            statuses,
        }
    }

    /// The conditions on `alias`; `by_run`: in a sub-query of one run's rows, where the
    /// unary `+` keeps SQLite from reading them by the pipeline or date index (every row of
    /// the pipeline, for each run) instead of the run's.
    fn on(&self, alias: &str, by_run: bool) -> String {
        let plus = if by_run { "+" } else { "" };
        self.conditions
            .iter()
            .map(|(c, op, n)| format!(" AND {plus}{alias}.{c} {op} ?{n}"))
            .collect()
    }
}

/// The runs `query` selects by their first row (SQLite's definition of
/// [`RunLog::run_starts`]): the rows, newest first, that no earlier row of their run (among
/// those the filters keep) precedes. It walks the time index from the cursor and stops at the
/// limit, so a deep page costs what the first does.
fn run_starts_sql(
    table: &TableRef,
    query: &RunsQuery,
    args: &mut Vec<rusqlite::types::Value>,
) -> String {
    let f = PageFilters::new(query, args);
    let t = quoted(table);
    let mut sql = format!(
        "SELECT r.run_id, r.td_timestamp FROM {t} AS r WHERE 1 = 1{r}
           AND NOT EXISTS (SELECT 1 FROM {t} AS e WHERE e.run_id = r.run_id{e}
             AND (e.td_timestamp < r.td_timestamp OR (e.td_timestamp = r.td_timestamp AND e.event_id < r.event_id)))",
        r = f.on("r", false),
        e = f.on("e", true),
    );
    if !f.statuses.is_empty() {
        let marks: Vec<String> = f.statuses.iter().map(|n| format!("?{n}")).collect();
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM {t} AS s WHERE s.run_id = r.run_id{s} AND s.status IN ({}))",
            marks.join(", "),
            s = f.on("s", true),
        ));
    }
    if let Some(before) = &query.before {
        args.push(rusqlite::types::Value::Text(ts(&before.first)));
        let at = args.len();
        args.push(rusqlite::types::Value::Text(before.run_id.clone()));
        sql.push_str(&format!(
            " AND (r.td_timestamp < ?{at} OR (r.td_timestamp = ?{at} AND r.run_id < ?{}))",
            at + 1
        ));
    }
    sql.push_str(" ORDER BY r.td_timestamp DESC, r.run_id DESC");
    if query.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", query.limit));
    }
    sql
}

/// A run-log row waiting to be written, and who waits for it.
pub(super) struct Queued {
    table: TableRef,
    row: RunLogRow,
    done: tokio::sync::oneshot::Sender<Result<(), PortError>>,
}

/// Writes the queued run-log rows: several in one transaction (one commit, so one write to
/// the log file, instead of one each: group commit), one on its own. Each waiter is told its
/// row's result; when a row fails inside a group, the group is rolled back and every row is
/// written on its own, so one bad row fails only its own event. Rows are keyed by event id
/// (`INSERT OR IGNORE`), so a row written twice is written once.
pub(super) fn write_queued(
    db: &mut Db,
    dir: &std::path::Path,
    queue: &std::sync::Mutex<Vec<Queued>>,
) {
    let batch = std::mem::take(
        &mut *queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    // The tables first (ATTACH cannot run inside a transaction).
    let mut ready = Vec::with_capacity(batch.len());
    for q in batch {
        match ensure_run_log(db, dir, &q.table) {
            Ok(()) => ready.push(q),
            Err(e) => {
                let _ = q.done.send(Err(e));
            }
        }
    }
    if ready.len() > 1 {
        let grouped = db
            .conn
            .execute_batch("BEGIN")
            .and_then(|()| {
                ready
                    .iter()
                    .try_for_each(|q| insert_row(&db.conn, &q.table, &q.row))
            })
            .and_then(|()| db.conn.execute_batch("COMMIT"));
        match grouped {
            Ok(()) => {
                for q in ready {
                    let _ = q.done.send(Ok(()));
                }
                return;
            }
            Err(_) => {
                if !db.conn.is_autocommit() {
                    let _ = db.conn.execute_batch("ROLLBACK");
                }
            }
        }
    }
    for q in ready {
        let written = insert_row(&db.conn, &q.table, &q.row)
            .map_err(|e| forget(&mut db.run_logs, &q.table, e));
        let _ = q.done.send(written);
    }
}

/// Inserts one run-log row (once per event id).
fn insert_row(
    conn: &rusqlite::Connection,
    table: &TableRef,
    row: &RunLogRow,
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {} ({SELECT_RUN_LOG}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21)",
        quoted(table)
    ))?;
    insert.execute(params![
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
        row.job,
        row.run_date,
    ])?;
    Ok(())
}

/// A statement on run-log table `table` failed: it is checked again before the next use (it
/// may have been dropped or changed by another process).
fn forget(
    run_logs: &mut std::collections::HashSet<String>,
    table: &TableRef,
    e: rusqlite::Error,
) -> PortError {
    run_logs.remove(&table.to_string());
    transient(e)
}

const SELECT_RUN_LOG: &str = "dbName, tableName, td_timestamp, last_modified_at, environment, status, dataproc_job_id, \
     event_id, run_id, pipeline, step, attempt, source_object, job_id, error, started_at, finished_at, rows_loaded, detail, job, run_date";

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
        job: r.get(19)?,
        run_date: r.get(20)?,
    })
}

#[async_trait]
impl RunLog for SqliteWarehouse {
    async fn record(&self, table: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.log_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Queued {
                table: table.clone(),
                row: row.clone(),
                done,
            });
        // Whoever holds the connection next writes every row queued by then (this one, or
        // more): rows recorded while the connection is busy commit together.
        let mut db = self.conn.clone().lock_owned().await;
        let queue = self.log_queue.clone();
        let queued = !queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
        if queued {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || write_queued(&mut db, &dir, &queue))
                .await
                .map_err(transient)?;
        } else {
            // Written by the one that held the connection before.
            drop(db);
        }
        written
            .await
            .map_err(|_| transient("the run-log row was not written"))?
    }

    async fn rows(
        &self,
        table: &TableRef,
        query: &RunLogQuery,
    ) -> Result<Vec<RunLogRow>, PortError> {
        let table = table.clone();
        let query = query.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            let mut filters = vec!["1 = 1".to_owned()];
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut arg = |v: String, filters: &mut Vec<String>, clause: &str| {
                args.push(rusqlite::types::Value::Text(v));
                filters.push(clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(run) = &query.run_id {
                arg(run.clone(), &mut filters, "run_id = ?");
            }
            if let Some(p) = &query.pipeline {
                arg(p.clone(), &mut filters, "pipeline = ?");
            }
            if let Some(since) = &query.since {
                arg(ts(since), &mut filters, "td_timestamp >= ?");
            }
            if let Some(from) = &query.date_from {
                arg(from.to_string(), &mut filters, "run_date >= ?");
            }
            if let Some(to) = &query.date_to {
                arg(to.to_string(), &mut filters, "run_date <= ?");
            }
            if !query.statuses.is_empty() {
                let mut marks = Vec::new();
                for s in &query.statuses {
                    args.push(rusqlite::types::Value::Text(s.clone()));
                    marks.push(format!("?{}", args.len()));
                }
                filters.push(format!("status IN ({})", marks.join(", ")));
            }
            let limit = if query.limit == 0 {
                i64::MAX
            } else {
                query.limit as i64
            };
            let sql = format!(
                "SELECT {SELECT_RUN_LOG} FROM {} WHERE {} ORDER BY td_timestamp DESC, rowid DESC LIMIT {limit}",
                quoted(&table),
                filters.join(" AND ")
            );
            let mut stmt = db.conn.prepare(&sql).map_err(|e| forget(&mut db.run_logs, &table, e))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), read_row)
                .map_err(transient)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(transient)
        })
        .await
    }

    async fn open_batches(
        &self,
        table: &TableRef,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            // The candidates (the rows of the runs with a row that may be open), in the order
            // they were written; core's rule picks the open jobs.
            let sql = format!(
                "SELECT {SELECT_RUN_LOG} FROM {table} WHERE td_timestamp >= ?1
                   AND run_id IN (SELECT run_id FROM {table} WHERE td_timestamp >= ?1 AND {open})
                 ORDER BY rowid",
                table = quoted(&table),
                open = candidate_condition(SqlDialect::Sqlite),
            );
            let mut stmt = db
                .conn
                .prepare_cached(&sql)
                .map_err(|e| forget(&mut db.run_logs, &table, e))?;
            let rows = stmt
                .query_map(params![ts(&since)], read_row)
                .map_err(transient)?;
            rows.collect::<Result<Vec<_>, _>>()
                .map(open_jobs)
                .map_err(transient)
        })
        .await
    }

    async fn run_starts(
        &self,
        table: &TableRef,
        query: &RunsQuery,
    ) -> Result<Vec<RunStart>, PortError> {
        let table = table.clone();
        let query = query.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            let mut args = Vec::new();
            let sql = run_starts_sql(&table, &query, &mut args);
            let mut stmt = db
                .conn
                .prepare_cached(&sql)
                .map_err(|e| forget(&mut db.run_logs, &table, e))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .map_err(transient)?;
            let mut out = Vec::new();
            for row in rows {
                let (run_id, at) = row.map_err(transient)?;
                out.push(RunStart {
                    first: parse_ts(at).unwrap_or_default(),
                    run_id,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn rows_of_runs(
        &self,
        table: &TableRef,
        run_ids: &[String],
        _since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let table = table.clone();
        let ids = run_ids.to_vec();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            let mut out = Vec::new();
            // SQLite takes at most 32,766 parameters a statement.
            for chunk in ids.chunks(10_000) {
                let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "SELECT {SELECT_RUN_LOG} FROM {} WHERE run_id IN ({}) ORDER BY td_timestamp DESC, rowid DESC",
                    quoted(&table),
                    marks.join(", ")
                );
                let mut stmt = db
                    .conn
                    .prepare(&sql)
                    .map_err(|e| forget(&mut db.run_logs, &table, e))?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(chunk), read_row)
                    .map_err(transient)?;
                for r in rows {
                    out.push(r.map_err(transient)?);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use conveyor_core::names::TableRef;
    use conveyor_core::ports::{RunLog, RunLogQuery, RunLogRow};

    use crate::{LocalStore, SqliteWarehouse};

    fn row(event: usize, status: &str, job: Option<&str>) -> RunLogRow {
        RunLogRow {
            td_timestamp: chrono::Utc::now(),
            last_modified_at: chrono::Utc::now(),
            environment: "dev".to_owned(),
            status: status.to_owned(),
            event_id: format!("event-{event}"),
            run_id: format!("run-{}", event / 2),
            step: "load".to_owned(),
            attempt: 1,
            detail: "{}".to_owned(),
            job: job.map(str::to_owned),
            ..RunLogRow::default()
        }
    }

    /// Rows recorded at once (they commit in groups) are each written once, in their own
    /// tables, whoever's call wrote them; a redelivered row adds nothing.
    #[tokio::test]
    async fn rows_recorded_at_once_are_each_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("b")).unwrap();
        let w = SqliteWarehouse::open(dir.path().join("w"), Arc::new(store)).unwrap();
        let tables = [
            TableRef::parse("conveyor.run_log").unwrap(),
            TableRef::parse("ops.run_log").unwrap(),
        ];
        let mut calls = tokio::task::JoinSet::new();
        for round in 0..2 {
            for i in 0..300 {
                let (w, table) = (w.clone(), tables[i % 2].clone());
                let status = if round == 0 { "SUCCEEDED" } else { "FAILED" };
                calls.spawn(async move { w.record(&table, &row(i, status, None)).await });
            }
        }
        while let Some(result) = calls.join_next().await {
            result.unwrap().unwrap();
        }
        for table in &tables {
            let rows = w.rows(table, &RunLogQuery::default()).await.unwrap();
            assert_eq!(rows.len(), 150, "{table}");
            let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.event_id).collect();
            assert_eq!(ids.len(), 150, "{table}");
        }
    }

    /// The page query reads each run's earlier rows by the run index, whatever the filters:
    /// read by the pipeline or date index instead, it reads every row of the pipeline for
    /// each row it looks at (9 s for a page at 50,000 rows; `scripts/bench-console.sh`).
    #[tokio::test]
    async fn the_page_query_reads_a_runs_rows_by_the_run_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("b")).unwrap();
        let w = SqliteWarehouse::open(dir.path().join("w"), Arc::new(store)).unwrap();
        let table = TableRef::parse("conveyor.run_log").unwrap();
        w.record(&table, &row(0, "SUCCEEDED", None)).await.unwrap();
        let query = conveyor_core::ports::RunsQuery {
            pipeline: Some("p".into()),
            statuses: vec!["FAILED".into()],
            date_from: chrono::NaiveDate::from_ymd_opt(2026, 11, 1),
            date_to: chrono::NaiveDate::from_ymd_opt(2026, 11, 14),
            limit: 50,
            ..Default::default()
        };
        let plan = w
            .with_db(move |db, _| {
                let mut args = Vec::new();
                let sql = super::run_starts_sql(&table, &query, &mut args);
                let mut stmt = db
                    .conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(super::transient)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                    .map_err(super::transient)?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(super::transient)
            })
            .await
            .unwrap();
        let subqueries: Vec<&String> = plan
            .iter()
            .filter(|l| l.contains(" e ") || l.contains(" s "))
            .collect();
        assert_eq!(subqueries.len(), 2, "{plan:#?}");
        for l in subqueries {
            assert!(l.contains("run_log__by_run"), "{l}: {plan:#?}");
        }
    }

    /// Open batches: a job whose newest row is open, not one finished since, nor one never
    /// opened.
    #[tokio::test]
    async fn open_batches_are_the_jobs_whose_newest_row_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("b")).unwrap();
        let w = SqliteWarehouse::open(dir.path().join("w"), Arc::new(store)).unwrap();
        let table = TableRef::parse("conveyor.run_log").unwrap();
        let at = |secs: i64| chrono::Utc::now() - chrono::Duration::seconds(100 - secs);
        let rows = vec![
            // run-0: submitted, then succeeded: closed.
            RunLogRow {
                td_timestamp: at(1),
                ..row(0, "SUBMITTED", Some("spark"))
            },
            RunLogRow {
                td_timestamp: at(2),
                ..row(1, "SUCCEEDED", Some("spark"))
            },
            // run-1: submitted, running: open.
            RunLogRow {
                td_timestamp: at(3),
                ..row(2, "SUBMITTED", Some("spark"))
            },
            RunLogRow {
                td_timestamp: at(4),
                ..row(3, "RUNNING", Some("spark"))
            },
            // run-2: succeeded only: never open.
            RunLogRow {
                td_timestamp: at(5),
                ..row(4, "SUCCEEDED", Some("load"))
            },
        ];
        for r in &rows {
            w.record(&table, r).await.unwrap();
        }
        let open = w
            .open_batches(&table, chrono::DateTime::<chrono::Utc>::MIN_UTC)
            .await
            .unwrap();
        let ids: Vec<&str> = open.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["event-3"]);
    }
}
