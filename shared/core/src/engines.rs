//! The batch port of a runtime: [`Engines`] hands each batch to the engine its spec names.
//!
//! The engines themselves are adapters: Dataproc Serverless, Dataproc jobs on ephemeral
//! clusters, Dataflow flex templates and Cloud Data Fusion in `conveyor-gcp`, local processes
//! (`engine: local`) in `conveyor-embedded`. A runtime registers the ones it runs; a batch
//! whose engine is not registered is refused permanently, with a message that says where it
//! runs, and the run log records the refusal.
//!
//! Every engine is idempotent on the job id (Pub/Sub delivers at least once): a resubmitted
//! job is found and adopted, never started twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::BatchSpec;
use crate::names::JobId;
use crate::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// The batch port of a runtime: hands each request to the engine its spec names
/// ([`BatchSpec::engine`]).
#[derive(Clone, Default)]
pub struct Engines {
    engines: BTreeMap<&'static str, Arc<dyn BatchEngine>>,
}

impl Engines {
    /// No engine yet: every batch is refused until one is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs batches whose `engine:` is `name` (as [`BatchSpec::engine`] spells it) with
    /// `engine`, replacing any engine registered under that name.
    #[must_use]
    pub fn with(mut self, name: &'static str, engine: Arc<dyn BatchEngine>) -> Self {
        self.engines.insert(name, engine);
        self
    }

    /// Adds every engine of `other`, replacing those of the same name.
    #[must_use]
    pub fn extend(mut self, other: Engines) -> Self {
        self.engines.extend(other.engines);
        self
    }

    /// Runs `engine: local` batches with `local`.
    #[must_use]
    pub fn with_local(self, local: Arc<dyn BatchEngine>) -> Self {
        self.with("local", local)
    }

    fn pick(&self, spec: &BatchSpec) -> Result<&dyn BatchEngine, PortError> {
        let name = spec.engine();
        self.engines
            .get(name)
            .map(|e| e.as_ref())
            .ok_or_else(|| PortError::permanent(Self::missing(name)))
    }

    /// Why `engine:` `name` does not run in a runtime without it.
    fn missing(name: &str) -> String {
        if name == "ssh" {
            "`engine: ssh` is not wired into this runtime (the submit and poll functions and \
             the embedded runtime run it)"
                .to_owned()
        } else if name == "http" {
            "`engine: http` is not wired into this runtime (the submit and poll functions and \
             `conveyor run` / `conveyor dev` run it)"
                .to_owned()
        } else if name == "local" {
            "`engine: local` runs in the embedded runtime only (`conveyor run`, \
             `conveyor dev`)"
                .to_owned()
        } else {
            format!(
                "the {name} engine needs Google Cloud: this runtime runs `engine: local` \
                 batches only (deploy the functions, which run on Google Cloud)"
            )
        }
    }
}

#[async_trait]
impl BatchEngine for Engines {
    fn refuses(&self, engine: &str) -> Option<String> {
        (!self.engines.contains_key(engine)).then(|| Self::missing(engine))
    }

    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        self.pick(&req.spec)?.submit(req).await
    }

    async fn adopt(&self, req: &BatchRequest) -> Result<Option<Submitted>, PortError> {
        self.pick(&req.spec)?.adopt(req).await
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        self.pick(spec)?.state(spec, job_id).await
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.pick(spec)?.cancel(spec, job_id).await
    }

    async fn drain(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.pick(spec)?.drain(spec, job_id).await
    }

    async fn follow(&self, req: &BatchRequest) -> Result<JobState, PortError> {
        self.pick(&req.spec)?.follow(req).await
    }

    async fn release(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.pick(spec)?.release(spec, job_id).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::LocalBatch;
    use crate::names::{PipelineName, RunId};

    #[tokio::test]
    async fn a_cloud_engine_without_google_cloud_is_refused_with_the_reason() {
        let spec: BatchSpec = serde_json::from_value(serde_json::json!({
            "engine": "data_fusion",
            "instance_url": "https://x/api",
            "pipeline": "p",
        }))
        .unwrap();
        let run = RunId::derive(&PipelineName::parse("p").unwrap(), &["x"]);
        let req = BatchRequest {
            job_id: JobId::derive("batch", &run, 1),
            run_id: run,
            attempt: 1,
            spec,
            vars: BTreeMap::new(),
            job: "batch".into(),
            row: BTreeMap::new(),
        };
        let err = Engines::new().submit(&req).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(
            err.to_string()
                .contains("data_fusion engine needs Google Cloud"),
            "{err}"
        );
        let local = BatchSpec::Local(LocalBatch {
            command: "true".into(),
            env: BTreeMap::new(),
            working_dir: None,
        });
        let err = Engines::new().state(&local, &req.job_id).await.unwrap_err();
        assert!(err.to_string().contains("embedded runtime"), "{err}");
    }
}
