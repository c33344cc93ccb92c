//! [`Unwired`]: the port a runtime did not wire.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::config::{BatchSpec, RunLogSink, StageSource};
use crate::event::ConveyorEvent;
use crate::names::{BucketName, JobId, ObjectName, TableRef};

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
    async fn select(&self, _: &str, _: usize) -> Result<Vec<BTreeMap<String, String>>, PortError> {
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
    async fn drain(&self, _: &BatchSpec, _: &JobId) -> Result<(), PortError> {
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

#[async_trait]
impl SecretStore for Unwired {
    async fn access(&self, _: &crate::config::SecretRef) -> Result<SecretValue, PortError> {
        Self::refuse("secret store")
    }
}
