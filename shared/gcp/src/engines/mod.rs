//! The batch engines of Google Cloud behind the [`BatchEngine`] port: Dataproc Serverless,
//! Dataproc jobs on ephemeral clusters, Dataflow flex templates, Cloud Data Fusion and Cloud
//! Run job executions, through their REST APIs.
//!
//! # Layout
//! - `mod.rs`: [`CloudEngines`], which registers the five engines with the core's
//!   [`Engines`] port; [`TokenSource`], where OAuth tokens come from; [`Endpoints`].
//! - `api.rs`: the authorised JSON client the engines share; it sorts answers into transient
//!   errors (transport, 408, 429, 5xx), permanent ones, and the 404 / 409 /
//!   `FAILED_PRECONDITION` an engine interprets (a 409 on a deterministic id = adopt).
//! - `dataproc_serverless.rs`, `dataproc_cluster.rs`, `dataflow_flex.rs`, `data_fusion.rs`,
//!   `cloud_run_job.rs`: one engine each; their module docs list the calls they make.
//! - `http.rs`: `engine: http` ([`HttpEngine`]), calls to any endpoint with an ID token from
//!   [`IdTokens`] (the metadata server on Google Cloud, a fixed token or none embedded); not
//!   registered by [`CloudEngines`], whose runtimes add it with their token source.
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
mod cloud_run_job;
mod data_fusion;
mod dataflow_flex;
mod dataproc_cluster;
mod dataproc_serverless;
mod http;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use conveyor_core::engines::Engines;
use conveyor_core::ports::PortError;

pub use cloud_run_job::CloudRunJobEngine;
pub use data_fusion::{DataFusionEngine, JOB_ID_ARG};
pub use dataflow_flex::DataflowFlexEngine;
pub use dataproc_cluster::DataprocClusterEngine;
pub use dataproc_serverless::DataprocServerlessEngine;
pub use http::{FixedIdToken, HttpEngine, IdTokens, MetadataIdTokens};

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
    /// The Cloud Run Admin API: jobs and their executions (`https://run.googleapis.com`).
    pub run: String,
}

impl Endpoints {
    /// Google's public endpoints.
    pub fn google() -> Self {
        Self {
            dataproc: "https://dataproc.googleapis.com".to_owned(),
            dataflow: "https://dataflow.googleapis.com".to_owned(),
            run: "https://run.googleapis.com".to_owned(),
        }
    }

    /// Every API at `url` (a test server such as `http://127.0.0.1:PORT`).
    pub fn all_at(url: &str) -> Self {
        Self {
            dataproc: url.to_owned(),
            dataflow: url.to_owned(),
            run: url.to_owned(),
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
        let run = api::base(&endpoints.run);
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
            .with(
                "cloud_run_job",
                Arc::new(CloudRunJobEngine::new(api.clone(), run)),
            )
            .with("data_fusion", Arc::new(DataFusionEngine::new(api))))
    }
}

#[cfg(test)]
mod tests {
    //! Every state Google's API descriptions give each engine's jobs is classified by the
    //! engine's code: terminal or not, and every terminal one ends the job (a state the code
    //! does not know would leave a job polled forever, or end it while it still runs).

    use conveyor_contract::Documents;
    use conveyor_contract::cdap::{END_STATUSES, RUN_STATUSES};
    use conveyor_core::config::BatchSpec;
    use serde_json::json;

    use super::dataproc_cluster::{ClusterPhase, cluster_phase};

    fn docs() -> &'static Documents {
        Documents::shared().unwrap_or_else(|e| panic!("{e}"))
    }

    fn spec(engine: serde_json::Value) -> BatchSpec {
        serde_json::from_value(engine).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Each of `states` is exactly one of terminal and not terminal for `spec`.
    #[track_caller]
    fn classified(spec: &BatchSpec, states: &[String], terminal: &[&str]) {
        assert!(!states.is_empty(), "the document lists no states");
        for s in states {
            let is_terminal = spec.terminal_states().contains(&s.as_str());
            let is_open = spec.non_terminal_states().contains(&s.as_str());
            assert!(
                is_terminal != is_open,
                "{}: {s} is {} (terminal: {is_terminal}, not terminal: {is_open})",
                spec.engine(),
                if is_terminal { "both" } else { "unclassified" }
            );
            assert_eq!(
                spec.is_terminal(s),
                terminal.contains(&s.as_str()),
                "{}: {s}",
                spec.engine()
            );
        }
    }

    #[test]
    fn every_dataproc_batch_state_is_classified() {
        let states = docs().enum_values("dataproc", "Batch", "/properties/state");
        let s = spec(
            json!({"engine": "dataproc_serverless", "project": "p", "region": "r",
            "runtime_version": "2.2", "pyspark": {"main_python_file_uri": "gs://b/a.py"}}),
        );
        classified(&s, &states, &["SUCCEEDED", "FAILED", "CANCELLED"]);
    }

    #[test]
    fn every_dataproc_job_state_is_classified() {
        let states = docs().enum_values("dataproc", "JobStatus", "/properties/state");
        let s = spec(
            json!({"engine": "dataproc_cluster", "project": "p", "region": "r",
            "cluster": {}, "pig": {"queries": ["sh true"]}}),
        );
        classified(&s, &states, &["DONE", "ERROR", "CANCELLED"]);
    }

    #[test]
    fn every_dataproc_cluster_state_has_a_phase() {
        let states = docs().enum_values("dataproc", "ClusterStatus", "/properties/state");
        assert!(!states.is_empty());
        for s in &states {
            let expected = match s.as_str() {
                "RUNNING" => ClusterPhase::Ready,
                "ERROR" | "ERROR_DUE_TO_UPDATE" | "DELETING" | "STOPPING" | "STOPPED" => {
                    ClusterPhase::Failed
                }
                "UNKNOWN" | "CREATING" | "UPDATING" | "STARTING" | "REPAIRING" | "SCHEDULED" => {
                    ClusterPhase::Waiting
                }
                other => panic!("ClusterStatus.state {other} is new: decide what it means"),
            };
            assert_eq!(cluster_phase(s), expected, "{s}");
        }
    }

    #[test]
    fn every_dataflow_job_state_is_classified_and_a_paused_job_is_not_over() {
        let states = docs().enum_values("dataflow", "Job", "/properties/currentState");
        assert!(states.iter().any(|s| s == "JOB_STATE_PAUSED"));
        let s = spec(
            json!({"engine": "dataflow_flex", "project": "p", "region": "r",
            "template": "gs://b/t.json"}),
        );
        classified(
            &s,
            &states,
            &[
                "JOB_STATE_DONE",
                "JOB_STATE_FAILED",
                "JOB_STATE_CANCELLED",
                "JOB_STATE_UPDATED",
                "JOB_STATE_DRAINED",
            ],
        );
    }

    #[test]
    fn every_bigquery_job_state_is_classified() {
        // BigQuery's JobStatus.state is a string whose description lists the states.
        let description = docs()
            .description("bigquery", "JobStatus", "/properties/state")
            .expect("JobStatus.state");
        let states: Vec<String> = description
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert_eq!(states, ["PENDING", "RUNNING", "DONE"], "{description}");
        let s = spec(json!({"engine": "sql", "query": "SELECT 1"}));
        classified(&s, &states, &["DONE"]);
    }

    #[test]
    fn every_cloud_run_condition_state_and_execution_reason_reads_as_a_classified_state() {
        let states = docs().enum_values("run", "GoogleCloudRunV2Condition", "/properties/state");
        let reasons = docs().enum_values(
            "run",
            "GoogleCloudRunV2Condition",
            "/properties/executionReason",
        );
        assert!(
            states.iter().any(|s| s == "CONDITION_SUCCEEDED"),
            "{states:?}"
        );
        assert!(reasons.iter().any(|r| r == "CANCELLED"), "{reasons:?}");
        let s = spec(
            json!({"engine": "cloud_run_job", "project": "p", "region": "r",
            "job": "exporter"}),
        );
        let mut seen = std::collections::BTreeSet::new();
        for state in &states {
            for reason in &reasons {
                let execution = json!({"conditions": [{"type": "Completed",
                    "state": state, "executionReason": reason}]});
                let (read, _) = super::cloud_run_job::state_of(&execution);
                let read = read.to_owned();
                classified(
                    &s,
                    std::slice::from_ref(&read),
                    &["SUCCEEDED", "FAILED", "CANCELLED"],
                );
                seen.insert(read);
            }
        }
        for wanted in ["SUCCEEDED", "FAILED", "CANCELLED", "CANCELLING", "PENDING"] {
            assert!(seen.contains(wanted), "{wanted} never read: {seen:?}");
        }
    }

    #[test]
    fn every_cdap_run_status_is_classified() {
        let states: Vec<String> = RUN_STATUSES.iter().map(|s| (*s).to_owned()).collect();
        let s = spec(json!({"engine": "data_fusion",
            "instance_url": "https://x-dot-r.datafusion.googleusercontent.com/api",
            "pipeline": "p"}));
        classified(&s, &states, END_STATUSES);
    }
}
