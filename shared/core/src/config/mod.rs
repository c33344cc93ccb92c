//! The pipeline configuration file: one YAML (or JSON) file declares every pipeline.
//!
//! # Layout
//! - `mod.rs`: the configuration types, each field documented as it appears in the file, and
//!   the BigQuery limits the file is bounded by ([`MAX_RECORD_BYTES`], [`MAX_LOAD_URIS`]).
//! - `engines/`: the batch engines' specs (`engine: local | ssh | sql | dataproc_serverless |
//!   dataproc_cluster | dataflow_flex | data_fusion | cloud_run_job | http`), one file
//!   each, with what their states mean; [`BatchSpec`] dispatches to them.
//! - `job.rs`: `jobs` (and `for_each` rows) and `load.batch` (marker and window batches).
//! - `messages.rs`: message triggers (`trigger.topic`): Pub/Sub messages into rows.
//! - `pattern.rs`: object path patterns with named captures, and `{name}` templates.
//! - `sinks.rs`: additional run-log sinks (a PostgreSQL table).
//! - `stage.rs`: the stage section: sources (local path, S3, Cloud Storage, https), object
//!   name templates, and the checks that keep credentials out of the file.
//! - `schema.rs`: the file's JSON Schema (`conveyor schema`), derived from these types.
//! - `validate/`: loading with *every* error reported, each with its field path and line, one
//!   file per role (sections, pipelines, schedules, loads, jobs).
//! - `deploy.rs`: what a valid file still needs to run deployed on Google Cloud (`conveyor
//!   validate --for gcp`).
//!
//! The configuration depends on [`crate::names`], [`crate::format`] and [`crate::shell`] only:
//! the ports and the schedules build on it, never the other way round.
//!
//! # Example
//! ```yaml
//! environment: dev
//! run_log: { table: ops.conveyor_run_log }
//! pipelines:
//!   - name: sales
//!     trigger:
//!       object: { bucket: landing, pattern: "sales/{date}/*.csv" }
//!     load:
//!       table: "analytics.sales_{date}"
//!       format: CSV
//!     batch:
//!       engine: local
//!       command: "echo aggregating {table}"
//!     poll: { timeout: 10m, max_attempts: 3 }
//! ```

mod checks;
mod csv;
mod deploy;
mod engines;
mod job;
mod lineage;
mod load_actions;
mod messages;
mod pattern;
pub(crate) mod schema;
mod sinks;
mod stage;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use checks::{Check, Columns, Fresh, RowCount, Severity};
pub use csv::{CsvEncoding, CsvOptions};
pub use deploy::{DeployTarget, deployment_issues};
pub(crate) use engines::render_parameter;
pub use engines::{
    BatchSpec, CLOUD_RUN_JOB_ID_ENV, CloudRunJob, ClusterSpec, DATE_PLACEHOLDERS,
    DEFAULT_CALL_TIMEOUT, DataFusion, DataFusionRun, DataflowFlex, DataprocCluster,
    DataprocServerless, HttpJob, HttpStatus, LocalBatch, PigJob, PySparkJob, SparkJob, SparkSqlJob,
    SqlJob, SshBatch, date_offset, derived_value, parameter_placeholders, secret_name,
};
pub(crate) use job::truthy as job_truthy;
pub use job::{
    BadFiles, Ended, ForEach, ForEachRow, Job, LoadBatch, MarkerBatch, MarkerCovers, RunIf,
    RunLogDestination, When, WindowBatch,
};
use job::{RUN_ACTIVE, RUN_KEY};
pub use lineage::LineageConfig;
pub use load_actions::{LoadOrder, OnFailure, OnSuccess, StartAfter, Webhook};
pub use messages::TopicName;
pub(crate) use pattern::table_safe;
pub use pattern::{PathPattern, PatternError, placeholders, render};
pub use schema::json_schema_text;
pub use sinks::{PgTable, PostgresSink, RunLogSink};
pub use stage::{
    GcsSource, HttpsSource, S3Source, S3Verify, SecretRef, StageSource, StageSpec, folder,
    redact_url,
};
pub use validate::{ConfigError, ConfigIssue, check_cron, load_file, parse_str, parse_time_zone};

use crate::format::{Column, Format};
use crate::names::{BucketName, JobName, PipelineName, TableRef};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The environment name written to every run-log row (`environment` column), e.g. `dev`.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Where run-log rows go, unless a pipeline overrides it.
    #[serde(default)]
    pub run_log: RunLogTarget,
    /// Where OpenLineage run events go; without the key, none are emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<LineageConfig>,
    /// The pipelines.
    #[serde(default)]
    pub pipelines: Vec<Pipeline>,
}

fn default_environment() -> String {
    "dev".to_owned()
}

impl Config {
    /// The pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name.as_str() == name)
    }

    /// The run-log table of `pipeline` (its own, else the file's).
    pub fn run_log_table(&self, pipeline: &Pipeline) -> TableRef {
        pipeline
            .run_log
            .as_ref()
            .map_or_else(|| self.run_log.table.clone(), |r| r.table.clone())
    }

    /// The run-log target of `pipeline` (its own, else the file's); the file's for events of
    /// no pipeline.
    pub(crate) fn run_log_target<'a>(&'a self, pipeline: Option<&'a Pipeline>) -> &'a RunLogTarget {
        pipeline
            .and_then(|p| p.run_log.as_ref())
            .unwrap_or(&self.run_log)
    }
}

/// The run-log table, and the sinks that receive its rows too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunLogTarget {
    /// `dataset.table` (or `project.dataset.table`) of the run log.
    pub table: TableRef,
    /// A PostgreSQL (Cloud SQL) table that receives every run-log row as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSink>,
}

impl RunLogTarget {
    /// The additional sinks, in a fixed order.
    pub fn sinks(&self) -> Vec<RunLogSink> {
        self.postgres
            .iter()
            .cloned()
            .map(RunLogSink::Postgres)
            .collect()
    }
}

impl Default for RunLogTarget {
    fn default() -> Self {
        Self {
            table: TableRef {
                project: None,
                dataset: "conveyor".to_owned(),
                table: "run_log".to_owned(),
            },
            postgres: None,
        }
    }
}

/// One pipeline: what starts it, what it stages, loads and runs, and how the run is followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Unique name; part of run and job ids.
    pub name: PipelineName,
    /// An inactive pipeline ignores every trigger (and loses its schedule when deployed).
    #[serde(default = "yes")]
    pub active: bool,
    /// Free text for people.
    #[serde(default)]
    pub description: Option<String>,
    /// What starts a run.
    #[serde(default)]
    pub trigger: Trigger,
    /// Copy source data into the landing bucket.
    #[serde(default)]
    pub stage: Option<StageSpec>,
    /// Load each arriving object into a table.
    #[serde(default)]
    pub load: Option<LoadSpec>,
    /// The jobs to run in order after the load (or on a schedule, by hand, or after other
    /// pipelines when there is no load): each starts when the one before it SUCCEEDED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
    /// A single job, as the file may still write it: read as `jobs: [{ name: batch, … }]`
    /// (always `None` once the file is loaded).
    #[serde(default, skip_serializing)]
    pub batch: Option<BatchSpec>,
    /// How jobs are followed to their end (a job's own `poll` overrides it).
    #[serde(default)]
    pub poll: PollPolicy,
    /// This pipeline's own run-log table.
    #[serde(default)]
    pub run_log: Option<RunLogTarget>,
    /// Data-quality checks run once every job of a run SUCCEEDED (or its load, without
    /// jobs), before the run ends: a failing `error` check ends it FAILED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// When each run date's run should have SUCCEEDED (a freshness deadline): the poll tick
    /// records one `MISSED` row and raises one alert for a date that has not by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// At most this many runs of the pipeline going at once: a further start is recorded
    /// QUEUED and waits; queued runs start in run-date order when a run ends (or on a poll
    /// tick). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_runs: Option<u32>,
    /// What else happens when a run of this pipeline ends in failure (FAILED with no retry
    /// left, TIMED_OUT, a failed load, REJECTED), besides its run-log row and the alerts
    /// topic: `[{ publish: TOPIC }, { webhook: { url_secret: projects/P/secrets/NAME } }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<OnFailure>,
    /// How long a whole run may take, from its start to its end (every job, retry and wait
    /// included): past it the poll tick cancels the run's running jobs, starts no further
    /// job and ends the run `TIMED_OUT`. Unset: no limit (each attempt still has
    /// `poll.timeout`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub timeout: Option<Duration>,
    /// What a paused pipeline (`conveyor pause`) does with its arrivals and ticks.
    #[serde(default, skip_serializing_if = "PauseSettings::is_default")]
    pub pause: PauseSettings,
}

/// What a paused pipeline does with what would have started a run:
/// `pause: { arrivals: hold }` (the default) or `pause: { arrivals: skip }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseSettings {
    /// `hold`: each arrival and tick while paused is recorded as a `PAUSED` row and started
    /// by `conveyor resume`; `skip`: recorded as `PAUSED` and never started (a `trigger
    /// --date` or `backfill` starts the dates later).
    #[serde(default)]
    pub arrivals: PausedArrivals,
}

impl PauseSettings {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// What becomes of a paused pipeline's arrivals and ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PausedArrivals {
    /// Recorded, and started by `conveyor resume`.
    #[default]
    Hold,
    /// Recorded, never started.
    Skip,
}

/// A pipeline's freshness deadline: `expect: { by: "06:00", time_zone: Europe/Paris, every: day }`
/// (each run date's run by a time of day), or `expect: { within: 26h }` (a run SUCCEEDED at
/// most that long ago), or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The local time (`HH:MM`, 24-hour) by which the run of each day's run date should have
    /// SUCCEEDED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub by: Option<String>,
    /// The longest time since the end of the pipeline's last SUCCEEDED run: past it the poll
    /// tick records one `MISSED` row and raises one alert (once per last success). Counted
    /// from the last success only: a pipeline that never succeeded is covered by `by`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub within: Option<Duration>,
    /// IANA time zone of `by` (and of the day it names). Default `Etc/UTC`.
    #[serde(default = "utc")]
    #[schemars(schema_with = "schema::time_zone")]
    pub time_zone: String,
    /// How often a run is expected: `day` (one run date a day).
    #[serde(default)]
    pub every: ExpectEvery,
}

/// How often a run is expected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExpectEvery {
    /// One run date a day.
    #[default]
    Day,
}

impl Expect {
    /// The time `by` on `date` in `time_zone`, in UTC; `None` without `by`, when `by` or the
    /// zone does not parse (validation refuses both) or the local time does not exist that day.
    pub fn deadline(&self, date: chrono::NaiveDate) -> Option<chrono::DateTime<chrono::Utc>> {
        let zone = parse_time_zone(&self.time_zone).ok()?;
        let time = chrono::NaiveTime::parse_from_str(self.by.as_deref()?, "%H:%M").ok()?;
        date.and_time(time)
            .and_local_timezone(zone)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

fn yes() -> bool {
    true
}

impl Pipeline {
    /// The names `trigger.object.pattern` captures, in order (none without an object trigger).
    pub fn captures(&self) -> &[String] {
        self.trigger
            .object
            .as_ref()
            .map_or(&[], |o| o.pattern.names())
    }

    /// The job called `name`, with its index.
    pub fn job(&self, name: &str) -> Option<(usize, &Job)> {
        self.jobs
            .iter()
            .enumerate()
            .find(|(_, j)| j.name.as_str() == name)
    }

    /// Whether the jobs form a graph (`needs`, `run_if` or `when` on any job) rather than a
    /// line where a failure ends the run at once.
    pub fn has_rules(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| !j.needs.is_empty() || j.run_if != RunIf::AllSucceeded || j.when.is_some())
    }

    /// The indexes of the jobs job `index` needs: its `needs` when any job of the pipeline
    /// declares them, else the job before it.
    pub fn needs_of(&self, index: usize) -> Vec<usize> {
        if self.jobs.iter().any(|j| !j.needs.is_empty()) {
            self.jobs.get(index).map_or_else(Vec::new, |job| {
                job.needs
                    .iter()
                    .filter_map(|n| self.job(n.as_str()).map(|(i, _)| i))
                    .collect()
            })
        } else if index > 0 && index < self.jobs.len() {
            vec![index - 1]
        } else {
            Vec::new()
        }
    }

    /// The jobs that start with the run: those that need nothing.
    pub fn first_jobs(&self) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|i| self.needs_of(*i).is_empty())
            .collect()
    }

    /// The jobs that need job `index`.
    pub fn dependents_of(&self, index: usize) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|i| self.needs_of(*i).contains(&index))
            .collect()
    }

    /// The poll policy of `job`: its own, else the pipeline's.
    pub(crate) fn poll_for<'a>(&'a self, job: &'a Job) -> &'a PollPolicy {
        job.poll.as_ref().unwrap_or(&self.poll)
    }

    /// Reads the shorthands of the file in their general form: `batch:` becomes the one job
    /// `batch`, and a Data Fusion job's `runs` becomes its `for_each` rows. Idempotent.
    ///
    /// # Errors
    /// A field path and message when both forms are written.
    pub(crate) fn normalize(&mut self) -> Result<(), (String, String)> {
        if let Some(batch) = self.batch.take() {
            if !self.jobs.is_empty() {
                return Err((
                    "batch".to_owned(),
                    "write either `batch` (one job) or `jobs`, not both".to_owned(),
                ));
            }
            self.jobs.push(Job {
                name: JobName::batch(),
                spec: batch,
                for_each: None,
                poll: None,
                needs: Vec::new(),
                run_if: RunIf::default(),
                when: None,
                checks: Vec::new(),
                run_log: Vec::new(),
                db: None,
                table: None,
            });
        }
        for (i, job) in self.jobs.iter_mut().enumerate() {
            if let BatchSpec::DataFusion(f) = &mut job.spec
                && !f.runs.is_empty()
            {
                if job.for_each.is_some() {
                    return Err((
                        format!("jobs[{i}].runs"),
                        "write either `runs` or `for_each`, not both".to_owned(),
                    ));
                }
                let rows = f
                    .rows()
                    .map(|(key, row)| {
                        let mut cols: BTreeMap<String, serde_json::Value> = row
                            .args
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect();
                        cols.insert(RUN_KEY.to_owned(), serde_json::Value::String(key));
                        cols.insert(RUN_ACTIVE.to_owned(), serde_json::Value::Bool(row.active));
                        cols
                    })
                    .collect();
                f.runs.clear();
                job.for_each = Some(ForEach {
                    table: None,
                    rows,
                    active_column: RUN_ACTIVE.to_owned(),
                    key_column: Some(RUN_KEY.to_owned()),
                });
            }
        }
        Ok(())
    }
}

/// What starts a run. Several may be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Start on the arrival of an object matching a pattern.
    #[serde(default)]
    pub object: Option<ObjectTrigger>,
    /// Start on a cron schedule (Cloud Scheduler in production).
    #[serde(default)]
    pub schedule: Option<ScheduleTrigger>,
    /// Allow starts by hand (`curl`, `conveyor run`). Default `true`.
    #[serde(default = "yes")]
    pub manual: bool,
    /// Start once every listed pipeline has a SUCCEEDED run for the same run date (fan-in):
    /// that date becomes this run's `{date}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<PipelineName>,
    /// Load each message published to this Pub/Sub topic as rows (a push subscription to the
    /// load function's `/messages/<pipeline>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicName>,
}

impl Default for Trigger {
    fn default() -> Self {
        Self {
            object: None,
            schedule: None,
            manual: true,
            after: Vec::new(),
            topic: None,
        }
    }
}

/// Object-arrival trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectTrigger {
    /// The watched bucket.
    pub bucket: BucketName,
    /// Object name pattern, e.g. `sales/{date}/*.avro`; captures feed table names and batch
    /// parameters.
    pub pattern: PathPattern,
}

/// Schedule trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Five-field cron expression (`0 2 * * *`: minute hour day-of-month month day-of-week)
    /// as Cloud Scheduler reads it, evaluated in `time_zone`. No seconds field, `L`, `W`, `#`
    /// or `?`.
    #[schemars(schema_with = "schema::cron")]
    pub cron: String,
    /// IANA time zone of the schedule (Cloud Scheduler's `timeZone`). Default `Etc/UTC`.
    #[serde(default = "utc")]
    #[schemars(schema_with = "schema::time_zone")]
    pub time_zone: String,
}

fn utc() -> String {
    "Etc/UTC".to_owned()
}

/// How an arriving object is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Destination `dataset.table`, with `{capture}` placeholders from the trigger pattern.
    /// Capture values are made table-safe (`2026-11-20` → `2026_11_20`).
    pub table: String,
    /// File format.
    pub format: Format,
    /// What happens to existing rows.
    #[serde(default)]
    pub write_disposition: WriteDisposition,
    /// Whether a missing table is created.
    #[serde(default)]
    pub create_disposition: CreateDisposition,
    /// `autodetect` (the default) or a list of columns `{name, type, mode}`.
    #[serde(default)]
    pub schema: SchemaSpec,
    /// Time partitioning of the table.
    #[serde(default)]
    pub partition: Option<Partition>,
    /// CSV: leading lines to skip, the same as `csv.skip_leading_rows` (kept for files that
    /// set it here; give one or the other). Unset: see `csv.skip_leading_rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_leading_rows: Option<u64>,
    /// Whether the files are gzip-compressed: `auto` (the default: a file that starts as a
    /// gzip stream is, as BigQuery reads it), `gzip` (every file is), `none` (no file is).
    /// CSV and NDJSON only (Avro and Parquet compress inside the file).
    #[serde(default)]
    pub compression: Compression,
    /// CSV: how the files are read (delimiter, quote, NULL marker, encoding, jagged rows,
    /// leading rows), as BigQuery's CSV load options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// Bad rows a load may skip before it fails (BigQuery's `maxBadRecords`). Default 0:
    /// one bad row fails the load and nothing is loaded.
    #[serde(default)]
    pub max_bad_records: u64,
    /// CSV: whether a quoted value may contain newlines (BigQuery's `allowQuotedNewlines`).
    /// Default `false`, as in BigQuery.
    #[serde(default)]
    pub allow_quoted_newlines: bool,
    /// Schema changes a load may make to an existing table: `ALLOW_FIELD_ADDITION`,
    /// `ALLOW_FIELD_RELAXATION`.
    #[serde(default)]
    pub schema_update_options: Vec<SchemaUpdateOption>,
    /// Clustering columns of a table the load creates (at most four).
    #[serde(default)]
    pub clustering: Vec<String>,
    /// Load arrivals together: every object of a folder when its marker arrives
    /// (`{ marker: _SUCCESS }`), or the arrivals of a time window (`{ window: 5m }`).
    #[serde(default)]
    pub batch: Option<LoadBatch>,
    /// Object names that are not data, as patterns matched against each path segment (`*`
    /// any run of characters). Default: `.*`, `_*` and `*.tmp` (hidden files, Hadoop and
    /// Spark markers such as `_SUCCESS` and `_temporary/`, gsutil's temporary files).
    /// `ignore: []` loads everything the trigger pattern matches.
    #[serde(default)]
    pub ignore: Option<Vec<String>>,
    /// Whether an arrival's generation is checked against the object's live generation before
    /// it loads (one Cloud Storage metadata read per arrival). Default `true`: an event for an
    /// overwritten or deleted generation is recorded as superseded and not loaded, so each
    /// generation's content loads once. `false` saves that read and suits buckets whose
    /// objects are never overwritten (a new name per file, a retention policy): an overwrite
    /// would then load the newer content under the older event too. An arrival that names no
    /// generation (a hand-written request) is always checked.
    #[serde(default = "yes")]
    pub check_generation: bool,
    /// The largest record (a CSV record, an NDJSON line) a load reads, in bytes. Default
    /// 100,000,000 (100 MB, BigQuery's largest CSV and JSON row); at most that. A file with a
    /// longer record fails its load as bad input (never retried), and the embedded warehouse
    /// never holds more than about this much of one record in memory.
    #[serde(default = "max_record_bytes")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_record_bytes: u64,
    /// `by_name`: the loads of one table are applied one at a time, in object name order
    /// (GEBI's `ORDERME`). Default: each arrival loads as it comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<LoadOrder>,
    /// `{ marker: _HISTORYDONE }`: with `order: by_name`, nothing loads until the marker
    /// exists in a source's folder or a folder above it; then the backlog loads in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_after: Option<StartAfter>,
    /// `{ delete_source: true }` or `{ move_to: "done/{path}" }`: what becomes of each
    /// source once its load job is DONE (exactly once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<OnSuccess>,
}

/// The default (and the largest) `load.max_record_bytes`: BigQuery's 100 MB row limit for CSV
/// and JSON.
pub const MAX_RECORD_BYTES: u64 = 100_000_000;

/// The most source URIs one BigQuery load job takes; a larger batch of objects is split into
/// several jobs. The default (and the largest) `load.batch.max_files`; the ports re-export it
/// as `ports::MAX_LOAD_URIS`.
pub const MAX_LOAD_URIS: usize = 10_000;

/// BigQuery's quota of load jobs per table per day (`load.batch.auto` stays under it).
pub const LOAD_JOBS_PER_TABLE_PER_DAY: u64 = 1_500;

/// `load.batch.auto`'s window when `max_delay` is not set: 62 s, at most 1,394 windows a
/// day (86,400 s / 62 s), which leaves about 100 of the 1,500 daily load jobs for retries,
/// quarantine reloads and loads by hand.
pub const AUTO_WINDOW: std::time::Duration = std::time::Duration::from_secs(62);

/// The shortest `load.batch.auto.max_delay`: 58 s is the shortest whole number of seconds
/// whose windows fit a day in 1,500 jobs (86,400 s / 1,500 = 57.6 s).
pub const AUTO_MIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(58);

fn max_record_bytes() -> u64 {
    MAX_RECORD_BYTES
}

/// `template` rendered: a `project.dataset.table` template's project part takes the
/// captures as they are (a project id has dashes, never underscores); the dataset and table
/// take their table-safe forms.
///
/// # Errors
/// When a placeholder has no value.
pub fn render_table(
    template: &str,
    raw: &BTreeMap<String, String>,
    safe: &BTreeMap<String, String>,
) -> Result<String, String> {
    match template.split_once('.') {
        Some((project, rest)) if rest.contains('.') => {
            Ok(format!("{}.{}", render(project, raw)?, render(rest, safe)?))
        }
        _ => render(template, safe),
    }
}

/// The default of `load.ignore`.
pub(crate) const DEFAULT_IGNORE: &[&str] = &[".*", "_*", "*.tmp"];

impl LoadSpec {
    /// Whether a batch's bad files are quarantined (`load.batch.bad_files: quarantine`).
    pub fn quarantines(&self) -> bool {
        match &self.batch {
            Some(LoadBatch::Marker(m)) => m.bad_files == BadFiles::Quarantine,
            Some(LoadBatch::Window(w)) => w.bad_files == BadFiles::Quarantine,
            None => false,
        }
    }

    /// The CSV options a load job carries: `csv`, with the top-level `skip_leading_rows`
    /// when `csv` does not set it.
    pub fn csv_options(&self) -> CsvOptions {
        let mut csv = self.csv.clone();
        csv.skip_leading_rows = csv.skip_leading_rows.or(self.skip_leading_rows);
        csv
    }

    /// Whether `name` is not data by `ignore` (or its default): some path segment matches
    /// one of the patterns.
    pub fn ignores(&self, name: &str) -> bool {
        let matches = |pattern: &str| name.split('/').any(|seg| glob(pattern, seg));
        match &self.ignore {
            Some(patterns) => patterns.iter().any(|p| matches(p)),
            None => DEFAULT_IGNORE.iter().any(|p| matches(p)),
        }
    }
}

/// `*` matches any run of characters, everything else itself.
///
/// In time linear in `pattern` × `text` at worst (the usual wildcard matcher: on a mismatch,
/// retry from the last `*` one character further): a recursive matcher tries every split
/// for every `*`, which is exponential in the number of stars (`*a*a*a*a*b` against a long
/// name of `a`s), and the names come from events. Bytes are compared: a literal is valid
/// UTF-8, so it can only match from a character boundary, as a character-wise match would.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and where in the text it was tried.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, ti));
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((resume, tried)) => {
                    pi = resume;
                    ti = tried + 1;
                    star = Some((resume, ti));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether a load's files are gzip-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Each file is read as gzip when it starts with gzip's magic bytes.
    #[default]
    Auto,
    /// Every file is gzip (one that is not fails its load as bad input).
    Gzip,
    /// No file is compressed (one that looks like gzip fails with a clear error).
    None,
}

/// A schema change a load job may make to an existing table (BigQuery's
/// `schemaUpdateOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchemaUpdateOption {
    /// New nullable columns may be added.
    AllowFieldAddition,
    /// `REQUIRED` columns may become `NULLABLE`.
    AllowFieldRelaxation,
}

/// BigQuery's write disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteDisposition {
    /// Add the rows to the table.
    #[default]
    WriteAppend,
    /// Replace the table's rows.
    WriteTruncate,
    /// Fail when the table has rows.
    WriteEmpty,
}

/// BigQuery's create disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CreateDisposition {
    /// Create the table when it is missing.
    #[default]
    CreateIfNeeded,
    /// Fail when the table is missing.
    CreateNever,
}

/// A table schema: detected from the file or declared.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SchemaSpec {
    /// The word `autodetect`.
    #[default]
    #[serde(with = "autodetect")]
    #[schemars(schema_with = "schema::autodetect")]
    Autodetect,
    /// Declared columns.
    Columns(Vec<Column>),
}

mod autodetect {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("autodetect")
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let s = String::deserialize(d)?;
        if s.eq_ignore_ascii_case("autodetect") {
            Ok(())
        } else {
            Err(serde::de::Error::custom(
                "schema must be `autodetect` or a list of columns",
            ))
        }
    }
}

/// Time partitioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// The partitioning column; none means ingestion time.
    #[serde(default)]
    pub field: Option<String>,
    /// Granularity.
    #[serde(default, rename = "type")]
    pub kind: PartitionKind,
    /// Load into one partition (`table$20261120`): the partition id, from the trigger's
    /// captures, as `YYYYMMDD` (DAY), `YYYYMMDDHH` (HOUR), `YYYYMM` (MONTH) or `YYYY` (YEAR).
    /// Each capture `{c}` also has `{c_nodash}`, its digits only (`2026-11-20` → `20261120`).
    /// `WRITE_TRUNCATE` then replaces only that partition's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decorator: Option<String>,
}

impl Partition {
    /// The partition id the decorator names for `captures` (raw capture values).
    ///
    /// # Errors
    /// When a placeholder has no value, or the id is not the granularity's digits.
    pub fn partition_id(
        &self,
        captures: &BTreeMap<String, String>,
    ) -> Option<Result<String, String>> {
        let template = self.decorator.as_ref()?;
        let mut vars = captures.clone();
        for (name, value) in captures {
            vars.insert(
                format!("{name}_nodash"),
                value.chars().filter(char::is_ascii_digit).collect(),
            );
        }
        Some(render(template, &vars).and_then(|id| {
            let digits = match self.kind {
                PartitionKind::Hour => 10,
                PartitionKind::Day => 8,
                PartitionKind::Month => 6,
                PartitionKind::Year => 4,
            };
            if id.len() == digits && id.bytes().all(|b| b.is_ascii_digit()) {
                Ok(id)
            } else {
                Err(format!(
                    "partition decorator {template:?} gives {id:?}: a {:?} partition id is {digits} digits",
                    self.kind
                ))
            }
        }))
    }

    /// The first instant of partition `id` as the embedded warehouse writes its values
    /// (`2026-11-20T08`, `2026-11-20`, `2026-11`, `2026`): the prefix every value in it has.
    pub fn prefix_of(id: &str) -> String {
        let part = |a: usize, b: usize| id.get(a..b).unwrap_or_default();
        match id.len() {
            10 => format!(
                "{}-{}-{}T{}",
                part(0, 4),
                part(4, 6),
                part(6, 8),
                part(8, 10)
            ),
            8 => format!("{}-{}-{}", part(0, 4), part(4, 6), part(6, 8)),
            6 => format!("{}-{}", part(0, 4), part(4, 6)),
            _ => id.to_owned(),
        }
    }
}

/// Partition granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PartitionKind {
    /// Hourly.
    Hour,
    /// Daily (the default).
    #[default]
    Day,
    /// Monthly.
    Month,
    /// Yearly.
    Year,
}

/// How a batch is followed: success states, timeout, retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollPolicy {
    /// States that count as success. Default: the engine's terminal success state. A
    /// non-terminal state such as `RUNNING` is refused here (seed 004's false success).
    #[serde(default)]
    pub success_states: Option<Vec<String>>,
    /// How long one attempt may run before it is cancelled and the run ends `TIMED_OUT`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub timeout: Duration,
    /// Attempts in all, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// How often a running job is checked.
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub interval: Duration,
    /// Delay before a failed attempt is resubmitted.
    #[serde(default)]
    pub backoff: Backoff,
}

fn default_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_attempts() -> u32 {
    3
}
fn default_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            success_states: None,
            timeout: default_timeout(),
            max_attempts: default_attempts(),
            interval: default_interval(),
            backoff: Backoff::default(),
        }
    }
}

/// Exponential backoff between attempts: `initial * multiplier^(attempt-1)`, capped at `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay after the first failure.
    #[serde(default = "default_initial", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub initial: Duration,
    /// Growth factor per attempt.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Upper bound.
    #[serde(default = "default_max", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub max: Duration,
}

fn default_initial() -> Duration {
    Duration::from_secs(10)
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_max() -> Duration {
    Duration::from_secs(600)
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            multiplier: default_multiplier(),
            max: default_max(),
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }
}

impl PollPolicy {
    /// The success states in force for `batch`.
    pub fn success_states(&self, batch: &BatchSpec) -> Vec<String> {
        self.success_states
            .clone()
            .unwrap_or_else(|| batch.default_success_states())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_project_part_keeps_its_dashes_and_the_rest_is_made_table_safe() {
        let raw: BTreeMap<String, String> = [
            ("project".to_owned(), "my-proj-42".to_owned()),
            ("date".to_owned(), "2026-11-20".to_owned()),
        ]
        .into();
        let safe: BTreeMap<String, String> = raw
            .iter()
            .map(|(k, v)| (k.clone(), table_safe(v)))
            .collect();
        assert_eq!(
            render_table("{project}.ds.sales_{date}", &raw, &safe).as_deref(),
            Ok("my-proj-42.ds.sales_2026_11_20")
        );
        assert_eq!(
            render_table("ds.sales_{date}", &raw, &safe).as_deref(),
            Ok("ds.sales_2026_11_20")
        );
    }

    #[test]
    fn a_partition_decorator_renders_digits_of_its_granularity_only() {
        let p = |kind, decorator: &str| Partition {
            field: None,
            kind,
            decorator: Some(decorator.to_owned()),
        };
        let captures: BTreeMap<String, String> = [
            ("date".to_owned(), "2026-11-20".to_owned()),
            ("hour".to_owned(), "08".to_owned()),
        ]
        .into();
        let id = |kind, d: &str| p(kind, d).partition_id(&captures).expect("a decorator");
        assert_eq!(
            id(PartitionKind::Day, "{date_nodash}"),
            Ok("20261120".to_owned())
        );
        assert_eq!(
            id(PartitionKind::Hour, "{date_nodash}{hour}"),
            Ok("2026112008".to_owned())
        );
        assert!(
            id(PartitionKind::Month, "{date_nodash}").is_err(),
            "8 digits for a month"
        );
        assert!(id(PartitionKind::Day, "{date}").is_err(), "dashes");
        assert_eq!(Partition::prefix_of("2026112008"), "2026-11-20T08");
        assert_eq!(Partition::prefix_of("202611"), "2026-11");
    }

    use super::*;

    #[test]
    fn default_ignore_skips_hidden_marker_temporary_files_and_folders() {
        let spec: LoadSpec = serde_json::from_value(serde_json::json!({
            "table": "ds.t", "format": "CSV"
        }))
        .unwrap();
        for name in [
            "in/.hidden.csv",
            "in/_SUCCESS",
            "in/_temporary/0/part.csv",
            "in/x.csv.tmp",
        ] {
            assert!(spec.ignores(name), "{name}");
        }
        assert!(!spec.ignores("in/part-0001.csv"));
        let all: LoadSpec = serde_json::from_value(serde_json::json!({
            "table": "ds.t", "format": "CSV", "ignore": []
        }))
        .unwrap();
        assert!(!all.ignores("in/_SUCCESS"));
        let custom: LoadSpec = serde_json::from_value(serde_json::json!({
            "table": "ds.t", "format": "CSV", "ignore": ["*.done", "tmp*"]
        }))
        .unwrap();
        assert!(custom.ignores("in/a.done"));
        assert!(custom.ignores("tmpdir/a.csv"));
        assert!(!custom.ignores("in/_SUCCESS"));
    }

    /// The glob against a reference: the pattern as an anchored regex, `*` as `.*`.
    fn glob_by_regex(pattern: &str, text: &str) -> bool {
        let re = pattern
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*");
        regex::Regex::new(&format!("^(?s:{re})$"))
            .unwrap()
            .is_match(text)
    }

    #[test]
    fn glob_matches_as_the_regex_reference_does() {
        let patterns = [
            "", "*", "**", ".*", "_*", "*.tmp", "a*b", "*a*", "a*b*c", "*ab*ab", "é*", "*é", "x",
        ];
        let texts = [
            "",
            "a",
            "b",
            "ab",
            "abab",
            "aabab",
            "abc",
            "axbyc",
            ".hidden",
            "_SUCCESS",
            "x.tmp",
            "x.tmp.csv",
            ".tmp",
            "é",
            "éa",
            "aé",
            "part-0001.csv",
            "*",
        ];
        for p in patterns {
            for t in texts {
                assert_eq!(glob(p, t), glob_by_regex(p, t), "{p:?} on {t:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_the_regex_reference(p in "[ab*é.]{0,8}", t in "[abé.]{0,12}") {
            proptest::prop_assert_eq!(glob(&p, &t), glob_by_regex(&p, &t));
        }
    }

    #[test]
    fn many_stars_against_a_long_name_do_not_explode() {
        // Exponential for a recursive matcher (C(1000, 5) splits); a few thousand steps here.
        let name = "a".repeat(1000);
        assert!(!glob("*a*a*a*a*a*b", &name));
        assert!(glob("*a*a*a*a*a*", &name));
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(5),
        };
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(3), Duration::from_secs(4));
        assert_eq!(b.delay(4), Duration::from_secs(5));
        assert_eq!(b.delay(400), Duration::from_secs(5));
    }
}
