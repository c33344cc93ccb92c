//! The batch a pipeline runs: which engine, with what parameters, and what the engine's states
//! mean.
//!
//! Every string parameter of a batch may hold `{name}` placeholders (the trigger's captures,
//! `{run_id}`, `{table}`, `{attempt}`, `{job_id}`, `{pipeline}`), rendered when the batch is
//! submitted; the fields that locate a job (`project`, `region`, a Data Fusion `instance_url`,
//! `namespace` and `pipeline`) take none. Only `{identifier}` is a placeholder: `${...}` (a shell variable or a CDAP macro)
//! and any other braces are left as they are.
//!
//! # Layout
//! One file per engine, each holding its spec and its [`Engine`] answers (name, states,
//! checks, parameters); [`BatchSpec`] names the engine and dispatches to it.
//! - [`local`], [`ssh`], [`sql`], [`dataproc_serverless`], [`dataproc_cluster`] (with the
//!   workloads both Dataproc engines run in [`dataproc`]), [`dataflow_flex`], [`data_fusion`],
//!   [`cloud_run_job`], [`http`].
//! - [`parameters`]: the `{name}` placeholders of a parameter, found and filled in.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod cloud_run_job;
mod data_fusion;
mod dataflow_flex;
mod dataproc;
mod dataproc_cluster;
mod dataproc_serverless;
mod http;
mod local;
mod parameters;
mod sql;
mod ssh;

pub use cloud_run_job::{CLOUD_RUN_JOB_ID_ENV, CloudRunJob};
pub use data_fusion::{DataFusion, DataFusionRun};
pub use dataflow_flex::DataflowFlex;
pub use dataproc::{PigJob, PySparkJob, SparkJob, SparkSqlJob};
pub use dataproc_cluster::{ClusterSpec, DataprocCluster};
pub use dataproc_serverless::DataprocServerless;
pub use http::{DEFAULT_CALL_TIMEOUT, HttpJob, HttpStatus};
pub use local::LocalBatch;
pub(crate) use parameters::render_parameter;
pub use parameters::{
    DATE_PLACEHOLDERS, date_offset, derived_value, parameter_placeholders, secret_name,
};
pub use sql::SqlJob;
pub use ssh::SshBatch;

/// The batch that follows a load: which engine, with what parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "engine", rename_all = "snake_case", deny_unknown_fields)]
#[expect(
    clippy::large_enum_variant,
    reason = "read once per configuration file; boxing would only add noise to every match"
)]
pub enum BatchSpec {
    /// A local command (embedded mode): `sh -c COMMAND`, its exit status is the result.
    Local(LocalBatch),
    /// A Dataproc Serverless batch (Spark, PySpark or Spark SQL) with a pinned runtime.
    DataprocServerless(DataprocServerless),
    /// A Dataproc job (Pig, Spark, PySpark) on an ephemeral cluster created for it and
    /// deleted when it ends.
    DataprocCluster(DataprocCluster),
    /// A Dataflow job launched from a flex template.
    DataflowFlex(DataflowFlex),
    /// A Cloud Data Fusion (CDAP) batch pipeline run, one per active row of runtime arguments.
    DataFusion(DataFusion),
    /// A SQL query job in the warehouse (BigQuery; SQLite in the embedded mode): a
    /// transformation into a destination table, or a script (DML/DDL) without one.
    Sql(SqlJob),
    /// A command on a remote host over SSH (seed 000's on-prem Run Replicator), detached
    /// under the job id; its exit status is the result.
    Ssh(SshBatch),
    /// An execution of a Cloud Run job, with its arguments and environment overridden for
    /// the run.
    CloudRunJob(CloudRunJob),
    /// A call to an HTTP endpoint with an OIDC ID token, success by status code, long work
    /// followed through a status URL.
    Http(HttpJob),
}

/// What every engine's spec answers, the same few questions; [`BatchSpec`] dispatches to it.
trait Engine {
    /// The engine's name and what its states mean.
    fn kind(&self) -> &'static Kind;

    /// Problems the types cannot express, each with its field path relative to `batch`.
    fn problems(&self, out: &mut Problems);

    /// Calls `f` on every string parameter with its field path (relative to `batch`), in
    /// file order.
    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String));
}

/// An engine's name as written in the file (`engine: NAME`), and what the states it reports
/// mean.
struct Kind {
    name: &'static str,
    /// The terminal success state: success when the pipeline does not say.
    success: &'static str,
    /// Every state the engine reports that is not terminal.
    non_terminal: &'static [&'static str],
    /// Every state after which the engine does not change the job any more.
    terminal: &'static [&'static str],
    /// The states in which the job is doing its work (the run log's RUNNING).
    running: &'static [&'static str],
}

/// Field paths (relative to `batch`) with what is wrong with them.
type Problems = Vec<(String, String)>;

/// A process's states (the local and SSH engines), which Dataproc Serverless's terminal ones
/// match.
const PROCESS_NON_TERMINAL: &[&str] = &["PENDING", "RUNNING"];
const PROCESS_TERMINAL: &[&str] = &["SUCCEEDED", "FAILED", "CANCELLED"];
/// The running state of every engine but Dataflow.
const RUNNING: &[&str] = &["RUNNING"];

impl BatchSpec {
    fn spec(&self) -> &dyn Engine {
        match self {
            Self::Local(s) => s,
            Self::DataprocServerless(s) => s,
            Self::DataprocCluster(s) => s,
            Self::DataflowFlex(s) => s,
            Self::DataFusion(s) => s,
            Self::Sql(s) => s,
            Self::Ssh(s) => s,
            Self::CloudRunJob(s) => s,
            Self::Http(s) => s,
        }
    }

    /// How long a submit claim of this engine is held before another delivery may take it
    /// over, or `None` when its submit is idempotent on the job id (the engine refuses a
    /// second job under the same id, or finds it) and needs no claim. A Cloud Run job's `:run`
    /// and an http call start new work each time, so two deliveries of one submit at once
    /// would each start it: the submit step takes a create-only claim keyed by the job id
    /// first, and the delivery that loses it adopts (see `steps/submit/claim.rs`). The hold
    /// outlasts the call the winner makes.
    pub fn claims_submit(&self) -> Option<std::time::Duration> {
        match self {
            Self::CloudRunJob(_) => Some(std::time::Duration::from_secs(120)),
            Self::Http(h) => Some(h.call_timeout() + std::time::Duration::from_secs(60)),
            _ => None,
        }
    }

    /// The engine's name as written in the file.
    pub fn engine(&self) -> &'static str {
        self.spec().kind().name
    }

    /// The states that count as success when the pipeline does not say: the engine's terminal
    /// success state only.
    pub(crate) fn default_success_states(&self) -> Vec<String> {
        vec![self.spec().kind().success.to_owned()]
    }

    /// Every state the engine reports that is not terminal; none of them may be a success state.
    pub fn non_terminal_states(&self) -> &'static [&'static str] {
        self.spec().kind().non_terminal
    }

    /// Every state after which the engine does not change the job any more.
    pub fn terminal_states(&self) -> &'static [&'static str] {
        self.spec().kind().terminal
    }

    /// The states in which the job is doing its work (the run log's RUNNING).
    pub(crate) fn running_states(&self) -> &'static [&'static str] {
        self.spec().kind().running
    }

    /// Whether `state` (any case) is one the engine never leaves.
    pub fn is_terminal(&self, state: &str) -> bool {
        self.terminal_states()
            .iter()
            .any(|s| s.eq_ignore_ascii_case(state))
    }

    /// Every string parameter with its field path (relative to `batch`), for placeholder
    /// checks.
    pub fn parameters(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut copy = self.clone();
        copy.each_parameter(&mut |path, value| out.push((path.to_owned(), value.clone())));
        out
    }

    /// The spec with every `{placeholder}` of every string parameter replaced by its value.
    ///
    /// # Errors
    /// The field path and name of the first placeholder without a value.
    pub fn rendered(&self, vars: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut copy = self.clone();
        let mut first_error = None;
        copy.each_parameter(&mut |path, value| {
            if first_error.is_some() {
                return;
            }
            match render_parameter(value, vars) {
                Ok(v) => *value = v,
                Err(e) => first_error = Some(format!("batch.{path}: {e}")),
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok(copy),
        }
    }

    /// Problems the types cannot express (one workload of several, bounds), each with its field
    /// path relative to `batch`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.spec().problems(&mut out);
        out
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        match self {
            Self::Local(s) => s.each_parameter(f),
            Self::DataprocServerless(s) => s.each_parameter(f),
            Self::DataprocCluster(s) => s.each_parameter(f),
            Self::DataflowFlex(s) => s.each_parameter(f),
            Self::DataFusion(s) => s.each_parameter(f),
            Self::Sql(s) => s.each_parameter(f),
            Self::Ssh(s) => s.each_parameter(f),
            Self::CloudRunJob(s) => s.each_parameter(f),
            Self::Http(s) => s.each_parameter(f),
        }
    }
}

fn say(out: &mut Vec<(String, String)>, path: &str, message: impl Into<String>) {
    out.push((path.to_owned(), message.into()));
}

fn required(out: &mut Vec<(String, String)>, path: &str, value: &str) {
    if value.trim().is_empty() {
        say(out, path, "must not be empty");
    }
}

/// A field that locates the job (project, region, instance, pipeline): the poll step finds the
/// job again without the run's values, so it takes no placeholders.
fn fixed(out: &mut Vec<(String, String)>, path: &str, value: &str) {
    required(out, path, value);
    if !parameter_placeholders(value).is_empty() {
        say(
            out,
            path,
            "takes no placeholders: the job is found again by it without the run's values",
        );
    }
}

fn opt(f: &mut dyn FnMut(&str, &mut String), path: &str, v: &mut Option<String>) {
    if let Some(v) = v {
        f(path, v);
    }
}

fn list(f: &mut dyn FnMut(&str, &mut String), path: &str, v: &mut [String]) {
    for (i, item) in v.iter_mut().enumerate() {
        f(&format!("{path}[{i}]"), item);
    }
}

fn map(f: &mut dyn FnMut(&str, &mut String), path: &str, v: &mut BTreeMap<String, String>) {
    for (k, item) in v.iter_mut() {
        f(&format!("{path}.{k}"), item);
    }
}

/// Serde helpers that accept a value both as itself and as a string: inside an internally
/// tagged enum the YAML loader hands every scalar over as a string.
mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(u64),
        Text(String),
    }

    pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Bool(b) => Ok(b),
            Scalar::Text(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Scalar::Text(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(D::Error::custom("expected true or false")),
        }
    }

    pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let n = match Scalar::deserialize(d)? {
            Scalar::Int(n) => n,
            Scalar::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| D::Error::custom(format!("expected a port number, not {s:?}")))?,
            Scalar::Bool(_) => return Err(D::Error::custom("expected a port number")),
        };
        u16::try_from(n).map_err(|_| D::Error::custom(format!("{n} is not a port number")))
    }

    /// A list of HTTP status codes (`[200, 201]`).
    pub(super) fn codes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
        let items = Vec::<Scalar>::deserialize(d)?;
        items
            .into_iter()
            .map(|item| {
                let n = match item {
                    Scalar::Int(n) => n,
                    Scalar::Text(s) => s.trim().parse::<u64>().map_err(|_| {
                        D::Error::custom(format!("expected a status code, not {s:?}"))
                    })?,
                    Scalar::Bool(_) => return Err(D::Error::custom("expected a status code")),
                };
                u16::try_from(n).map_err(|_| D::Error::custom(format!("{n} is not a status code")))
            })
            .collect()
    }

    pub(super) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let n = match Scalar::deserialize(d)? {
            Scalar::Int(n) => n,
            Scalar::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| D::Error::custom(format!("expected a whole number, not {s:?}")))?,
            Scalar::Bool(_) => return Err(D::Error::custom("expected a whole number")),
        };
        u32::try_from(n)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{n} is too large")))
    }
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_a_spec_names_the_field_of_a_missing_placeholder() {
        let spec = BatchSpec::DataflowFlex(DataflowFlex {
            project: "p".into(),
            region: "r".into(),
            template: "gs://t".into(),
            parameters: BTreeMap::from([("query".into(), "select {column}".into())]),
            machine_type: None,
            num_workers: None,
            max_workers: None,
            temp_location: None,
            staging_location: None,
            network: None,
            subnetwork: None,
            private_ips: false,
            service_account: None,
            labels: BTreeMap::new(),
            worker_image: None,
            additional_experiments: Vec::new(),
            streaming: false,
            settle: None,
        });
        let err = spec.rendered(&BTreeMap::new()).unwrap_err();
        assert!(err.contains("batch.parameters.query"), "{err}");
    }
}
