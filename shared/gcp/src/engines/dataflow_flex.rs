//! Dataflow flex-template jobs through the Dataflow REST API (`v1b3`).
//!
//! The job id is the Dataflow `jobName`; Dataflow assigns the job's own id.
//! - submit: first a look-up by name (`GET /v1b3/projects/P/locations/R/jobs?name=N&filter=ALL`):
//!   a job of that name, in any state, is adopted (Dataflow refuses a second *active* job of a
//!   name but would happily start one after the first ended). Else
//!   `POST .../flexTemplates:launch`; a 409 (`ALREADY_EXISTS`, a launch racing this one) is
//!   adopted too.
//! - state: `GET .../jobs/ID` (`currentState`); on failure the job's newest error message.
//! - cancel: `PUT .../jobs/ID` with `requestedState: JOB_STATE_CANCELLED` (jobs.update);
//!   drain (a streaming job): the same with `JOB_STATE_DRAINING`.
//! - A streaming job (`streaming: true`) never ends by itself: `JOB_STATE_RUNNING` is
//!   reported terminal, and so a success, once Dataflow's `currentStateTime` is `settle` old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};

use super::api::{Api, final_unless_transient, object, seg, text_at};
use conveyor_core::config::{BatchSpec, DataflowFlex};
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Pages of a job list read before giving up (for now: a transient failure).
const MAX_LIST_PAGES: usize = 20;

/// Dataflow flex templates: one job per job name.
#[derive(Clone)]
pub struct DataflowFlexEngine {
    api: Api,
    base: String,
    /// Dataflow job ids by job name, as found; the look-up by name finds them again after a
    /// restart.
    ids: Arc<Mutex<HashMap<String, String>>>,
}

fn spec_of(spec: &BatchSpec) -> Result<&DataflowFlex, PortError> {
    match spec {
        BatchSpec::DataflowFlex(s) => Ok(s),
        other => Err(PortError::wrong_engine("dataflow_flex", other)),
    }
}

/// The Dataflow job name of a job id (`[a-z]([-a-z0-9]*[a-z0-9])?`, which [`JobId::derive`]
/// keeps to once `_` is `-`).
fn job_name(job_id: &JobId) -> String {
    job_id.as_str().replace('_', "-")
}

/// The `LaunchFlexTemplateRequest` of a (rendered) spec.
fn launch_body(spec: &DataflowFlex, name: &str) -> Value {
    let environment = object([
        ("machineType", json!(spec.machine_type)),
        ("numWorkers", json!(spec.num_workers)),
        ("maxWorkers", json!(spec.max_workers)),
        ("tempLocation", json!(spec.temp_location)),
        ("stagingLocation", json!(spec.staging_location)),
        ("network", json!(spec.network)),
        ("subnetwork", json!(spec.subnetwork)),
        (
            "ipConfiguration",
            if spec.private_ips {
                json!("WORKER_IP_PRIVATE")
            } else {
                Value::Null
            },
        ),
        ("serviceAccountEmail", json!(spec.service_account)),
        ("additionalUserLabels", json!(spec.labels)),
        ("sdkContainerImage", json!(spec.worker_image)),
        ("additionalExperiments", json!(spec.additional_experiments)),
    ]);
    json!({
        "launchParameter": object([
            ("jobName", json!(name)),
            ("containerSpecGcsPath", json!(spec.template)),
            ("parameters", json!(spec.parameters)),
            ("environment", environment),
        ])
    })
}

/// Whether a running job has been in its current state for `settle`, by Dataflow's
/// `currentStateTime` (a job without one has not settled).
fn settled(job: &Value, settle: std::time::Duration) -> bool {
    let Some(since) = text_at(job, &["currentStateTime"])
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return false;
    };
    let running_for = chrono::Utc::now().signed_duration_since(since);
    running_for.to_std().is_ok_and(|d| d >= settle)
}

impl DataflowFlexEngine {
    pub(super) fn new(api: Api, base: String) -> Self {
        Self {
            api,
            base,
            ids: Arc::default(),
        }
    }

    fn location_url(&self, spec: &DataflowFlex) -> String {
        format!(
            "{}/v1b3/projects/{}/locations/{}",
            self.base,
            seg(&spec.project),
            seg(&spec.region)
        )
    }

    fn remember(&self, name: &str, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), id.to_owned());
    }

    /// The Dataflow id of the job called `name`, if there is one.
    async fn find(&self, spec: &DataflowFlex, name: &str) -> Result<Option<String>, PortError> {
        let known = self
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        if known.is_some() {
            return Ok(known);
        }
        let first = format!(
            "{}/jobs?name={}&filter=ALL",
            self.location_url(spec),
            seg(name)
        );
        let what = format!("list Dataflow jobs named {name}");
        // The list is paged, and a page may hold no job yet name a next one: follow
        // `nextPageToken` (a bounded number of pages) until the job is found.
        let mut url = first.clone();
        for _ in 0..MAX_LIST_PAGES {
            let list = self.api.call(Method::GET, &url, None, &what).await?;
            // ALL lists active jobs first, then the newest ended one.
            let id = list
                .get("jobs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|j| text_at(j, &["name"]) == Some(name))
                .find_map(|j| text_at(j, &["id"]).map(str::to_owned));
            if let Some(id) = &id {
                self.remember(name, id);
                return Ok(Some(id.clone()));
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

    /// The newest error message of a failed job, best effort.
    async fn last_error(&self, spec: &DataflowFlex, id: &str) -> Option<String> {
        let url = format!(
            "{}/jobs/{}/messages?minimumImportance=JOB_MESSAGE_ERROR&pageSize=20",
            self.location_url(spec),
            seg(id)
        );
        let what = format!("list messages of Dataflow job {id}");
        let messages = self.api.call(Method::GET, &url, None, &what).await.ok()?;
        messages
            .get("jobMessages")?
            .as_array()?
            .iter()
            .rev()
            .find_map(|m| text_at(m, &["messageText"]))
            .map(|t| t.chars().take(1000).collect())
    }
}

#[async_trait]
impl BatchEngine for DataflowFlexEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        let name = job_name(&req.job_id);
        let adopted = Submitted::adopted(&req.job_id);
        if self.find(spec, &name).await?.is_some() {
            return Ok(adopted);
        }
        let url = format!("{}/flexTemplates:launch", self.location_url(spec));
        let what = format!("launch Dataflow flex template as {name}");
        let body = launch_body(spec, &name);
        match self.api.call(Method::POST, &url, Some(&body), &what).await {
            Ok(launched) => {
                if let Some(id) = text_at(&launched, &["job", "id"]) {
                    self.remember(&name, id);
                }
                Ok(Submitted::started(&req.job_id))
            }
            Err(PortError::Conflict(_)) => Ok(adopted),
            Err(e) => Err(final_unless_transient(e)),
        }
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let s = spec_of(spec)?;
        let name = job_name(job_id);
        let Some(id) = self.find(s, &name).await? else {
            return Err(PortError::not_found(format!("Dataflow job named {name}")));
        };
        let url = format!("{}/jobs/{}", self.location_url(s), seg(&id));
        let what = format!("get Dataflow job {id} ({name})");
        let job = self.api.call(Method::GET, &url, None, &what).await?;
        let state = text_at(&job, &["currentState"])
            .unwrap_or("JOB_STATE_UNKNOWN")
            .to_owned();
        let terminal = match s.streaming_settle() {
            Some(settle) if state == "JOB_STATE_RUNNING" => settled(&job, settle),
            _ => spec.is_terminal(&state),
        };
        let error = if terminal && state != "JOB_STATE_DONE" {
            self.last_error(s, &id).await
        } else {
            None
        };
        Ok(JobState::reported(state, terminal, error))
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.request_state(spec, job_id, "JOB_STATE_CANCELLED", "cancel")
            .await
    }

    async fn drain(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.request_state(spec, job_id, "JOB_STATE_DRAINING", "drain")
            .await
    }
}

impl DataflowFlexEngine {
    /// Asks Dataflow to move a job that has not ended to `requested` (jobs.update); a job
    /// gone or ended already needs nothing.
    async fn request_state(
        &self,
        spec: &BatchSpec,
        job_id: &JobId,
        requested: &str,
        verb: &str,
    ) -> Result<(), PortError> {
        let current = match self.state(spec, job_id).await {
            Ok(s) => s,
            Err(PortError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // A streaming job reported terminal while RUNNING (it settled) has not ended.
        if current.terminal && current.state != "JOB_STATE_RUNNING" {
            return Ok(());
        }
        let s = spec_of(spec)?;
        let name = job_name(job_id);
        let Some(id) = self.find(s, &name).await? else {
            return Ok(());
        };
        let url = format!("{}/jobs/{}", self.location_url(s), seg(&id));
        let what = format!("{verb} Dataflow job {id} ({name})");
        let body = json!({ "requestedState": requested });
        self.api.stop(Method::PUT, &url, Some(&body), &what).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_launch_names_the_job_template_parameters_and_environment() {
        let spec = DataflowFlex {
            project: "my-project".into(),
            region: "us-central1".into(),
            template: "gs://dataflow-templates-us-central1/latest/flex/SQLServer_to_BigQuery"
                .into(),
            parameters: BTreeMap::from([
                ("connectionURL".into(), "jdbc:sqlserver://db:1433".into()),
                ("outputTable".into(), "my-project:ds.t".into()),
            ]),
            machine_type: Some("e2-standard-2".into()),
            num_workers: Some(1),
            max_workers: Some(4),
            temp_location: Some("gs://bucket/tmp".into()),
            staging_location: None,
            network: None,
            subnetwork: Some("regions/us-central1/subnetworks/default".into()),
            private_ips: true,
            service_account: Some("df@my-project.iam.gserviceaccount.com".into()),
            labels: BTreeMap::new(),
            worker_image: Some("us-docker.pkg.dev/my-project/beam/worker:2.61".into()),
            additional_experiments: vec!["use_runner_v2".into()],
            streaming: false,
            settle: None,
        };
        assert_eq!(
            launch_body(&spec, "cv-batch-x-a1"),
            json!({"launchParameter": {
                "jobName": "cv-batch-x-a1",
                "containerSpecGcsPath": "gs://dataflow-templates-us-central1/latest/flex/SQLServer_to_BigQuery",
                "parameters": {
                    "connectionURL": "jdbc:sqlserver://db:1433",
                    "outputTable": "my-project:ds.t",
                },
                "environment": {
                    "machineType": "e2-standard-2",
                    "numWorkers": 1,
                    "maxWorkers": 4,
                    "tempLocation": "gs://bucket/tmp",
                    "subnetwork": "regions/us-central1/subnetworks/default",
                    "ipConfiguration": "WORKER_IP_PRIVATE",
                    "serviceAccountEmail": "df@my-project.iam.gserviceaccount.com",
                    "sdkContainerImage": "us-docker.pkg.dev/my-project/beam/worker:2.61",
                    "additionalExperiments": ["use_runner_v2"],
                },
            }})
        );
    }
}
