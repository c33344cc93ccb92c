//! The batch engines of the seeds behind the [`BatchEngine`] port: Dataproc Serverless,
//! Dataproc jobs on ephemeral clusters, Dataflow flex templates and Cloud Data Fusion, through
//! their REST APIs, plus whatever runs `engine: local`.
//!
//! # Layout
//! - `mod.rs`: [`Engines`], the one batch port that hands each request to the engine its spec
//!   names; [`TokenSource`], where OAuth tokens come from; [`Endpoints`].
//! - `api.rs`: the authorised JSON client the engines share; it sorts answers into transient
//!   errors (transport, 408, 429, 5xx), permanent ones, and the 404 / 409 /
//!   `FAILED_PRECONDITION` an engine interprets (a 409 on a deterministic id = adopt).
//! - `dataproc_serverless.rs`, `dataproc_cluster.rs`, `dataflow_flex.rs`, `data_fusion.rs`:
//!   one engine each; their module docs list the calls they make.
//!
//! Every engine is idempotent on the job id (Pub/Sub delivers at least once): a resubmitted
//! job is found and adopted, never started twice.
//!
//! # Examples
//! ```no_run
//! # async fn demo() -> Result<(), conveyor::ports::PortError> {
//! use std::sync::Arc;
//! use conveyor::adapters::engines::{Endpoints, Engines, StaticToken};
//!
//! let engines = Engines::new()
//!     .with_cloud(Endpoints::google(), Arc::new(StaticToken::new("ya29.token")))?;
//! # let _ = engines; Ok(()) }
//! ```

mod api;
mod data_fusion;
mod dataflow_flex;
mod dataproc_cluster;
mod dataproc_serverless;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use data_fusion::{DataFusionEngine, JOB_ID_ARG};
pub use dataflow_flex::DataflowFlexEngine;
pub use dataproc_cluster::DataprocClusterEngine;
pub use dataproc_serverless::DataprocServerlessEngine;

use crate::config::BatchSpec;
use crate::names::JobId;
use crate::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Where the engines' OAuth access tokens come from: Application Default Credentials in
/// production, a fixed string in tests.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A bearer token valid for at least the next request.
    ///
    /// # Errors
    /// [`PortError::Transient`] when the token service cannot be reached now.
    async fn token(&self) -> Result<String, PortError>;
}

/// A fixed token: tests, or a token minted outside Conveyor.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    /// A source that always gives `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token is a secret: never in logs.
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, PortError> {
        Ok(self.0.clone())
    }
}

/// Base URLs of the engines' APIs. Data Fusion has none: each pipeline names its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Dataproc: batches, clusters, jobs, operations (`https://dataproc.googleapis.com`).
    pub dataproc: String,
    /// Dataflow (`https://dataflow.googleapis.com`).
    pub dataflow: String,
}

impl Endpoints {
    /// Google's public endpoints.
    pub fn google() -> Self {
        Self {
            dataproc: "https://dataproc.googleapis.com".to_owned(),
            dataflow: "https://dataflow.googleapis.com".to_owned(),
        }
    }

    /// Every API at `url` (a test server such as `http://127.0.0.1:PORT`).
    pub fn all_at(url: &str) -> Self {
        Self {
            dataproc: url.to_owned(),
            dataflow: url.to_owned(),
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::google()
    }
}

/// The Google Cloud engines, built together on one client.
#[derive(Clone)]
struct Cloud {
    serverless: DataprocServerlessEngine,
    cluster: DataprocClusterEngine,
    dataflow: DataflowFlexEngine,
    fusion: DataFusionEngine,
}

/// The batch port of a runtime: hands each request to the engine its spec names.
///
/// The embedded runtime serves `engine: local` only (no cloud account): a Google Cloud engine
/// there is refused with a message that says so, and the run log records the refusal. The
/// Google Cloud runtime adds [`Engines::with_cloud`].
#[derive(Clone, Default)]
pub struct Engines {
    local: Option<Arc<dyn BatchEngine>>,
    cloud: Option<Cloud>,
}

impl Engines {
    /// No engine yet: every batch is refused until one is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `engine: local` batches with `local`.
    #[must_use]
    pub fn with_local(mut self, local: Arc<dyn BatchEngine>) -> Self {
        self.local = Some(local);
        self
    }

    /// Runs the Google Cloud engines through their REST APIs at `endpoints`, authorised by
    /// tokens from `token`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn with_cloud(
        mut self,
        endpoints: Endpoints,
        token: Arc<dyn TokenSource>,
    ) -> Result<Self, PortError> {
        let api = api::Api::new(token)?;
        let dataproc = api::base(&endpoints.dataproc);
        let dataflow = api::base(&endpoints.dataflow);
        self.cloud = Some(Cloud {
            serverless: DataprocServerlessEngine::new(api.clone(), dataproc.clone()),
            cluster: DataprocClusterEngine::new(api.clone(), dataproc),
            dataflow: DataflowFlexEngine::new(api.clone(), dataflow),
            fusion: DataFusionEngine::new(api),
        });
        Ok(self)
    }

    fn pick(&self, spec: &BatchSpec) -> Result<&dyn BatchEngine, PortError> {
        let cloud = || {
            self.cloud.as_ref().ok_or_else(|| {
                PortError::Permanent(format!(
                    "the {} engine needs Google Cloud: this runtime runs `engine: local` \
                     batches only (run the functions with CONVEYOR_ADAPTERS=gcp)",
                    spec.engine()
                ))
            })
        };
        Ok(match spec {
            BatchSpec::Local(_) => self.local.as_deref().ok_or_else(|| {
                PortError::Permanent("`engine: local` runs in the embedded runtime only".to_owned())
            })?,
            BatchSpec::DataprocServerless(_) => &cloud()?.serverless,
            BatchSpec::DataprocCluster(_) => &cloud()?.cluster,
            BatchSpec::DataflowFlex(_) => &cloud()?.dataflow,
            BatchSpec::DataFusion(_) => &cloud()?.fusion,
        })
    }
}

#[async_trait]
impl BatchEngine for Engines {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        self.pick(&req.spec)?.submit(req).await
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        self.pick(spec)?.state(spec, job_id).await
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.pick(spec)?.cancel(spec, job_id).await
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
        });
        let err = Engines::new().state(&local, &req.job_id).await.unwrap_err();
        assert!(err.to_string().contains("embedded runtime"), "{err}");
    }
}
