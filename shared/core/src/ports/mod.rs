//! The ports: the traits every step depends on. Adapters implement them for Google Cloud
//! (production) and for one machine (embedded); a step never names a cloud SDK.
//!
//! Every method that causes a side effect is idempotent on the id it is given, because
//! Pub/Sub delivers at least once.
//!
//! # Layout
//! One file per port, its trait beside the types it speaks in; everything is re-exported here,
//! so callers name `conveyor_core::ports::X`.
//! - [`error`]: [`PortError`], the one error every port returns, and its [`Cause`].
//! - [`object_store`]: [`ObjectStore`] (buckets of objects); [`sources`]: [`Sources`] and
//!   [`Source`] (stage sources); [`secrets`]: [`SecretStore`]; [`bus`]: [`EventBus`].
//! - [`warehouse`]: [`Warehouse`] and its [`LoadJob`]s; [`batch`]: [`BatchEngine`];
//!   [`rows`]: [`RowSink`] (rows from messages).
//! - [`run_log`]: [`RunLog`], its schema ([`RUN_LOG_COLUMNS`], [`RunLogRow`]), and
//!   [`RunLogSinks`].
//! - [`lineage`]: [`Lineage`] (OpenLineage run events) and its [`RunEvent`].
//! - [`notify`]: [`Notifier`] (a pipeline's `on_failure` notices).
//! - [`unwired`]: [`Unwired`], every port refusing, for a function that does not wire it.
//! - here: [`Ports`], the bundle a step is handed.

use std::sync::Arc;

pub mod batch;
pub mod bus;
pub mod error;
pub mod lineage;
pub mod notify;
pub mod object_store;
pub mod rows;
pub mod run_log;
pub mod secrets;
pub mod sources;
pub mod unwired;
pub mod warehouse;

pub use batch::{BatchEngine, BatchRequest, JobState, Submitted};
pub use bus::EventBus;
pub use error::{Cause, PortError};
pub use lineage::{Lineage, RunEvent, TableNaming};
pub use notify::Notifier;
pub use object_store::{ByteStream, Digests, ObjectMeta, ObjectPage, ObjectStore, read_small};
pub use rows::{RowBatch, RowSink};
pub use run_log::{
    RUN_LOG_COLUMNS, RunLog, RunLogColumn, RunLogQuery, RunLogRow, RunLogSinks, RunStart, RunsQuery,
};
pub use secrets::{SecretStore, SecretValue};
pub use sources::{Opened, Source, SourceObject, Sources};
pub use unwired::Unwired;
pub use warehouse::{LoadJob, LoadState, LoadStatus, MAX_LOAD_URIS, Warehouse};

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
    /// Secrets a job's `{secret:NAME}` placeholders read when it is submitted.
    pub secrets: Arc<dyn SecretStore>,
    /// Where the log step also publishes each event that ends a run in failure (FAILED with
    /// no retry left, TIMED_OUT, REJECTED), for Slack or e-mail integrations: the alerts
    /// topic. `None`: no alerts topic.
    pub alerts: Option<Arc<dyn EventBus>>,
    /// Where the log step sends the OpenLineage run events of each load and job (the file's
    /// `lineage:`). `None`: no lineage.
    pub lineage: Option<Arc<dyn Lineage>>,
    /// Where pipelines' `on_failure` notices go (topics, webhooks). `None`: not wired (the
    /// log step says so in its log and goes on).
    pub notifier: Option<Arc<dyn Notifier>>,
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
            rows: none.clone(),
            secrets: none,
            alerts: None,
            lineage: None,
            notifier: None,
        }
    }
}
