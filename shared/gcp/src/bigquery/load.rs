//! The warehouse port on BigQuery: load jobs from `gs://` URIs, inserted under their
//! deterministic ids (409 = adopt), waited on briefly, finished later by `load_state`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use conveyor_core::config::{
    CreateDisposition, PartitionKind, SchemaSpec, SchemaUpdateOption, WriteDisposition,
};
use conveyor_core::format::{Column, ColumnType, Format};
use conveyor_core::names::{JobId, TableRef};
use conveyor_core::ports::{LoadJob, LoadState, LoadStatus, PortError, Warehouse};

use super::{BigQuery, Inserted, JobInfo, quoted, text, transient_reason};

/// A table's `schema.fields` as flat columns, `None` when one is nested or repeated (a
/// RECORD, a REPEATED mode) or of a type a flat schema does not name: the caller then
/// leaves the job's schema as it was.
fn flat_columns(fields: &Value) -> Option<Vec<Column>> {
    fields
        .as_array()?
        .iter()
        .map(|f| {
            let ty = match f["type"].as_str()? {
                "STRING" => ColumnType::String,
                "INTEGER" | "INT64" => ColumnType::Int64,
                "FLOAT" | "FLOAT64" => ColumnType::Float64,
                "BOOLEAN" | "BOOL" => ColumnType::Bool,
                "BYTES" => ColumnType::Bytes,
                "TIMESTAMP" => ColumnType::Timestamp,
                "DATE" => ColumnType::Date,
                "JSON" => ColumnType::Json,
                _ => return None,
            };
            let nullable = match f["mode"].as_str().unwrap_or("NULLABLE") {
                "NULLABLE" => true,
                "REQUIRED" => false,
                _ => return None,
            };
            Some(Column {
                name: f["name"].as_str()?.to_owned(),
                ty,
                nullable,
            })
        })
        .collect()
}

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
    t.as_str()
}

/// The `configuration.load` of a load job, as BigQuery's REST API names it.
pub fn load_configuration(job: &LoadJob, project: &str) -> Value {
    serde_json::to_value(LoadConfiguration::new(job, project)).unwrap_or_default()
}

/// A load job's `configuration`, written straight to the request's body.
#[derive(Serialize)]
struct Configuration<'a> {
    load: LoadConfiguration<'a>,
}

/// `configuration.load` (`JobConfigurationLoad` in BigQuery's REST reference).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadConfiguration<'a> {
    source_uris: Vec<String>,
    destination_table: TableReference<'a>,
    source_format: &'static str,
    write_disposition: &'static str,
    create_disposition: &'static str,
    /// CSV and JSON only: BigQuery ignores it for the other formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bad_records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    autodetect: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<Fields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_leading_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_quoted_newlines: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field_delimiter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quote: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    null_marker: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_jagged_rows: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    schema_update_options: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clustering: Option<Fields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    use_avro_logical_types: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_partitioning: Option<TimePartitioning<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TableReference<'a> {
    project_id: &'a str,
    dataset_id: &'a str,
    table_id: std::borrow::Cow<'a, str>,
}

/// `{"fields": [...]}`: a schema's fields, or clustering's column names.
#[derive(Serialize)]
struct Fields<'a> {
    fields: Vec<Field<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Column {
        name: &'a str,
        #[serde(rename = "type")]
        ty: &'static str,
        mode: &'static str,
    },
    Name(&'a str),
}

#[derive(Serialize)]
struct TimePartitioning<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl<'a> LoadConfiguration<'a> {
    fn new(job: &'a LoadJob, project: &'a str) -> Self {
        let csv = job.format == Format::Csv;
        Self {
            source_uris: job.source_uris(),
            destination_table: TableReference {
                project_id: job.table.project.as_deref().unwrap_or(project),
                dataset_id: &job.table.dataset,
                // One partition: `table$20261120` (BigQuery's partition decorator).
                table_id: match &job.partition_id {
                    Some(id) => format!("{}${id}", job.table.table).into(),
                    None => job.table.table.as_str().into(),
                },
            },
            source_format: match job.format {
                Format::Avro => "AVRO",
                Format::Parquet => "PARQUET",
                Format::Csv => "CSV",
                Format::Ndjson => "NEWLINE_DELIMITED_JSON",
                Format::Orc => "ORC",
            },
            write_disposition: match job.write {
                WriteDisposition::WriteAppend => "WRITE_APPEND",
                WriteDisposition::WriteTruncate => "WRITE_TRUNCATE",
                WriteDisposition::WriteEmpty => "WRITE_EMPTY",
            },
            create_disposition: match job.create {
                CreateDisposition::CreateIfNeeded => "CREATE_IF_NEEDED",
                CreateDisposition::CreateNever => "CREATE_NEVER",
            },
            max_bad_records: matches!(job.format, Format::Csv | Format::Ndjson)
                .then_some(job.max_bad_records),
            autodetect: matches!(job.schema, SchemaSpec::Autodetect).then_some(true),
            schema: match &job.schema {
                SchemaSpec::Autodetect => None,
                SchemaSpec::Columns(cols) => Some(Fields {
                    fields: cols
                        .iter()
                        .map(|c| Field::Column {
                            name: &c.name,
                            ty: bq_type(c.ty),
                            mode: if c.nullable { "NULLABLE" } else { "REQUIRED" },
                        })
                        .collect(),
                }),
            },
            // Unset, BigQuery's own default applies: 0, or a header autodetect finds.
            skip_leading_rows: job.csv.skip_leading_rows.filter(|_| csv),
            allow_quoted_newlines: csv.then_some(job.allow_quoted_newlines),
            field_delimiter: job.csv.delimiter_for_bigquery().filter(|_| csv),
            quote: job.csv.quote.as_deref().filter(|_| csv),
            null_marker: job.csv.null_marker.as_deref().filter(|_| csv),
            encoding: job
                .csv
                .encoding
                .map(conveyor_core::config::CsvEncoding::bigquery_name)
                .filter(|_| csv),
            allow_jagged_rows: (csv && job.csv.allow_jagged_rows).then_some(true),
            // BigQuery refuses them but with WRITE_APPEND or a truncate of one partition (a
            // `$` decorator); `validate` refuses the rest.
            schema_update_options: job
                .schema_update_options
                .iter()
                .filter(|_| {
                    job.write == WriteDisposition::WriteAppend
                        || (job.write == WriteDisposition::WriteTruncate
                            && job.partition_id.is_some())
                })
                .map(|o| match o {
                    SchemaUpdateOption::AllowFieldAddition => "ALLOW_FIELD_ADDITION",
                    SchemaUpdateOption::AllowFieldRelaxation => "ALLOW_FIELD_RELAXATION",
                })
                .collect(),
            clustering: (!job.clustering.is_empty()).then(|| Fields {
                fields: job.clustering.iter().map(|c| Field::Name(c)).collect(),
            }),
            use_avro_logical_types: (job.format == Format::Avro).then_some(true),
            time_partitioning: job.partition.as_ref().map(|p| TimePartitioning {
                kind: match p.kind {
                    PartitionKind::Hour => "HOUR",
                    PartitionKind::Day => "DAY",
                    PartitionKind::Month => "MONTH",
                    PartitionKind::Year => "YEAR",
                },
                field: p.field.as_deref(),
            }),
        }
    }
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
            rows: job.output_rows.unwrap_or(0),
        },
    }
}

impl BigQuery {
    /// Follows the load's series from `round`: each job is inserted (or adopted), waited on
    /// for what is left of `wait`; a transient failure moves on to the next id with the same
    /// configuration.
    async fn run_series<C: Serialize + Sync + ?Sized>(
        &self,
        job_id: &JobId,
        configuration: &C,
        wait: Duration,
        first_round: u32,
        mut adopted: bool,
    ) -> Result<LoadStatus, PortError> {
        let deadline = tokio::time::Instant::now() + wait;
        for round in first_round..=ROUNDS {
            let id = round_id(job_id, round);
            let first = match self.insert_job(&id, configuration).await? {
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
        Err(PortError::transient(format!(
            "load job {job_id} failed transiently {ROUNDS} times"
        )))
    }
}

#[async_trait]
impl Warehouse for BigQuery {
    async fn load(&self, job: &LoadJob, wait: Duration) -> Result<LoadStatus, PortError> {
        let configuration = Configuration {
            load: LoadConfiguration::new(job, &self.project),
        };
        self.run_series(&job.job_id, &configuration, wait, 1, false)
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
            return Err(PortError::not_found(format!("load job {job_id}")));
        };
        match load_state(&job) {
            LoadState::Failed {
                transient: true, ..
            } if round < ROUNDS => {
                // Run it again under the next id, with the configuration it had.
                let configuration = job.configuration.unwrap_or_default();
                self.run_series(job_id, &configuration, Duration::ZERO, round + 1, true)
                    .await
            }
            state => Ok(LoadStatus {
                state,
                adopted: true,
            }),
        }
    }

    async fn table_columns(&self, table: &TableRef) -> Result<Option<Vec<Column>>, PortError> {
        let path = format!(
            "projects/{}/datasets/{}/tables/{}",
            self.project_of(table),
            table.dataset,
            table.table
        );
        let found = match self
            .call(
                http::Method::GET,
                &path,
                &[],
                None,
                "read the table's schema",
            )
            .await
        {
            Ok(v) => v,
            Err(PortError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(flat_columns(&found["schema"]["fields"]))
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
            .ok_or_else(|| PortError::permanent(format!("no count for {table}")))
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
        self.rows_of(&sql, usize::MAX).await
    }

    async fn select(
        &self,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        self.rows_of(sql, limit).await
    }

    async fn select_as(
        &self,
        job_id: &JobId,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let (names, rows) = self.query_as(job_id.as_str(), sql).await?;
        Ok(as_maps(&names, &rows, limit))
    }
}

/// Rows as column → text maps (NULL as no entry), at most `limit`.
fn as_maps(names: &[String], rows: &[Vec<Value>], limit: usize) -> Vec<BTreeMap<String, String>> {
    rows.iter()
        .take(limit)
        .map(|cells| {
            names
                .iter()
                .zip(cells)
                .filter_map(|(n, v)| Some((n.clone(), text(v)?)))
                .collect()
        })
        .collect()
}

impl BigQuery {
    /// The first `limit` rows of `sql`, each column as text (NULL as no entry).
    async fn rows_of(
        &self,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let (names, rows) = self.query(sql).await?;
        Ok(as_maps(&names, &rows, limit))
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
            write: WriteDisposition::WriteTruncate,
            create: CreateDisposition::CreateNever,
            clustering: vec!["region".into()],
            max_bad_records: 2,
            schema_update_options: vec![SchemaUpdateOption::AllowFieldAddition],
            ..LoadJob::new(
                JobId::parse("cv-load-x-a1").unwrap(),
                vec![ObjectRef {
                    bucket: "landing".parse().unwrap(),
                    name: "sales/a.csv".parse().unwrap(),
                    generation: "1".into(),
                    size: None,
                }],
                TableRef::parse("ds.t").unwrap(),
                Format::Csv,
            )
            .with_header_row()
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
        assert!(
            c.get("schemaUpdateOptions").is_none(),
            "BigQuery refuses schema update options with WRITE_TRUNCATE on a table: {c}"
        );
        let appending = LoadJob {
            write: WriteDisposition::WriteAppend,
            ..job.clone()
        };
        let c = load_configuration(&appending, "proj-123");
        assert_eq!(c["schemaUpdateOptions"][0], "ALLOW_FIELD_ADDITION");
        let parquet = LoadJob {
            format: Format::Parquet,
            ..job
        };
        let c = load_configuration(&parquet, "proj-123");
        assert!(
            c.get("maxBadRecords").is_none(),
            "ignored by BigQuery for Parquet: {c}"
        );
    }
}
