//! [`Warehouse`]: load jobs into BigQuery, or an embedded SQL database.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::PortError;
use crate::config::{
    Compression, CreateDisposition, CsvOptions, Partition, SchemaSpec, SchemaUpdateOption,
    WriteDisposition,
};
use crate::event::ObjectRef;
use crate::format::Format;
use crate::names::{JobId, TableRef};

/// The most source URIs one BigQuery load job takes (defined with the configuration, whose
/// `load.batch.max_files` it bounds).
pub use crate::config::MAX_LOAD_URIS;

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
    /// The one partition loaded (`load.partition.decorator` rendered: `20261120`): the
    /// destination is `table$20261120`, and WRITE_TRUNCATE replaces only its rows.
    pub partition_id: Option<String>,
    /// Clustering columns (at most four).
    pub clustering: Vec<String>,
    /// Whether the sources are gzip-compressed (`load.compression`). BigQuery detects gzip by
    /// itself; the embedded warehouse decompresses by this.
    pub compression: Compression,
    /// CSV options (delimiter, quote, NULL marker, encoding, jagged rows, leading rows).
    pub csv: CsvOptions,
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
    /// A load of `sources` into `table` with BigQuery's defaults for everything else:
    /// append, create the table if needed, detect the schema, no partition or clustering,
    /// compression detected, no bad rows allowed, the generations checked. Set a field
    /// afterwards (or with [`Self::with_header_row`]) where a load differs.
    pub fn new(job_id: JobId, sources: Vec<ObjectRef>, table: TableRef, format: Format) -> Self {
        Self {
            job_id,
            sources,
            table,
            format,
            write: WriteDisposition::WriteAppend,
            create: CreateDisposition::CreateIfNeeded,
            schema: SchemaSpec::Autodetect,
            partition: None,
            partition_id: None,
            clustering: Vec::new(),
            compression: Compression::Auto,
            csv: CsvOptions::default(),
            max_bad_records: 0,
            allow_quoted_newlines: false,
            schema_update_options: Vec::new(),
            max_record_bytes: crate::config::MAX_RECORD_BYTES,
            generations_checked: true,
        }
    }

    /// The same load with the CSV files' first line skipped as their header
    /// (`skip_leading_rows: 1`).
    #[must_use]
    pub fn with_header_row(mut self) -> Self {
        self.csv.skip_leading_rows = Some(1);
        self
    }

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
    /// The columns of the existing `table`, in order: `None` when it does not exist, or when
    /// this warehouse does not say or has columns a flat schema cannot name (RECORD,
    /// REPEATED). A batch's union schema ([`LoadJob::schema`] from several NDJSON files)
    /// names them too, since BigQuery refuses an explicit schema that lacks a column of the
    /// table ("missing in new schema"). The default: `None` (the embedded warehouse loads by
    /// column name and keeps the columns a job does not name).
    ///
    /// # Errors
    /// The table cannot be read (transient, or permission denied).
    async fn table_columns(
        &self,
        table: &TableRef,
    ) -> Result<Option<Vec<crate::format::Column>>, PortError> {
        let _ = table;
        Ok(None)
    }
    /// Number of rows in `table`.
    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError>;
    /// At most `limit` rows of `table`, each column as text (NULL as no entry): a job's
    /// `for_each` configuration table.
    async fn read_table(
        &self,
        table: &TableRef,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError>;
    /// The first `limit` rows a read-only query returns, each column as text (NULL as no
    /// entry): a job's `when: { query }`.
    ///
    /// # Errors
    /// A query the warehouse refuses (permanent), or a warehouse that cannot be reached.
    async fn select(
        &self,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let _ = (sql, limit);
        Err(PortError::permanent("this warehouse runs no queries"))
    }
    /// [`Self::select`] as a job under `job_id` where the warehouse has jobs (BigQuery: a
    /// query job, adopted when the id is taken, so a check run again reads the same job's
    /// result): a job's data-quality checks.
    ///
    /// # Errors
    /// As [`Self::select`]; a job still running is transient.
    async fn select_as(
        &self,
        job_id: &JobId,
        sql: &str,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let _ = job_id;
        self.select(sql, limit).await
    }
}
