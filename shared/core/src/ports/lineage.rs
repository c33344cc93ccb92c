//! [`Lineage`]: where OpenLineage run events go — Dataplex's Data Lineage API on Google
//! Cloud; a JSON-lines file or an OpenLineage HTTP endpoint in the embedded mode.

use async_trait::async_trait;

use super::PortError;

/// One OpenLineage `RunEvent` (spec 2-0-2), as the JSON every backend takes. Built by the log
/// step from a Conveyor event (see [`crate::steps::lineage_events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent(serde_json::Value);

impl RunEvent {
    /// Wraps an event's JSON.
    pub fn new(json: serde_json::Value) -> Self {
        Self(json)
    }

    /// The event's JSON.
    pub fn json(&self) -> &serde_json::Value {
        &self.0
    }

    /// `run.runId`: a UUID derived from Conveyor's run id, job and attempt, so a redelivered
    /// Conveyor event yields the same one.
    pub fn run_id(&self) -> &str {
        self.0["run"]["runId"].as_str().unwrap_or("")
    }

    /// `eventType`: `START`, `COMPLETE` or `FAIL`.
    pub fn event_type(&self) -> &str {
        self.0["eventType"].as_str().unwrap_or("")
    }
}

/// How a backend names the warehouse's tables as OpenLineage datasets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNaming {
    /// The datasets' namespace: `bigquery` on Google Cloud (OpenLineage's naming), `sqlite`
    /// for the embedded warehouse.
    pub namespace: String,
    /// The project a `dataset.table` without one is in (BigQuery names are
    /// `project.dataset.table`); `None` keeps `dataset.table`.
    pub project: Option<String>,
}

/// Records OpenLineage run events. The same event may be emitted again (Pub/Sub redelivers);
/// it carries the same `runId`, `eventType` and `eventTime`, which lineage backends merge.
#[async_trait]
pub trait Lineage: Send + Sync {
    /// Records `event`.
    ///
    /// # Errors
    /// Transient when the backend cannot be reached (the log step asks for redelivery);
    /// permanent when it refuses the event.
    async fn emit(&self, event: &RunEvent) -> Result<(), PortError>;

    /// How this backend's warehouse tables are named in the events.
    fn tables(&self) -> TableNaming;
}
