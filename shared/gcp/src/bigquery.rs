//! BigQuery as warehouse and run log, through gcp-bigquery-client.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gcp_bigquery_client::Client;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::GcpAuth;
use conveyor_core::config::{
    CreateDisposition, PartitionKind, SchemaSpec, SchemaUpdateOption, WriteDisposition,
};
use conveyor_core::format::{ColumnType, Format};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{
    LoadJob, LoadState, LoadStatus, PortError, RUN_LOG_COLUMNS, RunLog, RunLogQuery, RunLogRow,
    Warehouse,
};

/// BigQuery in one project.
#[derive(Clone)]
pub struct BigQuery {
    client: Client,
    project: String,
    location: Option<String>,
    run_logs_ready: Arc<Mutex<HashSet<String>>>,
}

fn bq_error(what: &str, e: BQError) -> PortError {
    match &e {
        BQError::ResponseError { error } => {
            let code = error.error.code;
            let msg = format!("{what}: {} ({code})", error.error.message);
            match code {
                404 => PortError::NotFound(msg),
                408 | 429 | 500..=599 => PortError::Transient(msg),
                _ => PortError::Permanent(msg),
            }
        }
        BQError::RequestError(_) | BQError::NoToken => PortError::Transient(format!("{what}: {e}")),
        _ => PortError::Permanent(format!("{what}: {e}")),
    }
}

fn is_conflict(e: &BQError) -> bool {
    matches!(e, BQError::ResponseError { error } if error.error.code == 409)
}

fn bq_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::String => "STRING",
        ColumnType::Int64 => "INT64",
        ColumnType::Float64 => "FLOAT64",
        ColumnType::Bool => "BOOL",
        ColumnType::Bytes => "BYTES",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
        ColumnType::Json => "JSON",
    }
}

/// The `configuration.load` of a load job, as BigQuery's REST API names it.
pub(crate) fn load_configuration(job: &LoadJob, project: &str) -> Value {
    let mut load = json!({
        "sourceUris": job.source_uris(),
        "destinationTable": {
            "projectId": job.table.project.clone().unwrap_or_else(|| project.to_owned()),
            "datasetId": job.table.dataset,
            "tableId": job.table.table,
        },
        "sourceFormat": match job.format {
            Format::Avro => "AVRO",
            Format::Parquet => "PARQUET",
            Format::Csv => "CSV",
            Format::Ndjson => "NEWLINE_DELIMITED_JSON",
            Format::Orc => "ORC",
        },
        "writeDisposition": match job.write {
            WriteDisposition::WriteAppend => "WRITE_APPEND",
            WriteDisposition::WriteTruncate => "WRITE_TRUNCATE",
            WriteDisposition::WriteEmpty => "WRITE_EMPTY",
        },
        "createDisposition": match job.create {
            CreateDisposition::CreateIfNeeded => "CREATE_IF_NEEDED",
            CreateDisposition::CreateNever => "CREATE_NEVER",
        },
        "maxBadRecords": job.max_bad_records,
    });
    match &job.schema {
        SchemaSpec::Autodetect => load["autodetect"] = json!(true),
        SchemaSpec::Columns(cols) => {
            let fields: Vec<Value> = cols
                .iter()
                .map(|c| json!({"name": c.name, "type": bq_type(c.ty), "mode": if c.nullable { "NULLABLE" } else { "REQUIRED" }}))
                .collect();
            load["schema"] = json!({ "fields": fields });
        }
    }
    if job.format == Format::Csv {
        load["skipLeadingRows"] = json!(job.skip_leading_rows);
        load["allowQuotedNewlines"] = json!(job.allow_quoted_newlines);
    }
    if !job.schema_update_options.is_empty() {
        let options: Vec<&str> = job
            .schema_update_options
            .iter()
            .map(|o| match o {
                SchemaUpdateOption::AllowFieldAddition => "ALLOW_FIELD_ADDITION",
                SchemaUpdateOption::AllowFieldRelaxation => "ALLOW_FIELD_RELAXATION",
            })
            .collect();
        load["schemaUpdateOptions"] = json!(options);
    }
    if !job.clustering.is_empty() {
        load["clustering"] = json!({ "fields": job.clustering });
    }
    if job.format == Format::Avro {
        load["useAvroLogicalTypes"] = json!(true);
    }
    if let Some(p) = &job.partition {
        let kind = match p.kind {
            PartitionKind::Hour => "HOUR",
            PartitionKind::Day => "DAY",
            PartitionKind::Month => "MONTH",
            PartitionKind::Year => "YEAR",
        };
        let mut tp = json!({ "type": kind });
        if let Some(f) = &p.field {
            tp["field"] = json!(f);
        }
        load["timePartitioning"] = tp;
    }
    load
}

/// Reasons BigQuery gives for failures that may pass.
fn transient_reason(reason: &str) -> bool {
    matches!(
        reason,
        "backendError"
            | "internalError"
            | "rateLimitExceeded"
            | "quotaExceeded"
            | "timeout"
            | "jobBackendError"
    )
}

enum Finished {
    Done(u64),
    Failed { transient: bool, message: String },
}

impl BigQuery {
    /// A client for `project`; `base_url` overrides the API root
    /// (`http://127.0.0.1:PORT/bigquery/v2` for the emulator).
    ///
    /// # Errors
    /// When the client cannot be built.
    pub async fn new(
        project: &str,
        location: Option<String>,
        base_url: Option<&str>,
        auth: &GcpAuth,
    ) -> Result<Self, PortError> {
        let mut builder = gcp_bigquery_client::client_builder::ClientBuilder::new();
        if let Some(url) = base_url {
            builder.with_v2_base_url(url.trim_end_matches('/').to_owned());
        }
        let client = builder
            .build_from_authenticator(Arc::new(auth.clone()))
            .await
            .map_err(|e| bq_error("build the BigQuery client", e))?;
        Ok(Self {
            client,
            project: project.to_owned(),
            location,
            run_logs_ready: Arc::default(),
        })
    }

    fn project_of<'a>(&'a self, t: &'a TableRef) -> &'a str {
        t.project.as_deref().unwrap_or(&self.project)
    }

    /// Runs a query and returns its rows as JSON values (`f[i].v`), checking the errors the
    /// emulator reports in a 200 body.
    async fn query(&self, sql: &str) -> Result<Vec<Vec<Value>>, PortError> {
        let mut req = QueryRequest::new(sql);
        req.location = self.location.clone();
        req.timeout_ms = Some(60_000);
        let resp = self
            .client
            .job()
            .query(&self.project, req)
            .await
            .map_err(|e| bq_error("query", e))?;
        if let Some(errors) = resp.errors.as_ref().filter(|e| !e.is_empty()) {
            let msg: Vec<String> = errors.iter().filter_map(|e| e.message.clone()).collect();
            return Err(PortError::Permanent(format!(
                "query failed: {}",
                msg.join("; ")
            )));
        }
        let rows = serde_json::to_value(&resp.rows).unwrap_or(Value::Null);
        let mut out = Vec::new();
        for row in rows.as_array().into_iter().flatten() {
            let cells = row
                .get("f")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            out.push(
                cells
                    .into_iter()
                    .map(|c| c.get("v").cloned().unwrap_or(Value::Null))
                    .collect(),
            );
        }
        Ok(out)
    }

    async fn get_job(&self, job_id: &str) -> Result<Job, PortError> {
        self.client
            .job()
            .get_job(&self.project, job_id, self.location.as_deref())
            .await
            .map_err(|e| bq_error("get load job", e))
    }

    /// The job's end, waiting up to `wait` for it; `None` while it runs.
    async fn wait(&self, job_id: &str, wait: Duration) -> Result<Option<Finished>, PortError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(200);
        loop {
            let job = self.get_job(job_id).await?;
            let status = job.status.clone().unwrap_or_default();
            if status.state.as_deref() == Some("DONE") {
                if let Some(err) = status.error_result {
                    let reason = err.reason.clone().unwrap_or_default();
                    let mut message = err.message.clone().unwrap_or_else(|| reason.clone());
                    let details: Vec<String> = status
                        .errors
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|e| e.message)
                        .take(10)
                        .collect();
                    if !details.is_empty() {
                        message = format!("{message}: {}", details.join("; "));
                    }
                    return Ok(Some(Finished::Failed {
                        transient: transient_reason(&reason),
                        message,
                    }));
                }
                let rows = job
                    .statistics
                    .and_then(|s| s.load)
                    .and_then(|l| l.output_rows)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                return Ok(Some(Finished::Done(rows)));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Creates the run-log `table` the first time this process writes to it (Terraform
    /// creates it in production; 409 means it exists). Remembered per table: pipelines may
    /// name their own run-log tables.
    async fn ensure_run_log(&self, table: &TableRef) -> Result<(), PortError> {
        let key = format!(
            "{}.{}.{}",
            self.project_of(table),
            table.dataset,
            table.table
        );
        if self.run_logs_ready.lock().await.contains(&key) {
            return Ok(());
        }
        let fields: Vec<Value> = RUN_LOG_COLUMNS
            .iter()
            .map(|c| json!({"name": c.name, "type": c.ty, "mode": if c.required { "REQUIRED" } else { "NULLABLE" }}))
            .collect();
        let body: gcp_bigquery_client::model::table::Table = serde_json::from_value(json!({
            "tableReference": {"projectId": self.project_of(table), "datasetId": table.dataset, "tableId": table.table},
            "schema": {"fields": fields},
            "timePartitioning": {"type": "DAY", "field": "td_timestamp"},
        }))
        .map_err(|e| PortError::Permanent(e.to_string()))?;
        match self.client.table().create(body).await {
            Ok(_) => info!(table = %table, "created the run-log table"),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(bq_error("create the run-log table", e)),
        }
        self.run_logs_ready.lock().await.insert(key);
        Ok(())
    }
}

impl BigQuery {
    /// Runs `job` through its series of ids (`ID`, `ID-r2`, ... `ID-r5`): a job id can be
    /// used once, so after a transient failure under one id the next is tried; a redelivery
    /// walks the same series and finds what already ran. With `insert`, a job missing from
    /// the series is started; without, only existing jobs are read.
    async fn run_series(
        &self,
        job: &LoadJob,
        wait: Duration,
        insert: bool,
    ) -> Result<LoadStatus, PortError> {
        for round in 1..=5u32 {
            let job_id = if round == 1 {
                job.job_id.to_string()
            } else {
                format!("{}-r{round}", job.job_id)
            };
            // Look first: real BigQuery answers a second insert with 409, but the emulator
            // runs it again; a lookup finds the job either way.
            let existed = match self.get_job(&job_id).await {
                Ok(_) => true,
                Err(PortError::NotFound(_)) if insert => {
                    let body: Job = serde_json::from_value(json!({
                        "jobReference": {"projectId": self.project, "jobId": job_id, "location": self.location},
                        "configuration": {"load": load_configuration(job, &self.project)},
                    }))
                    .map_err(|e| PortError::Permanent(format!("load job body: {e}")))?;
                    match self.client.job().insert(&self.project, body).await {
                        Ok(_) => false,
                        Err(e) if is_conflict(&e) => true,
                        Err(e) => return Err(bq_error("insert load job", e)),
                    }
                }
                Err(e) => return Err(e),
            };
            let state = match self.wait(&job_id, wait).await? {
                None => LoadState::Running,
                Some(Finished::Done(rows)) => LoadState::Done { rows },
                Some(Finished::Failed {
                    transient: true,
                    message,
                }) => {
                    warn!(job_id = %job_id, error = %message, "load job failed transiently");
                    if existed {
                        // Spent: the next id of the series runs it again.
                        continue;
                    }
                    LoadState::Failed {
                        message: format!("load job {job_id}: {message}"),
                        transient: true,
                    }
                }
                Some(Finished::Failed {
                    transient: false,
                    message,
                }) => LoadState::Failed {
                    message: format!("load job {job_id} failed: {message}"),
                    transient: false,
                },
            };
            return Ok(LoadStatus {
                state,
                adopted: existed,
            });
        }
        Err(PortError::Transient(format!(
            "load job {} failed transiently five times",
            job.job_id
        )))
    }
}

#[async_trait]
impl Warehouse for BigQuery {
    async fn load(&self, job: &LoadJob, wait: Duration) -> Result<LoadStatus, PortError> {
        self.run_series(job, wait, true).await
    }

    async fn load_state(&self, job: &LoadJob) -> Result<LoadStatus, PortError> {
        self.run_series(job, Duration::ZERO, true).await
    }

    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError> {
        let sql = format!(
            "SELECT COUNT(*) FROM `{}.{}.{}`",
            self.project_of(table),
            table.dataset,
            table.table
        );
        let rows = self.query(&sql).await?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| PortError::Permanent(format!("no count for {table}")))
    }
}

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
        "detail": row.detail, "job": row.job,
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

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
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
    })
}

const COLUMNS: &str = "dbName, tableName, td_timestamp, last_modified_at, environment, status, dataproc_job_id, \
     event_id, run_id, pipeline, step, attempt, source_object, job_id, error, started_at, finished_at, rows_loaded, detail, job";

impl BigQuery {
    fn fq(&self, t: &TableRef) -> String {
        format!("`{}.{}.{}`", self.project_of(t), t.dataset, t.table)
    }

    /// The run log without duplicates: insertAll's de-duplication is best effort, so reads
    /// keep one row per event id.
    fn deduped(&self, t: &TableRef) -> String {
        format!(
            "(SELECT * EXCEPT(dup) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY last_modified_at) AS dup FROM {}) WHERE dup = 1)",
            self.fq(t)
        )
    }
}

#[async_trait]
impl RunLog for BigQuery {
    async fn record(&self, table: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
        self.ensure_run_log(table).await?;
        let mut req = TableDataInsertAllRequest::new();
        req.add_row(Some(row.event_id.clone()), row_json(row))
            .map_err(|e| PortError::Permanent(e.to_string()))?;
        let resp = self
            .client
            .tabledata()
            .insert_all(self.project_of(table), &table.dataset, &table.table, req)
            .await
            .map_err(|e| bq_error("insert run-log row", e))?;
        if let Some(errors) = resp.insert_errors.filter(|e| !e.is_empty()) {
            return Err(PortError::Permanent(format!(
                "run-log row refused: {}",
                serde_json::to_string(&errors).unwrap_or_default()
            )));
        }
        Ok(())
    }

    async fn rows(
        &self,
        table: &TableRef,
        query: &RunLogQuery,
    ) -> Result<Vec<RunLogRow>, PortError> {
        self.ensure_run_log(table).await?;
        let mut filters = vec!["TRUE".to_owned()];
        // Values are quoted as BigQuery string literals; they come from the CLI or from the
        // run log itself, never from an event.
        let lit = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        if let Some(run) = &query.run_id {
            filters.push(format!("run_id = {}", lit(run)));
        }
        if let Some(p) = &query.pipeline {
            filters.push(format!("pipeline = {}", lit(p)));
        }
        if let Some(since) = &query.since {
            filters.push(format!("td_timestamp >= TIMESTAMP({})", lit(&ts(since))));
        }
        if !query.statuses.is_empty() {
            let list: Vec<String> = query.statuses.iter().map(|s| lit(s)).collect();
            filters.push(format!("status IN ({})", list.join(", ")));
        }
        let limit = if query.limit == 0 {
            String::new()
        } else {
            format!(" LIMIT {}", query.limit)
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE {} ORDER BY td_timestamp DESC{limit}",
            self.deduped(table),
            filters.join(" AND ")
        );
        Ok(self
            .query(&sql)
            .await?
            .iter()
            .filter_map(|c| from_cells(c))
            .collect())
    }

    async fn open_batches(&self, table: &TableRef) -> Result<Vec<RunLogRow>, PortError> {
        self.ensure_run_log(table).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY attempt DESC,
                 CASE status WHEN 'SUBMITTED' THEN 1 WHEN 'RUNNING' THEN 2 ELSE 3 END DESC,
                 td_timestamp DESC) AS rn
               FROM {} WHERE dataproc_job_id IS NOT NULL)
             WHERE rn = 1 AND (status IN ('SUBMITTED', 'RUNNING')
               OR (status = 'FAILED' AND JSON_VALUE(detail, '$.retry_at') IS NOT NULL))
             ORDER BY td_timestamp",
            self.deduped(table)
        );
        Ok(self
            .query(&sql)
            .await?
            .iter()
            .filter_map(|c| from_cells(c))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::event::ObjectRef;
    use conveyor_core::names::JobId;

    #[test]
    fn a_csv_load_job_names_its_format_dispositions_and_header() {
        let job = LoadJob {
            job_id: JobId::parse("cv-load-x-a1").unwrap(),
            sources: vec![ObjectRef {
                bucket: "landing".parse().unwrap(),
                name: "sales/a.csv".parse().unwrap(),
                generation: "1".into(),
                size: None,
            }],
            table: TableRef::parse("ds.t").unwrap(),
            format: Format::Csv,
            write: WriteDisposition::WriteTruncate,
            create: CreateDisposition::CreateNever,
            schema: SchemaSpec::Autodetect,
            partition: None,
            clustering: vec!["region".into()],
            skip_leading_rows: 1,
            max_bad_records: 2,
            allow_quoted_newlines: false,
            schema_update_options: vec![SchemaUpdateOption::AllowFieldAddition],
        };
        let c = load_configuration(&job, "proj-123");
        assert_eq!(c["sourceUris"][0], "gs://landing/sales/a.csv");
        assert_eq!(c["destinationTable"]["projectId"], "proj-123");
        assert_eq!(c["sourceFormat"], "CSV");
        assert_eq!(c["writeDisposition"], "WRITE_TRUNCATE");
        assert_eq!(c["createDisposition"], "CREATE_NEVER");
        assert_eq!(c["skipLeadingRows"], 1);
        assert_eq!(c["autodetect"], true);
        assert_eq!(c["maxBadRecords"], 2);
        assert_eq!(c["allowQuotedNewlines"], false);
        assert_eq!(c["clustering"]["fields"][0], "region");
        assert_eq!(c["schemaUpdateOptions"][0], "ALLOW_FIELD_ADDITION");
    }

    #[test]
    fn timestamps_parse_from_seconds_micros_and_rfc3339() {
        let a = parse_time(&json!("1.7637e9")).unwrap();
        let b = parse_time(&json!("1763700000000000")).unwrap();
        let c = parse_time(&json!("2025-11-21T04:40:00Z")).unwrap();
        assert_eq!(a.timestamp(), 1_763_700_000);
        assert_eq!(b.timestamp(), 1_763_700_000);
        assert_eq!(c.timestamp(), 1_763_700_000);
    }
}
