//! The run log on BigQuery: `insertAll` with the event id as `insertId`; reads keep one row
//! per event id (insertAll's de-duplication is best effort).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::Method;
use serde_json::{Value, json};
use tracing::info;

use conveyor_core::names::TableRef;
use conveyor_core::open_jobs::{SqlDialect, candidate_condition, open_jobs};
use conveyor_core::ports::{
    PortError, RUN_LOG_COLUMNS, RunLog, RunLogQuery, RunLogRow, RunStart, RunsQuery,
};

use super::{BigQuery, quoted, text};

const COLUMNS: &str = "dbName, tableName, td_timestamp, last_modified_at, environment, status, dataproc_job_id, \
     event_id, run_id, pipeline, step, attempt, source_object, job_id, error, started_at, finished_at, rows_loaded, detail, job, run_date";

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn row_json(row: &RunLogRow) -> Value {
    json!({
        "dbName": row.db_name, "tableName": row.table_name,
        "td_timestamp": ts(&row.td_timestamp), "last_modified_at": ts(&row.last_modified_at),
        "environment": row.environment, "status": row.status, "dataproc_job_id": row.dataproc_job_id,
        "event_id": row.event_id, "run_id": row.run_id, "pipeline": row.pipeline, "step": row.step,
        "attempt": row.attempt, "source_object": row.source_object, "job_id": row.job_id,
        "error": row.error, "started_at": row.started_at.as_ref().map(ts),
        "finished_at": row.finished_at.as_ref().map(ts), "rows_loaded": row.rows_loaded,
        "detail": row.detail, "job": row.job, "run_date": row.run_date,
    })
}

/// TIMESTAMP cells come back as seconds since the epoch (real BigQuery: a float string;
/// the emulator: microseconds) or RFC 3339 text.
fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v
        .as_str()
        .map(str::to_owned)
        .or_else(|| v.as_f64().map(|f| f.to_string()))?;
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Some(t.with_timezone(&Utc));
    }
    let f: f64 = s.parse().ok()?;
    // Microseconds when the number is too large to be seconds.
    let micros = if f.abs() > 1e14 { f } else { f * 1e6 };
    DateTime::from_timestamp_micros(micros as i64)
}

fn from_cells(c: &[Value]) -> Option<RunLogRow> {
    let get = |i: usize| c.get(i).unwrap_or(&Value::Null);
    Some(RunLogRow {
        db_name: text(get(0)),
        table_name: text(get(1)),
        td_timestamp: parse_time(get(2)).unwrap_or_default(),
        last_modified_at: parse_time(get(3)).unwrap_or_default(),
        environment: text(get(4)).unwrap_or_default(),
        status: text(get(5)).unwrap_or_default(),
        dataproc_job_id: text(get(6)),
        event_id: text(get(7))?,
        run_id: text(get(8))?,
        pipeline: text(get(9)),
        step: text(get(10)).unwrap_or_default(),
        attempt: text(get(11)).and_then(|s| s.parse().ok()).unwrap_or(0),
        source_object: text(get(12)),
        job_id: text(get(13)),
        error: text(get(14)),
        started_at: parse_time(get(15)),
        finished_at: parse_time(get(16)),
        rows_loaded: text(get(17)).and_then(|s| s.parse().ok()),
        detail: text(get(18)).unwrap_or_default(),
        job: text(get(19)),
        run_date: text(get(20)),
    })
}

/// A value as a GoogleSQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The run log `table` (quoted) without duplicates: one row per event id, of the rows that
/// pass `filters` (SQL conditions joined by AND). The filters apply to the table itself,
/// inside the de-duplication, so BigQuery prunes `td_timestamp` day partitions and
/// `pipeline`/`run_id` clusters: a filter outside the window function cannot be pushed
/// through it, and every read would scan the whole table. (Duplicates of an event id are
/// copies of one row, so filtering before de-duplicating keeps the same rows.)
fn deduped_sql(table: &str, filters: &[String]) -> String {
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    format!(
        "(SELECT * EXCEPT(dup) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY last_modified_at) AS dup FROM {table}{filter}) WHERE dup = 1)"
    )
}

/// The condition on the partitioning column keeping the rows from `since` on.
fn since_filter(since: &DateTime<Utc>) -> String {
    format!("td_timestamp >= TIMESTAMP({})", lit(&ts(since)))
}

/// Every row of the runs `run_ids`, newest first; from `since` on when given (the
/// partition filter: only the day partitions from there are scanned).
fn rows_of_runs_sql(table: &str, run_ids: &[String], since: Option<&DateTime<Utc>>) -> String {
    let list: Vec<String> = run_ids.iter().map(|r| lit(r)).collect();
    let mut filters = vec![format!("run_id IN ({})", list.join(", "))];
    filters.extend(since.map(since_filter));
    format!(
        "SELECT {COLUMNS} FROM {} ORDER BY td_timestamp DESC",
        deduped_sql(table, &filters)
    )
}

/// The open-batch candidates of the poll tick: the rows since `since` of the runs with a row
/// that may be open ([`candidate_condition`]), oldest first; core's [`open_jobs`] picks the
/// open jobs from them.
fn open_batches_sql(table: &str, since: &DateTime<Utc>) -> String {
    format!(
        "SELECT {COLUMNS} FROM (
           SELECT *, MAX(CASE WHEN {open} THEN 1 ELSE 0 END) OVER (PARTITION BY run_id) AS has_open
           FROM {rows})
         WHERE has_open = 1
         ORDER BY td_timestamp, last_modified_at",
        open = candidate_condition(SqlDialect::BigQuery),
        rows = deduped_sql(table, &[since_filter(since)])
    )
}

/// The filters on a pipeline and a run-date range (both ends included), as GoogleSQL
/// conditions on the run log's columns.
fn pipeline_and_dates(
    pipeline: Option<&str>,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> Vec<String> {
    let mut filters = Vec::new();
    if let Some(p) = pipeline {
        filters.push(format!("pipeline = {}", lit(p)));
    }
    if let Some(from) = from {
        filters.push(format!("run_date >= {}", lit(&from.to_string())));
    }
    if let Some(to) = to {
        filters.push(format!("run_date <= {}", lit(&to.to_string())));
    }
    filters
}

/// The runs `query` selects by their first row (GoogleSQL's definition of
/// [`RunLog::run_starts`]): the run log's rows that pass the filters (pruned by the
/// `pipeline` cluster), one group per run, its first row's time, newest first after the
/// cursor.
fn run_starts_sql(table: &str, query: &RunsQuery) -> String {
    let filters = pipeline_and_dates(query.pipeline.as_deref(), query.date_from, query.date_to);
    let statuses = conveyor_core::run_page::candidate_statuses(&query.statuses);
    let has = if statuses.is_empty() {
        "TRUE".to_owned()
    } else {
        let list: Vec<String> = statuses.iter().map(|s| lit(s)).collect();
        format!("LOGICAL_OR(status IN ({}))", list.join(", "))
    };
    let mut outer = vec!["has".to_owned()];
    if let Some(b) = &query.before {
        let at = format!("TIMESTAMP({})", lit(&ts(&b.first)));
        outer.push(format!(
            "(first < {at} OR (first = {at} AND run_id < {}))",
            lit(&b.run_id)
        ));
    }
    let limit = if query.limit == 0 {
        String::new()
    } else {
        format!(" LIMIT {}", query.limit)
    };
    format!(
        "SELECT run_id, first FROM (SELECT run_id, MIN(td_timestamp) AS first, {has} AS has FROM {rows} GROUP BY run_id) WHERE {outer} ORDER BY first DESC, run_id DESC{limit}",
        rows = deduped_sql(table, &filters),
        outer = outer.join(" AND "),
    )
}

impl BigQuery {
    /// Creates the run-log `table` the first time this process writes to it (Terraform
    /// creates it in production; 409 means it exists), and adds the columns a table made by an
    /// older release lacks. Remembered per table: pipelines may name their own run-log tables.
    async fn ensure_run_log(&self, table: &TableRef) -> Result<(), PortError> {
        let project = self.project_of(table).to_owned();
        let key = format!("{project}.{}.{}", table.dataset, table.table);
        if self.run_logs_ready.lock().await.contains(&key) {
            return Ok(());
        }
        let fields: Vec<Value> = RUN_LOG_COLUMNS
            .iter()
            .map(|c| json!({"name": c.name, "type": c.ty, "mode": if c.required { "REQUIRED" } else { "NULLABLE" }}))
            .collect();
        let body = json!({
            "tableReference": {"projectId": project, "datasetId": table.dataset, "tableId": table.table},
            "schema": {"fields": fields},
            "timePartitioning": {"type": "DAY", "field": "td_timestamp"},
        });
        let tables = format!("projects/{project}/datasets/{}/tables", table.dataset);
        match self
            .call(
                Method::POST,
                &tables,
                &[],
                Some(&body),
                "create the run-log table",
            )
            .await
        {
            Ok(_) => info!(table = %table, "created the run-log table"),
            Err(PortError::Conflict(_)) => {
                let path = format!("{tables}/{}", table.table);
                let existing = self
                    .call(Method::GET, &path, &[], None, "read the run-log table")
                    .await?;
                let mut have: Vec<Value> = existing["schema"]["fields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let missing: Vec<Value> = fields
                    .iter()
                    .filter(|f| !have.iter().any(|h| h["name"] == f["name"]))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    have.extend(missing);
                    self.call(
                        Method::PATCH,
                        &path,
                        &[],
                        Some(&json!({"schema": {"fields": have}})),
                        "add the run log's new columns",
                    )
                    .await?;
                    info!(table = %table, "added the run log's new columns");
                }
            }
            Err(e) => return Err(e),
        }
        self.run_logs_ready.lock().await.insert(key);
        Ok(())
    }

    async fn read_rows(&self, sql: &str) -> Result<Vec<RunLogRow>, PortError> {
        let (_, rows) = self.query(sql).await?;
        Ok(rows.iter().filter_map(|c| from_cells(c)).collect())
    }
}

#[async_trait]
impl RunLog for BigQuery {
    async fn record(&self, table: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
        self.ensure_run_log(table).await?;
        let body = json!({
            "rows": [{"insertId": row.event_id, "json": row_json(row)}],
        });
        let path = format!(
            "projects/{}/datasets/{}/tables/{}/insertAll",
            self.project_of(table),
            table.dataset,
            table.table
        );
        let resp = self
            .call(Method::POST, &path, &[], Some(&body), "insert run-log row")
            .await?;
        if let Some(errors) = resp["insertErrors"].as_array().filter(|e| !e.is_empty()) {
            return Err(PortError::permanent(format!(
                "run-log row refused: {}",
                Value::Array(errors.clone())
            )));
        }
        Ok(())
    }

    async fn rows(
        &self,
        table: &TableRef,
        query: &RunLogQuery,
    ) -> Result<Vec<RunLogRow>, PortError> {
        // Readers with read-only roles (`conveyor status`, the console) can neither create
        // nor widen the table: they read what is there.
        if let Err(e @ PortError::Transient(_)) = self.ensure_run_log(table).await {
            return Err(e);
        }
        // Values are quoted as string literals.
        let mut filters = Vec::new();
        if let Some(since) = &query.since {
            filters.push(since_filter(since));
        }
        if let Some(run) = &query.run_id {
            filters.push(format!("run_id = {}", lit(run)));
        }
        filters.extend(pipeline_and_dates(
            query.pipeline.as_deref(),
            query.date_from,
            query.date_to,
        ));
        if !query.statuses.is_empty() {
            let list: Vec<String> = query.statuses.iter().map(|s| lit(s)).collect();
            filters.push(format!("status IN ({})", list.join(", ")));
        }
        let limit = if query.limit == 0 {
            String::new()
        } else {
            format!(" LIMIT {}", query.limit)
        };
        self.read_rows(&format!(
            "SELECT {COLUMNS} FROM {} ORDER BY td_timestamp DESC{limit}",
            deduped_sql(&quoted(self.project_of(table), table), &filters),
        ))
        .await
    }

    async fn open_batches(
        &self,
        table: &TableRef,
        since: DateTime<Utc>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        self.ensure_run_log(table).await?;
        self.read_rows(&open_batches_sql(
            &quoted(self.project_of(table), table),
            &since,
        ))
        .await
        .map(open_jobs)
    }

    async fn run_starts(
        &self,
        table: &TableRef,
        query: &RunsQuery,
    ) -> Result<Vec<RunStart>, PortError> {
        if let Err(e @ PortError::Transient(_)) = self.ensure_run_log(table).await {
            return Err(e);
        }
        let (_, rows) = self
            .query(&run_starts_sql(
                &quoted(self.project_of(table), table),
                query,
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|c| {
                Some(RunStart {
                    run_id: text(c.first()?)?,
                    first: parse_time(c.get(1)?)?,
                })
            })
            .collect())
    }

    async fn rows_of_runs(
        &self,
        table: &TableRef,
        run_ids: &[String],
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e @ PortError::Transient(_)) = self.ensure_run_log(table).await {
            return Err(e);
        }
        let table = quoted(self.project_of(table), table);
        self.read_rows(&rows_of_runs_sql(&table, run_ids, since.as_ref()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_from_seconds_micros_and_rfc3339() {
        let a = parse_time(&json!("1.7637e9")).unwrap();
        let b = parse_time(&json!("1763700000000000")).unwrap();
        let c = parse_time(&json!("2025-11-21T04:40:00Z")).unwrap();
        assert_eq!(a.timestamp(), 1_763_700_000);
        assert_eq!(b.timestamp(), 1_763_700_000);
        assert_eq!(c.timestamp(), 1_763_700_000);
    }

    #[test]
    fn the_open_batch_query_filters_the_table_by_time_before_any_window() {
        let since = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sql = open_batches_sql("`p.conveyor.run_log`", &since);
        // The only read of the table carries the partition filter directly, so BigQuery
        // prunes the day partitions before de-duplicating.
        assert_eq!(sql.matches("`p.conveyor.run_log`").count(), 1, "{sql}");
        assert!(
            sql.contains(
                "FROM `p.conveyor.run_log` WHERE td_timestamp >= TIMESTAMP('2026-11-20T00:00:00.000000Z')"
            ),
            "{sql}"
        );
        // No other time filter outside a window function, where it could not prune.
        assert_eq!(sql.matches("td_timestamp >=").count(), 1, "{sql}");
        assert!(deduped_sql("`t`", &[]).contains("FROM `t`) WHERE dup = 1"));
        let by_run = deduped_sql("`t`", &["run_id = 'r'".to_owned(), since_filter(&since)]);
        assert!(
            by_run.contains("FROM `t` WHERE run_id = 'r' AND td_timestamp >="),
            "{by_run}"
        );
    }

    #[test]
    fn the_run_page_query_filters_the_table_before_grouping_and_pages_by_the_first_row() {
        let q = RunsQuery {
            pipeline: Some("sales".into()),
            statuses: vec!["RETRYING".into()],
            before: Some(RunStart {
                first: DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
                run_id: "r'9".into(),
            }),
            limit: 51,
            ..RunsQuery::default()
        };
        let sql = run_starts_sql("`p.conveyor.run_log`", &q);
        assert!(
            sql.contains("FROM `p.conveyor.run_log` WHERE pipeline = 'sales')"),
            "{sql}"
        );
        assert!(sql.contains("LOGICAL_OR(status IN ('FAILED'))"), "{sql}");
        assert!(sql.contains("run_id < 'r\\'9'"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY first DESC, run_id DESC LIMIT 51"),
            "{sql}"
        );
    }

    #[test]
    fn the_rows_of_a_page_of_runs_are_read_from_the_partitions_since_their_first_rows() {
        let since = DateTime::parse_from_rfc3339("2026-11-13T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let runs = ["r1".to_owned(), "r'2".to_owned()];
        let sql = rows_of_runs_sql("`p.conveyor.run_log`", &runs, Some(&since));
        assert!(
            sql.contains(
                "FROM `p.conveyor.run_log` WHERE run_id IN ('r1', 'r\\'2') AND td_timestamp >= TIMESTAMP('2026-11-13T00:00:00.000000Z'))"
            ),
            "{sql}"
        );
        let all = rows_of_runs_sql("`p.conveyor.run_log`", &runs, None);
        assert!(!all.contains("td_timestamp >="), "{all}");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(lit("a'b\\c"), "'a\\'b\\\\c'");
    }
}
