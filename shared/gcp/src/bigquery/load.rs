//! The warehouse port on BigQuery: load jobs from `gs://` URIs, inserted under their
//! deterministic ids (409 = adopt), waited on briefly, finished later by `load_state`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::warn;

use conveyor_core::config::{
    CreateDisposition, PartitionKind, SchemaSpec, SchemaUpdateOption, WriteDisposition,
};
use conveyor_core::format::{ColumnType, Format};
use conveyor_core::names::{JobId, TableRef};
use conveyor_core::ports::{LoadJob, LoadState, LoadStatus, PortError, Warehouse};

use super::{BigQuery, Inserted, JobInfo, quoted, text, transient_reason};

/// Jobs in a load's series: a job id can be used once, so after a transient failure the load
/// runs again as `ID-r2`, … `ID-r5`; a redelivery walks the same series and finds what ran.
const ROUNDS: u32 = 5;

fn round_id(job_id: &JobId, round: u32) -> String {
    if round == 1 {
        job_id.to_string()
    } else {
        format!("{job_id}-r{round}")
    }
}

pub(super) fn bq_type(t: ColumnType) -> &'static str {
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
pub fn load_configuration(job: &LoadJob, project: &str) -> Value {
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

/// What a job's state means for a load.
fn load_state(job: &JobInfo) -> LoadState {
    if !job.done() {
        return LoadState::Running;
    }
    match &job.error {
        Some((reason, message)) => LoadState::Failed {
            message: message.clone(),
            transient: transient_reason(reason),
        },
        None => LoadState::Done {
            rows: job.resource["statistics"]["load"]["outputRows"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .or_else(|| job.resource["statistics"]["load"]["outputRows"].as_u64())
                .unwrap_or(0),
        },
    }
}

impl BigQuery {
    /// Follows the load's series from `round`: each job is inserted (or adopted), waited on
    /// for what is left of `wait`; a transient failure moves on to the next id with the same
    /// configuration.
    async fn run_series(
        &self,
        job_id: &JobId,
        configuration: Value,
        wait: Duration,
        first_round: u32,
        mut adopted: bool,
    ) -> Result<LoadStatus, PortError> {
        let deadline = tokio::time::Instant::now() + wait;
        for round in first_round..=ROUNDS {
            let id = round_id(job_id, round);
            let first = match self.insert_job(&id, configuration.clone()).await? {
                Inserted::New(job) => Some(job),
                Inserted::Exists => {
                    adopted = true;
                    None
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let job = self.wait_job(&id, first, left).await?;
            match load_state(&job) {
                LoadState::Failed {
                    transient: true,
                    message,
                } if round < ROUNDS => {
                    warn!(job_id = %id, error = %message, "load job failed transiently; running it again under the next id");
                }
                state => return Ok(LoadStatus { state, adopted }),
            }
        }
        Err(PortError::Transient(format!(
            "load job {job_id} failed transiently {ROUNDS} times"
        )))
    }
}

#[async_trait]
impl Warehouse for BigQuery {
    async fn load(&self, job: &LoadJob, wait: Duration) -> Result<LoadStatus, PortError> {
        let configuration = json!({ "load": load_configuration(job, &self.project) });
        self.run_series(&job.job_id, configuration, wait, 1, false)
            .await
    }

    async fn load_state(&self, job_id: &JobId) -> Result<LoadStatus, PortError> {
        // The newest job of the series that exists.
        let mut newest: Option<(u32, JobInfo)> = None;
        for round in 1..=ROUNDS {
            match self.get_job(&round_id(job_id, round)).await {
                Ok(job) => newest = Some((round, job)),
                Err(PortError::NotFound(_)) => break,
                Err(e) => return Err(e),
            }
        }
        let Some((round, job)) = newest else {
            return Err(PortError::NotFound(format!("load job {job_id}")));
        };
        match load_state(&job) {
            LoadState::Failed {
                transient: true, ..
            } if round < ROUNDS => {
                // Run it again under the next id, with the configuration it had.
                let configuration = job.resource["configuration"].clone();
                self.run_series(job_id, configuration, Duration::ZERO, round + 1, true)
                    .await
            }
            state => Ok(LoadStatus {
                state,
                adopted: true,
            }),
        }
    }

    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {}",
            quoted(self.project_of(table), table)
        );
        let (_, rows) = self.query(&sql).await?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(text)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| PortError::Permanent(format!("no count for {table}")))
    }

    async fn read_table(
        &self,
        table: &TableRef,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let sql = format!(
            "SELECT * FROM {} LIMIT {limit}",
            quoted(self.project_of(table), table)
        );
        let (names, rows) = self.query(&sql).await?;
        Ok(rows
            .iter()
            .map(|cells| {
                names
                    .iter()
                    .zip(cells)
                    .filter_map(|(n, v)| Some((n.clone(), text(v)?)))
                    .collect()
            })
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
}
