//! The batch engines of Google Cloud behind the [`BatchEngine`] port: Dataproc Serverless,
//! Dataproc jobs on ephemeral clusters, Dataflow flex templates and Cloud Data Fusion, through
//! their REST APIs.
//!
//! # Layout
//! - `mod.rs`: [`CloudEngines`], which registers the four engines with the core's
//!   [`Engines`] port; [`TokenSource`], where OAuth tokens come from; [`Endpoints`].
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
//! # fn demo() -> Result<(), conveyor_core::ports::PortError> {
//! use std::sync::Arc;
//! use conveyor_core::engines::Engines;
//! use conveyor_gcp::engines::{CloudEngines as _, Endpoints, StaticToken};
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
use conveyor_core::engines::Engines;
use conveyor_core::ports::PortError;

pub use data_fusion::{DataFusionEngine, JOB_ID_ARG};
pub use dataflow_flex::DataflowFlexEngine;
pub use dataproc_cluster::DataprocClusterEngine;
pub use dataproc_serverless::DataprocServerlessEngine;

/// Where the engines' OAuth access tokens come from: Application Default Credentials in
/// production, a fixed string in tests.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A bearer token valid for at least the next request.
    ///
    /// # Errors
    /// [`PortError::Transient`] when the token service cannot be reached now.
    async fn token(&self) -> Result<String, PortError>;

    /// Adds the credentials to `req`: `Authorization: Bearer` with [`Self::token`] unless the
    /// source sends more (a quota project).
    ///
    /// # Errors
    /// As [`Self::token`].
    async fn authorize(
        &self,
        req: crate::rest::RequestBuilder,
    ) -> Result<crate::rest::RequestBuilder, PortError> {
        Ok(req.bearer_auth(self.token().await?))
    }

    /// Forgets the current token after the API refused it (401), so the next one is new.
    async fn refresh(&self) {}
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

/// Registers the Google Cloud engines with an [`Engines`] port.
pub trait CloudEngines: Sized {
    /// Runs the Google Cloud engines through their REST APIs at `endpoints`, authorised by
    /// tokens from `token`, all on one HTTP client.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    fn with_cloud(
        self,
        endpoints: Endpoints,
        token: Arc<dyn TokenSource>,
    ) -> Result<Self, PortError>;
}

impl CloudEngines for Engines {
    fn with_cloud(
        self,
        endpoints: Endpoints,
        token: Arc<dyn TokenSource>,
    ) -> Result<Self, PortError> {
        let api = api::Api::new(token)?;
        let dataproc = api::base(&endpoints.dataproc);
        let dataflow = api::base(&endpoints.dataflow);
        Ok(self
            .with(
                "dataproc_serverless",
                Arc::new(DataprocServerlessEngine::new(api.clone(), dataproc.clone())),
            )
            .with(
                "dataproc_cluster",
                Arc::new(DataprocClusterEngine::new(api.clone(), dataproc)),
            )
            .with(
                "dataflow_flex",
                Arc::new(DataflowFlexEngine::new(api.clone(), dataflow)),
            )
            .with("data_fusion", Arc::new(DataFusionEngine::new(api))))
    }
}
