//! The ports: the traits every step depends on. Adapters implement them for Google Cloud
//! (production) and for one machine (embedded); a step never names a cloud SDK.
//!
//! Every method that causes a side effect is idempotent on the id it is given, because
//! Pub/Sub delivers at least once.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use crate::config::{
    BatchSpec, CreateDisposition, Partition, RunLogSink, SchemaSpec, SchemaUpdateOption, SecretRef,
    StageSource, WriteDisposition,
};
use crate::event::{ConveyorEvent, ObjectRef};
use crate::format::{BadRow, Column, Format};
use crate::names::{BucketName, JobId, ObjectName, RunId, TableRef};

/// A readable byte stream.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// The error of a port call, classified the ways callers act on: is it worth retrying, and
/// for the few callers that make something idempotent, did it exist already or did a
/// condition they set fail. Adapters classify once, where the answer is read (the Google
/// adapters in `conveyor_gcp::rest::classify`); callers match the variant, never the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Retrying later may succeed (backend down, quota, timeout, a refused token, a port this
    /// process did not wire).
    #[error("transient: {0}")]
    Transient(Cause),
    /// Retrying cannot succeed (bad data, refused request).
    #[error("{0}")]
    Permanent(Cause),
    /// The rows of a load were bad; nothing was loaded.
    #[error("{} bad row(s); first: row {}: {}", .0.len(), .0.first().map_or(0, |b| b.row), .0.first().map_or("", |b| b.reason.as_str()))]
    BadRows(Vec<BadRow>),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(Cause),
    /// What the call creates exists already (HTTP 409, Google's `ALREADY_EXISTS`): for a
    /// deterministic id, the earlier delivery's, to adopt.
    #[error("conflict: {0}")]
    Conflict(Cause),
    /// A condition the call set does not hold (HTTP 412, Google's `FAILED_PRECONDITION`): the
    /// generation asked for is not the live one, the resource is not in a state that allows it.
    #[error("precondition failed: {0}")]
    Precondition(Cause),
}

impl PortError {
    /// A failure that may pass.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(Cause::new(message))
    }

    /// A failure that will not pass.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(Cause::new(message))
    }

    /// What was asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(Cause::new(message))
    }

    /// What is created exists already.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(Cause::new(message))
    }

    /// A condition set on the call does not hold.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::Precondition(Cause::new(message))
    }

    /// Whether a retry may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// This error keeping `source`, the typed error it was classified from (an HTTP answer's
    /// status and reason), for callers that need more than the class. Its text is not added:
    /// the message already says it.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        if let Some(cause) = self.cause_mut() {
            cause.source = Some(Arc::new(source));
        }
        self
    }

    /// The typed error this one was classified from, when the adapter kept it (see
    /// [`Self::with_source`]); downcast it to the adapter's error type.
    pub fn origin(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Transient(c)
            | Self::Permanent(c)
            | Self::NotFound(c)
            | Self::Conflict(c)
            | Self::Precondition(c) => c.source.as_deref(),
            Self::BadRows(_) => None,
        }
    }

    fn cause_mut(&mut self) -> Option<&mut Cause> {
        match self {
            Self::Transient(c)
            | Self::Permanent(c)
            | Self::NotFound(c)
            | Self::Conflict(c)
            | Self::Precondition(c) => Some(c),
            Self::BadRows(_) => None,
        }
    }
}

/// The cause of a [`PortError`]: a message for people (it reads as text: `&*cause` is the
/// message), and, when the adapter kept it, the typed error it was classified from.
///
/// The source is not reported by [`std::error::Error::source`]: the message says what it
/// says, and an error chain printed whole (`{:#}`) would say it twice.
#[derive(Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// A cause with `message` and no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The typed error it came from, if kept.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl std::ops::Deref for Cause {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{:?} (from {s:?})", self.message),
            None => write!(f, "{:?}", self.message),
        }
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<Cause> for String {
    fn from(c: Cause) -> Self {
        c.message
    }
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object.
    pub object: ObjectRef,
    /// A content fingerprint: ETag, MD5 or CRC32C (for change detection).
    pub etag: String,
    /// Last update.
    pub updated: DateTime<Utc>,
}

/// Buckets of objects: Cloud Storage, or a directory per bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Writes `body` to `bucket/name`, replacing any object there, and returns its metadata.
    /// The object appears whole or not at all.
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError>;
    /// Opens `bucket/name` for reading.
    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError>;
    /// The object's metadata, or `None` when it does not exist.
    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError>;
    /// Every object whose name starts with `prefix`, in name order.
    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError>;
    /// One page of the objects whose name starts with `prefix` (the first page without a
    /// token), so a large folder is never held whole. The default is one page with everything.
    async fn list_page(
        &self,
        bucket: &BucketName,
        prefix: &str,
        page_token: Option<String>,
    ) -> Result<ObjectPage, PortError> {
        if page_token.is_some() {
            return Ok(ObjectPage::default());
        }
        Ok(ObjectPage {
            objects: self.list(bucket, prefix).await?,
            next: None,
        })
    }
    /// Deletes `bucket/name` when its generation is `generation` (any generation when
    /// `None`). `false` when there was nothing to delete or another generation is live.
    async fn delete(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError>;
    /// Writes `body` to `bucket/name` only if no object exists there, atomically: `None` when
    /// one already did (nothing is written). For markers and leases that two deliveries of
    /// one event may race to create.
    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError>;
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectPage {
    /// The objects of the page.
    pub objects: Vec<ObjectMeta>,
    /// The token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// Digests of an object's bytes. Each is compared only with a digest of the same kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digests {
    /// MD5, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// CRC32C, as Cloud Storage writes it: base64 of the four big-endian bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// SHA-256, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One object of a stage source, as its listing describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// Unique within the source: the S3 key, the object name, the URL, the file path.
    pub key: String,
    /// The path below the source folder, `/`-separated (`{relative}` in stage templates).
    pub relative: String,
    /// The full path: S3 key, object name, URL path, or the relative path of a local file
    /// (`{path}` in stage templates).
    pub path: String,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// An opaque version tag (S3 or HTTP ETag) that changes when the content does.
    pub etag: Option<String>,
    /// A version id (a Cloud Storage generation).
    pub version: Option<String>,
    /// Last modification.
    pub modified: Option<DateTime<Utc>>,
    /// Digests the source vouches for: the bytes read must match them.
    pub digests: Digests,
}

/// An opened source object.
pub struct Opened {
    /// The bytes.
    pub body: ByteStream,
    /// The size the reply announced (HTTP `Content-Length`), when known.
    pub size: Option<u64>,
    /// Digests the reply vouches for (HTTP `Content-MD5`, `x-goog-hash`), besides the
    /// listing's.
    pub digests: Digests,
}

/// A connected stage source: lists and opens the objects of one configured source.
#[async_trait]
pub trait Source: Send + Sync {
    /// Where it reads, without credentials (`s3://bucket/folder/`): keys the watermark.
    fn uri(&self) -> String;
    /// Every object, all pages of the listing, in key order.
    async fn list(&self) -> Result<Vec<SourceObject>, PortError>;
    /// Opens `object` for reading. A source that can pin what it reads to the listed
    /// version does (S3 `If-Match`), so a change since the listing fails the open.
    async fn open(&self, object: &SourceObject) -> Result<Opened, PortError>;
}

/// Connects the stage sources a pipeline file names: S3, other buckets, web servers, local
/// files.
#[async_trait]
pub trait Sources: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// A client for `source`, with its credentials resolved now.
    async fn connect(&self, source: &StageSource) -> Result<Arc<dyn Source>, PortError>;
}

/// A secret's value. Its `Debug` does not show it.
#[derive(Clone)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps a value.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The value.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Secrets: Secret Manager, or files under the embedded state directory.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The value of `secret`.
    async fn access(&self, secret: &SecretRef) -> Result<SecretValue, PortError>;
}

/// Where events go: Pub/Sub topics, or the in-process bus.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Publishes one event. Returns once the bus has accepted it.
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError>;
}

/// The most source URIs one BigQuery load job takes; a larger batch of objects is split into
/// several jobs.
pub const MAX_LOAD_URIS: usize = 10_000;

/// A load of objects into one table, in one job: one object for an arrival, a folder's parts
/// for a marker batch, a window's arrivals for a window batch.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadJob {
    /// Deterministic job id: the same objects and pipeline give the same id.
    pub job_id: JobId,
    /// The objects to load (at least one, at most [`MAX_LOAD_URIS`]).
    pub sources: Vec<ObjectRef>,
    /// The destination.
    pub table: TableRef,
    /// File format.
    pub format: Format,
    /// Write disposition.
    pub write: WriteDisposition,
    /// Create disposition.
    pub create: CreateDisposition,
    /// Schema.
    pub schema: SchemaSpec,
    /// Partitioning.
    pub partition: Option<Partition>,
    /// Clustering columns (at most four).
    pub clustering: Vec<String>,
    /// CSV leading rows to skip.
    pub skip_leading_rows: u64,
    /// Bad rows the job may skip before it fails (BigQuery's `maxBadRecords`; default 0).
    pub max_bad_records: u64,
    /// CSV: whether a quoted value may span lines (BigQuery's `allowQuotedNewlines`; default
    /// false).
    pub allow_quoted_newlines: bool,
    /// Schema changes the load may make to an existing table.
    pub schema_update_options: Vec<SchemaUpdateOption>,
    /// The largest record (CSV record, NDJSON line) to read, in bytes (`load.max_record_bytes`):
    /// a longer one fails the job as bad input.
    pub max_record_bytes: u64,
    /// Whether the sources' generations were checked against the live ones (the default;
    /// `load.check_generation: false` trusts the arrival's). A warehouse that reads the bytes
    /// itself (the embedded one) then loads a source only if its content is still that
    /// generation, and answers [`PortError::Precondition`] for a source overwritten since.
    pub generations_checked: bool,
}

impl LoadJob {
    /// The sources as `gs://` URIs, for messages.
    pub fn source_uris(&self) -> Vec<String> {
        self.sources.iter().map(ObjectRef::uri).collect()
    }
}

/// Where a load job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// Done: the rows are in the table.
    Done {
        /// Rows the job loaded.
        rows: u64,
    },
    /// Still running: whoever checks it next (the poll tick) finishes it.
    Running,
    /// Ended without loading anything.
    Failed {
        /// The warehouse's error.
        message: String,
        /// Whether running the load again may succeed (a backend error, not bad data).
        transient: bool,
    },
}

/// The result of starting a load job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStatus {
    /// The job's state when the call returned.
    pub state: LoadState,
    /// `true` when a job with this id already existed (a redelivery): it was adopted, not
    /// started again.
    pub adopted: bool,
}

/// The warehouse: BigQuery, or an embedded SQL database.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Starts the load job and waits up to `wait` for it to end. Idempotent on
    /// `job.job_id`: an existing job under that id is adopted (and reported as it is), never
    /// run a second time. A job still running after `wait` is [`LoadState::Running`]; its
    /// end is read later with [`Self::load_state`], so no request holds compute while the
    /// warehouse works.
    async fn load(&self, job: &LoadJob, wait: std::time::Duration)
    -> Result<LoadStatus, PortError>;
    /// The state of the load job `job_id` started earlier. A job that failed in a way that may
    /// pass is started again by the adapter (the same configuration under the next id of
    /// its series) and reported [`LoadState::Running`].
    async fn load_state(&self, job_id: &JobId) -> Result<LoadStatus, PortError>;
    /// Number of rows in `table`.
    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError>;
    /// At most `limit` rows of `table`, each column as text (NULL as no entry): a job's
    /// `for_each` configuration table.
    async fn read_table(
        &self,
        table: &TableRef,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError>;
}

/// A batch to start.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// Deterministic id for this run and attempt.
    pub job_id: JobId,
    /// The run.
    pub run_id: RunId,
    /// The attempt (1-based).
    pub attempt: u32,
    /// What to run.
    pub spec: BatchSpec,
    /// Values for `{placeholders}` in the spec.
    pub vars: BTreeMap<String, String>,
    /// The pipeline's job this batch runs (`batch` for a pipeline's single `batch:`).
    pub job: String,
    /// The `for_each` row this batch runs for, column → value (empty when the job has no
    /// `for_each`): a Data Fusion run's runtime arguments over the job's.
    pub row: BTreeMap<String, String>,
}

/// A batch submission's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The job id.
    pub job_id: JobId,
    /// `true` when a job with this id already existed and was adopted.
    pub adopted: bool,
}

/// A batch job's state as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// The engine's own state name (`RUNNING`, `SUCCEEDED`, `COMPLETED`, `JOB_STATE_DONE`, ...).
    pub state: String,
    /// Whether the engine will not change this state any more.
    pub terminal: bool,
    /// The engine's error message, when it failed.
    pub error: Option<String>,
}

/// A batch engine: Dataproc, Dataflow, Data Fusion, or a local process.
#[async_trait]
pub trait BatchEngine: Send + Sync {
    /// Why batches of `engine` (as [`BatchSpec::engine`] names it) cannot run here, or `None`
    /// when they can: checked at start-up for every job of the pipeline file.
    fn refuses(&self, engine: &str) -> Option<String> {
        let _ = engine;
        None
    }
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Starts the batch. Idempotent on `req.job_id`: an existing job is adopted.
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError>;
    /// The job's current state.
    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError>;
    /// Cancels the job (and releases what it holds). Cancelling a finished job is not an error.
    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError>;
    /// Follows the job one check further and returns its state. An engine whose submission
    /// goes on after `submit` returns (a Dataproc job waits for its ephemeral cluster before
    /// it can be submitted) carries it on here, which is why it gets the whole request; the
    /// poll step rebuilds that request from the run log. The default asks [`Self::state`].
    async fn follow(&self, req: &BatchRequest) -> Result<JobState, PortError> {
        self.state(&req.spec, &req.job_id).await
    }
    /// Releases what the job holds once it has ended in any state (the ephemeral cluster of a
    /// Dataproc job). Idempotent: releasing twice, or what is already gone, is not an error.
    /// The default holds nothing.
    async fn release(&self, _spec: &BatchSpec, _job_id: &JobId) -> Result<(), PortError> {
        Ok(())
    }
}

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
}

/// Rows to append to a table as one idempotent write: the valid objects of one Pub/Sub
/// message (or its quarantined ones).
#[derive(Debug, Clone, PartialEq)]
pub struct RowBatch {
    /// Deterministic id (pipeline, message id, and which part): a batch once written is never
    /// written again. Letters, digits, `-` and `_`.
    pub batch_id: String,
    /// The destination, created with `columns` when missing.
    pub table: TableRef,
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// Partitioning of a table the write creates.
    pub partition: Option<Partition>,
    /// Clustering columns of a table the write creates.
    pub clustering: Vec<String>,
    /// The rows, each a cell per column, already checked against the column's type: `null`,
    /// or a string (STRING; BYTES as base64; TIMESTAMP as RFC 3339 in UTC; DATE as
    /// `YYYY-MM-DD`; JSON as JSON text), an integer (INT64), a number (FLOAT64) or a boolean
    /// (BOOL).
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Tables that take rows as they come (Pub/Sub messages): BigQuery, or an embedded table.
#[async_trait]
pub trait RowSink: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Appends `batch`'s rows to its table, once: returns `false`, writing nothing, when a
    /// batch with this id was written before (a redelivered message).
    async fn insert_rows(&self, batch: &RowBatch) -> Result<bool, PortError>;
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

/// All ports, as one cheap-to-clone bundle handed to steps.
#[derive(Clone)]
pub struct Ports {
    /// Object store.
    pub store: Arc<dyn ObjectStore>,
    /// Event bus.
    pub bus: Arc<dyn EventBus>,
    /// Warehouse.
    pub warehouse: Arc<dyn Warehouse>,
    /// Batch engine.
    pub batch: Arc<dyn BatchEngine>,
    /// Run log.
    pub run_log: Arc<dyn RunLog>,
    /// Stage sources.
    pub sources: Arc<dyn Sources>,
    /// Additional run-log sinks.
    pub sinks: Arc<dyn RunLogSinks>,
    /// Tables taking rows from messages.
    pub rows: Arc<dyn RowSink>,
    /// Where the log step also publishes each event that ends a run in failure (FAILED with
    /// no retry left, TIMED_OUT, REJECTED), for Slack or e-mail integrations: the alerts
    /// topic. `None`: no alerts topic.
    pub alerts: Option<Arc<dyn EventBus>>,
}

impl Ports {
    /// Every port [`Unwired`]: a function starts from this and wires only the ports its step
    /// uses, so its binary links no other adapter.
    pub fn unwired() -> Self {
        let none = Arc::new(Unwired);
        Self {
            store: none.clone(),
            bus: none.clone(),
            warehouse: none.clone(),
            batch: none.clone(),
            run_log: none.clone(),
            sources: none.clone(),
            sinks: none.clone(),
            rows: none,
            alerts: None,
        }
    }
}

/// A port a runtime did not wire. The start-up check ([`crate::steps::check_wiring`]) refuses
/// to start a function whose step needs one; reaching one anyway is a deployment mistake, not
/// bad input: every call fails as [`PortError::Transient`], saying so, so the event is
/// answered 503 and redelivered (and dead-lettered in the end) instead of being acknowledged
/// as rejected and lost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwired;

impl Unwired {
    fn refuse<T>(port: &str) -> Result<T, PortError> {
        tracing::error!(
            port,
            "a step reached a port this function does not wire (a wiring mistake)"
        );
        Err(PortError::transient(format!(
            "this function has no {port} (a wiring mistake: see its `ports` function)"
        )))
    }
}

#[async_trait]
impl ObjectStore for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn put(
        &self,
        _: &BucketName,
        _: &ObjectName,
        _: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        Self::refuse("object store")
    }
    async fn open(&self, _: &BucketName, _: &ObjectName) -> Result<ByteStream, PortError> {
        Self::refuse("object store")
    }
    async fn head(&self, _: &BucketName, _: &ObjectName) -> Result<Option<ObjectMeta>, PortError> {
        Self::refuse("object store")
    }
    async fn list(&self, _: &BucketName, _: &str) -> Result<Vec<ObjectMeta>, PortError> {
        Self::refuse("object store")
    }
    async fn create_new(
        &self,
        _: &BucketName,
        _: &ObjectName,
        _: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        Self::refuse("object store")
    }
    async fn delete(
        &self,
        _: &BucketName,
        _: &ObjectName,
        _: Option<&str>,
    ) -> Result<bool, PortError> {
        Self::refuse("object store")
    }
}

#[async_trait]
impl EventBus for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn publish(&self, _: &ConveyorEvent) -> Result<(), PortError> {
        Self::refuse("event bus")
    }
}

#[async_trait]
impl Warehouse for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn load(&self, _: &LoadJob, _: std::time::Duration) -> Result<LoadStatus, PortError> {
        Self::refuse("warehouse")
    }
    async fn load_state(&self, _: &JobId) -> Result<LoadStatus, PortError> {
        Self::refuse("warehouse")
    }
    async fn read_table(
        &self,
        _: &TableRef,
        _: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        Self::refuse("warehouse")
    }
    async fn row_count(&self, _: &TableRef) -> Result<u64, PortError> {
        Self::refuse("warehouse")
    }
}

#[async_trait]
impl BatchEngine for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn submit(&self, _: &BatchRequest) -> Result<Submitted, PortError> {
        Self::refuse("batch engine")
    }
    async fn state(&self, _: &BatchSpec, _: &JobId) -> Result<JobState, PortError> {
        Self::refuse("batch engine")
    }
    async fn cancel(&self, _: &BatchSpec, _: &JobId) -> Result<(), PortError> {
        Self::refuse("batch engine")
    }
}

#[async_trait]
impl RunLog for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn record(&self, _: &TableRef, _: &RunLogRow) -> Result<(), PortError> {
        Self::refuse("run log")
    }
    async fn rows(&self, _: &TableRef, _: &RunLogQuery) -> Result<Vec<RunLogRow>, PortError> {
        Self::refuse("run log")
    }
    async fn open_batches(
        &self,
        _: &TableRef,
        _: DateTime<Utc>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        Self::refuse("run log")
    }
}

#[async_trait]
impl Sources for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn connect(&self, _: &StageSource) -> Result<Arc<dyn Source>, PortError> {
        Self::refuse("stage sources")
    }
}

#[async_trait]
impl RunLogSinks for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn record(&self, _: &RunLogSink, _: &RunLogRow) -> Result<(), PortError> {
        Self::refuse("run-log sinks")
    }
}

#[async_trait]
impl RowSink for Unwired {
    fn wired(&self) -> bool {
        false
    }
    async fn insert_rows(&self, _: &RowBatch) -> Result<bool, PortError> {
        Self::refuse("row sink")
    }
}
