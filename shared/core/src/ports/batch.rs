//! [`BatchEngine`]: Dataproc, Dataflow, Data Fusion, or a local process.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::PortError;
use crate::config::BatchSpec;
use crate::names::{JobId, RunId};

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

impl PortError {
    /// The error of an engine handed another engine's batch (a wiring mistake, never
    /// retried).
    pub fn wrong_engine(engine: &str, spec: &BatchSpec) -> Self {
        Self::permanent(format!(
            "the {engine} engine cannot run a {} batch",
            spec.engine()
        ))
    }
}

impl Submitted {
    /// A job this submission started.
    pub fn started(job_id: &JobId) -> Self {
        Self {
            job_id: job_id.clone(),
            adopted: false,
        }
    }

    /// A job that already existed under this id, adopted instead of started again.
    pub fn adopted(job_id: &JobId) -> Self {
        Self {
            job_id: job_id.clone(),
            adopted: true,
        }
    }
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
    /// The tails of the job's standard output and error, for engines that keep them (local
    /// processes, SSH).
    pub log: Option<crate::task_log::TaskLog>,
}

impl JobState {
    /// A state as an engine's API reported it (no task logs: those are the local and SSH
    /// engines').
    pub fn reported(state: impl Into<String>, terminal: bool, error: Option<String>) -> Self {
        Self {
            state: state.into(),
            terminal,
            error,
            log: None,
        }
    }
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
    /// Finds the job `req` would start, without starting anything: `None` when it is not
    /// (yet) there, or when the engine cannot tell (the default). What a delivery that lost
    /// the submit claim of an engine whose submit is not idempotent asks (see
    /// [`BatchSpec::claims_submit`]): a Cloud Run job's execution carrying the job id.
    async fn adopt(&self, req: &BatchRequest) -> Result<Option<Submitted>, PortError> {
        let _ = req;
        Ok(None)
    }
    /// The job's current state.
    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError>;
    /// Cancels the job (and releases what it holds). Cancelling a finished job is not an error.
    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError>;
    /// Stops a streaming job gracefully: it finishes the data it has taken in and then ends
    /// (Dataflow's drain). Draining a finished job is not an error. The default: the engine
    /// runs no streaming jobs, so there is nothing to drain (a permanent error).
    async fn drain(&self, spec: &BatchSpec, _job_id: &JobId) -> Result<(), PortError> {
        Err(PortError::permanent(format!(
            "engine {} runs no streaming jobs: nothing to drain",
            spec.engine()
        )))
    }
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
