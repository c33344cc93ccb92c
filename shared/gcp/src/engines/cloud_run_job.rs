//! Cloud Run job executions through the Cloud Run Admin API (`run.v2`).
//!
//! Cloud Run names an execution itself (`jobs.run` takes no execution id, and its overrides
//! carry no labels), so each execution carries its job id in the environment variable
//! [`CLOUD_RUN_JOB_ID_ENV`], and is found again by it.
//! - submit: first a look-up (`GET v2/projects/P/locations/R/jobs/J/executions`, paged): an
//!   execution whose container environment holds the job id, in any state, is adopted. Else
//!   `POST v2/projects/P/locations/R/jobs/J:run` with `overrides` (`containerOverrides`:
//!   args, env; `taskCount`; `timeout`); the answer's operation carries the new execution
//!   (`metadata`), whose name is kept.
//! - state: `GET v2/{execution}`; the `Completed` condition and the task counts say what it
//!   is ([`state_of`]).
//! - cancel: `POST v2/{execution}:cancel`; an execution gone or ended needs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};

use super::api::{Api, final_unless_transient, object, seg, text_at};
use conveyor_core::config::{BatchSpec, CLOUD_RUN_JOB_ID_ENV, CloudRunJob};
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Pages of an execution list read before giving up (for now: a transient failure).
const MAX_LIST_PAGES: usize = 20;
/// Executions per page of the list.
const PAGE_SIZE: u32 = 100;

/// Cloud Run jobs: one execution per job id.
#[derive(Clone)]
pub struct CloudRunJobEngine {
    api: Api,
    base: String,
    /// Execution names by job id, as found; the look-up finds them again after a restart.
    names: Arc<Mutex<HashMap<String, String>>>,
}

fn spec_of(spec: &BatchSpec) -> Result<&CloudRunJob, PortError> {
    match spec {
        BatchSpec::CloudRunJob(s) => Ok(s),
        other => Err(PortError::permanent(format!(
            "the cloud_run_job engine cannot run a {} batch",
            other.engine()
        ))),
    }
}

/// The `RunJobRequest` of a (rendered) spec for `job_id`.
fn run_body(spec: &CloudRunJob, job_id: &JobId) -> Value {
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    env.push(json!({"name": CLOUD_RUN_JOB_ID_ENV, "value": job_id.as_str()}));
    let container = object([
        ("name", json!(spec.container)),
        ("args", json!(spec.args)),
        ("env", json!(env)),
    ]);
    json!({
        "overrides": object([
            ("containerOverrides", json!([container])),
            ("taskCount", json!(spec.task_count)),
            (
                "timeout",
                json!(spec.task_timeout.map(|t| format!("{}s", t.as_secs()))),
            ),
        ])
    })
}

/// Whether `execution`'s containers carry `job_id` in [`CLOUD_RUN_JOB_ID_ENV`].
fn carries(execution: &Value, job_id: &str) -> bool {
    execution
        .pointer("/template/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("env").and_then(Value::as_array))
        .flatten()
        .any(|e| {
            text_at(e, &["name"]) == Some(CLOUD_RUN_JOB_ID_ENV)
                && text_at(e, &["value"]) == Some(job_id)
        })
}

/// An execution's state in the engine's names (`PENDING`, `RUNNING`, `CANCELLING`,
/// `SUCCEEDED`, `FAILED`, `CANCELLED`), with the failure's message.
///
/// The `Completed` condition decides: `CONDITION_SUCCEEDED` is success, `CONDITION_FAILED` a
/// failure (a cancellation when its `executionReason` is `CANCELLED`). Until then an
/// execution being cancelled (`executionReason: CANCELLING` on any condition) is CANCELLING,
/// one with a start time or running tasks is RUNNING, else PENDING. An execution with a
/// completion time but no decided condition is decided by its task counts.
pub(super) fn state_of(execution: &Value) -> (&'static str, Option<String>) {
    let conditions: Vec<&Value> = execution
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let completed = conditions
        .iter()
        .find(|c| text_at(c, &["type"]) == Some("Completed"));
    let message = |c: &Value| text_at(c, &["message"]).map(|m| m.chars().take(1000).collect());
    if let Some(c) = completed {
        match text_at(c, &["state"]) {
            Some("CONDITION_SUCCEEDED") => return ("SUCCEEDED", None),
            Some("CONDITION_FAILED") if text_at(c, &["executionReason"]) == Some("CANCELLED") => {
                return ("CANCELLED", message(c));
            }
            Some("CONDITION_FAILED") => {
                return (
                    "FAILED",
                    message(c).or_else(|| Some("the execution failed".to_owned())),
                );
            }
            _ => {}
        }
    }
    let count = |k: &str| execution.get(k).and_then(Value::as_i64).unwrap_or(0);
    if text_at(execution, &["completionTime"]).is_some() {
        let tasks = count("taskCount").max(1);
        return if count("succeededCount") >= tasks {
            ("SUCCEEDED", None)
        } else if count("cancelledCount") > 0 {
            ("CANCELLED", None)
        } else {
            (
                "FAILED",
                Some(format!(
                    "the execution completed with {} of {tasks} tasks succeeded",
                    count("succeededCount")
                )),
            )
        };
    }
    if conditions
        .iter()
        .any(|c| text_at(c, &["executionReason"]) == Some("CANCELLING"))
    {
        return ("CANCELLING", None);
    }
    if text_at(execution, &["startTime"]).is_some() || count("runningCount") > 0 {
        ("RUNNING", None)
    } else {
        ("PENDING", None)
    }
}

impl CloudRunJobEngine {
    pub(super) fn new(api: Api, base: String) -> Self {
        Self {
            api,
            base,
            names: Arc::default(),
        }
    }

    fn job_url(&self, spec: &CloudRunJob) -> String {
        format!(
            "{}/v2/projects/{}/locations/{}/jobs/{}",
            self.base,
            seg(&spec.project),
            seg(&spec.region),
            seg(&spec.job)
        )
    }

    /// The URL of an execution by its full name (`projects/P/locations/R/jobs/J/executions/E`).
    fn execution_url(&self, name: &str) -> String {
        let path: Vec<String> = name.split('/').map(seg).collect();
        format!("{}/v2/{}", self.base, path.join("/"))
    }

    fn remember(&self, job_id: &str, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_id.to_owned(), name.to_owned());
    }

    /// The name of the execution that carries `job_id`, if there is one.
    async fn find(&self, spec: &CloudRunJob, job_id: &JobId) -> Result<Option<String>, PortError> {
        let known = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job_id.as_str())
            .cloned();
        if known.is_some() {
            return Ok(known);
        }
        let first = format!("{}/executions?pageSize={PAGE_SIZE}", self.job_url(spec));
        let what = format!("list executions of Cloud Run job {}", spec.job);
        let mut url = first.clone();
        for _ in 0..MAX_LIST_PAGES {
            let list = self.api.call(Method::GET, &url, None, &what).await?;
            let name = list
                .get("executions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| carries(e, job_id.as_str()))
                .find_map(|e| text_at(e, &["name"]).map(str::to_owned));
            if let Some(name) = name {
                self.remember(job_id.as_str(), &name);
                return Ok(Some(name));
            }
            match text_at(&list, &["nextPageToken"]).filter(|t| !t.is_empty()) {
                Some(token) => url = format!("{first}&pageToken={}", seg(token)),
                None => return Ok(None),
            }
        }
        Err(PortError::transient(format!(
            "{what}: no answer after {MAX_LIST_PAGES} pages"
        )))
    }
}

#[async_trait]
impl BatchEngine for CloudRunJobEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        if self.find(spec, &req.job_id).await?.is_some() {
            return Ok(Submitted {
                job_id: req.job_id.clone(),
                adopted: true,
            });
        }
        let url = format!("{}:run", self.job_url(spec));
        let what = format!("run Cloud Run job {} as {}", spec.job, req.job_id);
        let body = run_body(spec, &req.job_id);
        let operation = self
            .api
            .call(Method::POST, &url, Some(&body), &what)
            .await
            .map_err(final_unless_transient)?;
        if let Some(name) = text_at(&operation, &["metadata", "name"]) {
            self.remember(req.job_id.as_str(), name);
        }
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted: false,
        })
    }

    /// The execution carrying the job id, if one was started (by another delivery that
    /// holds the submit claim): never runs the job.
    async fn adopt(&self, req: &BatchRequest) -> Result<Option<Submitted>, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        Ok(self.find(spec, &req.job_id).await?.map(|_| Submitted {
            job_id: req.job_id.clone(),
            adopted: true,
        }))
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let s = spec_of(spec)?;
        let Some(name) = self.find(s, job_id).await? else {
            return Err(PortError::not_found(format!(
                "Cloud Run execution of job {} carrying {job_id}",
                s.job
            )));
        };
        let what = format!("get Cloud Run execution {name}");
        let execution = self
            .api
            .call(Method::GET, &self.execution_url(&name), None, &what)
            .await?;
        let (state, error) = state_of(&execution);
        Ok(JobState {
            state: state.to_owned(),
            terminal: spec.is_terminal(state),
            error,
            log: None,
        })
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let current = match self.state(spec, job_id).await {
            Ok(s) => s,
            Err(PortError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if current.terminal || current.state == "CANCELLING" {
            return Ok(());
        }
        let s = spec_of(spec)?;
        let Some(name) = self.find(s, job_id).await? else {
            return Ok(());
        };
        let url = format!("{}:cancel", self.execution_url(&name));
        let what = format!("cancel Cloud Run execution {name}");
        match self
            .api
            .call(Method::POST, &url, Some(&json!({})), &what)
            .await
        {
            // Gone, or ended in between: nothing left to cancel.
            Ok(_) | Err(PortError::NotFound(_) | PortError::Precondition(_)) => Ok(()),
            Err(e) => Err(final_unless_transient(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use conveyor_core::names::{PipelineName, RunId};

    #[test]
    fn the_run_overrides_args_env_tasks_and_timeout_and_carries_the_job_id() {
        let spec = CloudRunJob {
            project: "my-project".into(),
            region: "us-central1".into(),
            job: "exporter".into(),
            container: None,
            args: vec!["--date=2026-11-20".into()],
            env: BTreeMap::from([("MODE".into(), "full".into())]),
            task_count: Some(2),
            task_timeout: Some(Duration::from_secs(1800)),
        };
        let run = RunId::derive(&PipelineName::parse("p").expect("name"), &["x"]);
        let job_id = JobId::derive("batch", &run, 1);
        assert_eq!(
            run_body(&spec, &job_id),
            json!({"overrides": {
                "containerOverrides": [{
                    "args": ["--date=2026-11-20"],
                    "env": [
                        {"name": "MODE", "value": "full"},
                        {"name": "CONVEYOR_JOB_ID", "value": job_id.as_str()},
                    ],
                }],
                "taskCount": 2,
                "timeout": "1800s",
            }})
        );
        let execution = json!({"template": {"containers": [{"env": [
            {"name": "CONVEYOR_JOB_ID", "value": job_id.as_str()}]}]}});
        assert!(carries(&execution, job_id.as_str()));
        assert!(!carries(&execution, "cv-other"));
    }

    #[test]
    fn an_executions_state_comes_from_its_completed_condition_then_its_counts() {
        let completed = |state: &str, reason: &str| {
            json!({"conditions": [{"type": "Completed", "state": state,
                "executionReason": reason, "message": "Task exporter-x-0 failed: exit 2"}]})
        };
        assert_eq!(
            state_of(&completed("CONDITION_SUCCEEDED", "")).0,
            "SUCCEEDED"
        );
        let (state, error) = state_of(&completed("CONDITION_FAILED", "NON_ZERO_EXIT_CODE"));
        assert_eq!(state, "FAILED");
        assert_eq!(error.as_deref(), Some("Task exporter-x-0 failed: exit 2"));
        assert_eq!(
            state_of(&completed("CONDITION_FAILED", "CANCELLED")).0,
            "CANCELLED"
        );
        assert_eq!(
            state_of(&completed("CONDITION_RECONCILING", "CANCELLING")).0,
            "CANCELLING"
        );
        assert_eq!(state_of(&json!({})).0, "PENDING");
        assert_eq!(
            state_of(&json!({"startTime": "2026-11-20T02:00:00Z"})).0,
            "RUNNING"
        );
        let done = |succeeded: i64| {
            json!({"completionTime": "2026-11-20T02:10:00Z", "taskCount": 2,
                "succeededCount": succeeded})
        };
        assert_eq!(state_of(&done(2)).0, "SUCCEEDED");
        assert_eq!(state_of(&done(1)).0, "FAILED");
    }
}
