//! Cloud Data Fusion pipeline runs through the instance's CDAP REST API (`v3`).
//!
//! CDAP assigns run ids itself, so Conveyor's job id travels in the run's runtime arguments
//! (`conveyor.job_id`, with `conveyor.run_id` and `conveyor.attempt`) and is how a run is found
//! again:
//! - submit: first a look-up of the pipeline's recent runs
//!   (`GET {instance}/v3/namespaces/NS/apps/P/workflows/DataPipelineWorkflow/runs?limit=100`,
//!   each with its `properties.runtimeArgs`): a run carrying the job id is adopted. Else the
//!   run is started through CDAP's batch start (`POST {instance}/v3/namespaces/NS/start`, body
//!   `[{appId, programType: workflow, programId: DataPipelineWorkflow, runtimeargs}]`), which
//!   answers with the `runId` (the single-program `.../workflows/DataPipelineWorkflow/start`
//!   answers 200 without one; Airflow's Data Fusion operator uses the batch start for that
//!   reason).
//! - state: `GET .../workflows/DataPipelineWorkflow/runs/RUN` (`status`). RUNNING is never
//!   success (seed 004): only COMPLETED is, unless the pipeline says otherwise.
//! - cancel: `POST .../workflows/DataPipelineWorkflow/runs/RUN/stop`.
//!
//! A job with `for_each` rows (or a Data Fusion pipeline's `runs`, their shorthand) has one
//! Conveyor run per active row (see the submit step); the row's columns come in the request's
//! `row` and go over `runtime_args`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};

use super::api::{Api, base, final_unless_transient, seg, text_at};
use conveyor_core::config::{BatchSpec, DataFusion};
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// The runtime argument that carries Conveyor's job id.
pub const JOB_ID_ARG: &str = "conveyor.job_id";
/// The program every Data Fusion batch pipeline runs.
const WORKFLOW: &str = "DataPipelineWorkflow";
/// Recent runs searched for an adopted one.
const RECENT_RUNS: u32 = 100;

/// Cloud Data Fusion: one CDAP run per job id.
#[derive(Clone)]
pub struct DataFusionEngine {
    api: Api,
    /// CDAP run ids by job id, as found; the look-up by runtime argument finds them again
    /// after a restart.
    runs: Arc<Mutex<HashMap<String, String>>>,
}

fn spec_of(spec: &BatchSpec) -> Result<&DataFusion, PortError> {
    match spec {
        BatchSpec::DataFusion(s) => Ok(s),
        other => Err(PortError::wrong_engine("data_fusion", other)),
    }
}

/// The runtime arguments of a run: the pipeline's, the row's over them, and Conveyor's ids.
fn runtime_args(
    spec: &DataFusion,
    req: &BatchRequest,
) -> Result<BTreeMap<String, String>, PortError> {
    let mut args = spec.runtime_args.clone();
    args.extend(req.row.clone());
    args.insert(JOB_ID_ARG.to_owned(), req.job_id.to_string());
    args.insert("conveyor.run_id".to_owned(), req.run_id.to_string());
    args.insert("conveyor.attempt".to_owned(), req.attempt.to_string());
    Ok(args)
}

/// The body of CDAP's batch start for one run of the pipeline.
fn start_body(spec: &DataFusion, args: &BTreeMap<String, String>) -> Value {
    json!([{
        "appId": spec.pipeline,
        "programType": "workflow",
        "programId": WORKFLOW,
        "runtimeargs": args,
    }])
}

/// Whether a run record carries `job_id` in its runtime arguments (a JSON object held as a
/// string in `properties.runtimeArgs`).
fn carries(record: &Value, job_id: &str) -> bool {
    text_at(record, &["properties", "runtimeArgs"])
        .and_then(|s| serde_json::from_str::<BTreeMap<String, String>>(s).ok())
        .is_some_and(|args| args.get(JOB_ID_ARG).map(String::as_str) == Some(job_id))
}

/// The HTTP status of one item of a batch answer, as a port error: classified as an answer
/// of that status is ([`crate::rest::classify`]), and final unless it may pass.
fn item_error(status: u64, what: &str, error: &str) -> PortError {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    final_unless_transient(
        crate::rest::ApiError::from_body(status, error.as_bytes(), None).into_port(what),
    )
}

impl DataFusionEngine {
    pub(super) fn new(api: Api) -> Self {
        Self {
            api,
            runs: Arc::default(),
        }
    }

    fn workflow_url(spec: &DataFusion) -> String {
        format!(
            "{}/v3/namespaces/{}/apps/{}/workflows/{WORKFLOW}",
            base(&spec.instance_url),
            seg(&spec.namespace),
            seg(&spec.pipeline)
        )
    }

    fn remember(&self, job_id: &JobId, run: &str) {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_id.to_string(), run.to_owned());
    }

    /// The run record of `job_id`'s run, if there is one.
    async fn find(&self, spec: &DataFusion, job_id: &JobId) -> Result<Option<Value>, PortError> {
        let known = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job_id.as_str())
            .cloned();
        let workflow = Self::workflow_url(spec);
        if let Some(run) = known {
            let url = format!("{workflow}/runs/{}", seg(&run));
            let what = format!("get Data Fusion run {run} of {}", spec.pipeline);
            return match self.api.call(Method::GET, &url, None, &what).await {
                Ok(run) => Ok(Some(run)),
                Err(PortError::NotFound(_)) => Ok(None),
                Err(e) => Err(final_unless_transient(e)),
            };
        }
        let url = format!("{workflow}/runs?limit={RECENT_RUNS}");
        let what = format!("list Data Fusion runs of {}", spec.pipeline);
        let list = self
            .api
            .call(Method::GET, &url, None, &what)
            .await
            .map_err(final_unless_transient)?;
        let found = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| carries(r, job_id.as_str()))
            .cloned();
        if let Some(run) = found.as_ref().and_then(|r| text_at(r, &["runid"])) {
            self.remember(job_id, run);
        }
        Ok(found)
    }
}

#[async_trait]
impl BatchEngine for DataFusionEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        let args = runtime_args(spec, req)?;
        if self.find(spec, &req.job_id).await?.is_some() {
            return Ok(Submitted::adopted(&req.job_id));
        }
        let url = format!(
            "{}/v3/namespaces/{}/start",
            base(&spec.instance_url),
            seg(&spec.namespace)
        );
        let what = format!("start Data Fusion pipeline {}", spec.pipeline);
        let answer = self
            .api
            .call(Method::POST, &url, Some(&start_body(spec, &args)), &what)
            .await
            .map_err(final_unless_transient)?;
        let item = answer.get(0).cloned().unwrap_or(Value::Null);
        let status = item
            .get("statusCode")
            .and_then(Value::as_u64)
            .unwrap_or(200);
        if !(200..300).contains(&status) {
            let error = text_at(&item, &["error"]).unwrap_or("no reason given");
            return Err(item_error(status, &what, error));
        }
        if let Some(run) = text_at(&item, &["runId"]) {
            self.remember(&req.job_id, run);
        }
        Ok(Submitted::started(&req.job_id))
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let s = spec_of(spec)?;
        let Some(run) = self.find(s, job_id).await? else {
            return Err(PortError::not_found(format!(
                "Data Fusion run of {} with {JOB_ID_ARG}={job_id}",
                s.pipeline
            )));
        };
        let state = text_at(&run, &["status"]).unwrap_or("PENDING").to_owned();
        let terminal = spec.is_terminal(&state);
        let error = (terminal && state != "COMPLETED").then(|| {
            format!(
                "Data Fusion run {} of {} ended {state}",
                text_at(&run, &["runid"]).unwrap_or("?"),
                s.pipeline
            )
        });
        Ok(JobState::reported(state, terminal, error))
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let s = spec_of(spec)?;
        let Some(run) = self.find(s, job_id).await? else {
            return Ok(());
        };
        if spec.is_terminal(text_at(&run, &["status"]).unwrap_or_default()) {
            return Ok(());
        }
        let Some(id) = text_at(&run, &["runid"]) else {
            return Err(PortError::permanent(format!(
                "the Data Fusion run of {job_id} has no run id"
            )));
        };
        let url = format!("{}/runs/{}/stop", Self::workflow_url(s), seg(id));
        let what = format!("stop Data Fusion run {id} of {}", s.pipeline);
        match self.api.call(Method::POST, &url, None, &what).await {
            // Gone, or no longer running: stopped as far as it can be.
            Ok(_)
            | Err(PortError::NotFound(_) | PortError::Conflict(_) | PortError::Precondition(_)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::config::DataFusionRun;
    use conveyor_core::names::{PipelineName, RunId};

    fn seed_004() -> DataFusion {
        DataFusion {
            instance_url: "https://cdf-my-project-dot-usw1.datafusion.googleusercontent.com/api/"
                .into(),
            namespace: "default".into(),
            pipeline: "cdf_pipeline".into(),
            runtime_args: BTreeMap::from([("output_dataset".into(), "cdf_output".into())]),
            runs: vec![
                DataFusionRun {
                    name: None,
                    active: true,
                    args: BTreeMap::from([
                        ("business_unit".into(), "hr".into()),
                        ("data_source".into(), "engineer".into()),
                    ]),
                },
                DataFusionRun {
                    name: None,
                    active: true,
                    args: BTreeMap::from([
                        ("business_unit".into(), "hr".into()),
                        ("data_source".into(), "payroll".into()),
                    ]),
                },
            ],
        }
    }

    fn request(spec: &DataFusion, row: &[(&str, &str)]) -> BatchRequest {
        let run = RunId::derive(&PipelineName::parse("cdf").unwrap(), &["x"]);
        BatchRequest {
            job_id: JobId::derive("batch", &run, 2),
            run_id: run,
            attempt: 2,
            spec: BatchSpec::DataFusion(spec.clone()),
            vars: BTreeMap::new(),
            job: "batch".into(),
            row: row
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_row_runs_with_its_arguments_over_the_pipelines_and_conveyors_ids() {
        let spec = seed_004();
        let req = request(
            &spec,
            &[("business_unit", "hr"), ("data_source", "payroll")],
        );
        let args = runtime_args(&spec, &req).unwrap();
        assert_eq!(args["business_unit"], "hr");
        assert_eq!(args["data_source"], "payroll");
        assert_eq!(args["output_dataset"], "cdf_output");
        assert_eq!(args[JOB_ID_ARG], req.job_id.as_str());
        assert_eq!(args["conveyor.attempt"], "2");
        assert_eq!(
            start_body(&spec, &args)[0]["programId"],
            json!("DataPipelineWorkflow")
        );
        assert_eq!(start_body(&spec, &args)[0]["appId"], json!("cdf_pipeline"));
        let plain = runtime_args(&spec, &request(&spec, &[])).unwrap();
        assert!(!plain.contains_key("business_unit"));
    }

    #[test]
    fn a_run_record_is_recognised_by_its_job_id_argument() {
        let record = json!({
            "runid": "b08b351d",
            "status": "RUNNING",
            "properties": {"runtimeArgs": "{\"conveyor.job_id\":\"cv-batch-x-a1\",\"a\":\"b\"}"},
        });
        assert!(carries(&record, "cv-batch-x-a1"));
        assert!(!carries(&record, "cv-batch-x-a2"));
        assert!(!carries(&json!({"runid": "x"}), "cv-batch-x-a1"));
    }

    #[test]
    fn the_workflow_url_trims_the_instance_url() {
        assert_eq!(
            DataFusionEngine::workflow_url(&seed_004()),
            "https://cdf-my-project-dot-usw1.datafusion.googleusercontent.com/api/v3/namespaces/default/apps/cdf_pipeline/workflows/DataPipelineWorkflow"
        );
    }
}
