//! The run log in SQLite.

use async_trait::async_trait;
use rusqlite::params;

use conveyor_core::names::TableRef;
use conveyor_core::ports::{PortError, RUN_LOG_COLUMNS, RunLog, RunLogQuery, RunLogRow};

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
     event_id, run_id, pipeline, step, attempt, source_object, job_id, error, started_at, finished_at, rows_loaded, detail, job";

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
    })
}

#[async_trait]
impl RunLog for SqliteWarehouse {
    async fn record(&self, table: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
        let table = table.clone();
        let row = row.clone();
        self.with_db(move |db, dir| {
            ensure_run_log(db, dir, &table)?;
            let written = db
                .conn
                .prepare_cached(&format!("INSERT OR IGNORE INTO {} ({SELECT_RUN_LOG}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20)", quoted(&table)))
                .and_then(|mut insert| insert.execute(params![
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
                    ]));
            written.map_err(|e| forget(&mut db.run_logs, &table, e))?;
            Ok(())
        })
        .await
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
            // The newest row of each job of each run: highest attempt, then furthest status.
            // Rows of older releases name no job; their batch rows count as job `batch`.
            let sql = format!(
                "SELECT {SELECT_RUN_LOG} FROM (
                   SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id, job_key ORDER BY attempt DESC,
                     CASE status WHEN 'SUBMITTED' THEN 1 WHEN 'RUNNING' THEN 2 ELSE 3 END DESC,
                     td_timestamp DESC, rowid DESC) AS rn
                   FROM (SELECT rowid, *, COALESCE(job, CASE WHEN dataproc_job_id IS NOT NULL
                           THEN 'batch' END) AS job_key FROM {} WHERE td_timestamp >= ?1)
                   WHERE job_key IS NOT NULL)
                 WHERE rn = 1 AND (status IN ('SUBMITTED', 'RUNNING')
                   OR (status = 'FAILED' AND json_extract(detail, '$.retry_at') IS NOT NULL))
                 ORDER BY td_timestamp",
                quoted(&table)
            );
            let mut stmt = db
                .conn
                .prepare_cached(&sql)
                .map_err(|e| forget(&mut db.run_logs, &table, e))?;
            let rows = stmt
                .query_map(params![ts(&since)], read_row)
                .map_err(transient)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(transient)
        })
        .await
    }
}
