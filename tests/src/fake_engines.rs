//! A local fake of the batch engines' REST APIs, answering as the documented APIs do (paths,
//! bodies, state names): Dataproc batches, operations, clusters and jobs (`/v1/...`), Dataflow
//! flex templates and jobs (`/v1b3/...`), a Data Fusion instance's CDAP API
//! (`/api/v3/...`) and Cloud Run job executions (`/v2/...`). One server on 127.0.0.1, port 0, per test.
//!
//! Scriptable per test: the states each created job goes through (one script per job, in the
//! order the jobs are created; each read of a job gives its next state and the last one
//! sticks), faults to inject (`fail`: a status for the next matching calls, with Google's
//! error body: 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 400 INVALID_ARGUMENT, ...),
//! resources that exist already (`adopt`: the first create of each kind answers 409), how long
//! a cluster takes to come up and whether it ends in ERROR (`cluster_error`), and paged lists
//! (`page_size`). A cancel takes effect over two reads (the API's pending state first). Every
//! request is recorded for the test's assertions, and by the contract recorder every fake
//! shares (`conveyor_contract::record`): it refuses what Google's front end refuses (411
//! without a length, 400 for a request the API does not accept) and keeps each exchange for
//! the contract check of the test run.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The JSON body (`Null` when none).
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: String,
}

#[derive(Debug)]
struct Job {
    kind: &'static str,
    /// Batch id, Dataproc job id, Dataflow job id, or CDAP run id.
    id: String,
    /// The Dataflow job name; the id elsewhere.
    name: String,
    states: VecDeque<String>,
    cancelled: &'static str,
    operation: String,
    args: BTreeMap<String, String>,
    message: String,
    /// When the current state began (Dataflow's `currentStateTime`).
    since: chrono::DateTime<chrono::Utc>,
    /// A Cloud Run execution's tasks.
    task_count: i64,
    /// A Cloud Run execution's container arguments (`Null`: the job's own).
    container_args: Value,
}

impl Job {
    /// The state a read sees; the next read sees the next state, the last one sticks.
    fn read(&mut self) -> String {
        self.read_since().0
    }

    /// The state a read sees and when it began.
    fn read_since(&mut self) -> (String, chrono::DateTime<chrono::Utc>) {
        let state = self.states.front().cloned().unwrap_or_default();
        let since = self.since;
        if self.states.len() > 1 {
            self.states.pop_front();
            self.since = chrono::Utc::now();
        }
        (state, since)
    }

    /// A drain (Dataflow's streaming jobs): DRAINING, then DRAINED.
    fn drain(&mut self) {
        if self.current() != "JOB_STATE_DRAINING" && self.current() != "JOB_STATE_DRAINED" {
            self.states = VecDeque::from([
                "JOB_STATE_DRAINING".to_owned(),
                "JOB_STATE_DRAINED".to_owned(),
            ]);
            self.since = chrono::Utc::now();
        }
    }

    fn current(&self) -> String {
        self.states.front().cloned().unwrap_or_default()
    }

    /// A cancel takes effect over the next reads, as the real APIs' do: first the kind's
    /// in-between state (`CANCELLING`, `CANCEL_PENDING`, ...), then the cancelled one. A
    /// second cancel while pending changes nothing.
    fn cancel(&mut self) {
        let pending = match self.kind {
            "batch" => "CANCELLING",
            "job" => "CANCEL_PENDING",
            "dataflow" => "JOB_STATE_CANCELLING",
            "execution" => "CANCELLING",
            _ => "STOPPING",
        };
        if self.current() == pending || self.current() == self.cancelled {
            return;
        }
        self.states = VecDeque::from([pending.to_owned(), self.cancelled.to_owned()]);
        self.since = chrono::Utc::now();
    }
}

#[derive(Debug)]
struct Cluster {
    creating_reads: u32,
    deleted: bool,
    /// Set: the cluster goes to ERROR with this detail once it is done creating.
    error: Option<String>,
}

#[derive(Debug)]
struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    times: u32,
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Recorded>,
    scripts: Vec<Vec<String>>,
    created: usize,
    jobs: Vec<Job>,
    clusters: BTreeMap<String, Cluster>,
    cluster_creating_reads: u32,
    cluster_error: Option<String>,
    /// Lists answer at most this many items per page, with a `nextPageToken` (0: no paging).
    page_size: usize,
    faults: Vec<Fault>,
    /// Calls answered late: `(method, path_contains, milliseconds, times)`.
    delays: Vec<(String, String, u64, u32)>,
    adopt: bool,
    adopted_kinds: Vec<&'static str>,
    counter: u32,
}

impl Inner {
    fn next_script(&mut self) -> VecDeque<String> {
        let script = self
            .scripts
            .get(self.created.min(self.scripts.len().saturating_sub(1)))
            .cloned()
            .unwrap_or_else(|| vec!["RUNNING".to_owned()]);
        self.created += 1;
        script.into()
    }

    fn new_job(&mut self, kind: &'static str, id: &str, name: &str, cancelled: &'static str) {
        let states = self.next_script();
        self.counter += 1;
        let operation = format!(
            "projects/my-project/regions/us-central1/operations/op-{}",
            self.counter
        );
        self.jobs.push(Job {
            kind,
            id: id.to_owned(),
            name: name.to_owned(),
            states,
            cancelled,
            operation,
            args: BTreeMap::new(),
            message: String::new(),
            since: chrono::Utc::now(),
            task_count: 1,
            container_args: Value::Null,
        });
    }

    /// Whether this create should find its resource existing already (and so answer 409).
    fn adopting(&mut self, kind: &'static str) -> bool {
        if self.adopt && !self.adopted_kinds.contains(&kind) {
            self.adopted_kinds.push(kind);
            return true;
        }
        false
    }

    /// Creates the `kind` job `id` (named by its id, CANCELLED when cancelled), or answers
    /// 409 with `exists`: when it exists, or when the fake adopts `kind` (then the job is
    /// made first, as by an earlier delivery).
    fn create_once(&mut self, kind: &'static str, id: &str, exists: &str) -> Result<(), Answer> {
        if self.adopting(kind) {
            self.new_job(kind, id, id, "CANCELLED");
            return Err(error(409, "ALREADY_EXISTS", exists));
        }
        if self.job(kind, id).is_some() {
            return Err(error(409, "ALREADY_EXISTS", exists));
        }
        self.new_job(kind, id, id, "CANCELLED");
        Ok(())
    }

    fn job(&mut self, kind: &str, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.kind == kind && j.id == id)
    }
}

/// The fake server; dropped with the test's runtime.
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    wire: conveyor_contract::Recording,
}

type Answer = (StatusCode, axum::Json<Value>);

fn ok(v: Value) -> Answer {
    (StatusCode::OK, axum::Json(v))
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"error": {"code": status, "message": message, "status": code}})),
    )
}

fn google_code(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        _ => "UNAVAILABLE",
    }
}

impl Fake {
    /// Starts a fake on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            cluster_creating_reads: 1,
            ..Inner::default()
        }));
        let wire = conveyor_contract::Recording::new(
            "engines fake",
            &["dataproc", "dataflow", "cdap", "run"],
            true,
        );
        let app = conveyor_contract::record::layer(
            Router::new().fallback(handle).with_state(inner.clone()),
            &wire,
        );
        let url = crate::serve(app).await;
        Self { inner, url, wire }
    }

    /// Every exchange as the contract recorder saw it (headers and answers included).
    pub fn wire(&self) -> Vec<conveyor_contract::Recorded> {
        self.wire.requests()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The states of the jobs created from now on: the first job gets the first script, and so
    /// on; the last script serves every further job.
    pub fn script(&self, scripts: &[&[&str]]) -> &Self {
        self.lock().scripts = scripts
            .iter()
            .map(|s| s.iter().map(|x| (*x).to_owned()).collect())
            .collect();
        self
    }

    /// The next `times` calls of `method` on a path containing `path_contains` answer
    /// `status` (with Google's error body).
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, times: u32) -> &Self {
        self.lock().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            status,
            times,
        });
        self
    }

    /// The next `times` calls of `method` on a path containing `path_contains` are answered
    /// `ms` milliseconds late (answered as they would be when they arrive), so concurrent
    /// callers interleave as they would against a slow API.
    pub fn delay(&self, method: &str, path_contains: &str, ms: u64, times: u32) -> &Self {
        self.lock()
            .delays
            .push((method.to_owned(), path_contains.to_owned(), ms, times));
        self
    }

    /// The first create of each kind of resource finds it existing already: 409, and from
    /// then on the resource is there, with the next script.
    pub fn adopt(&self) -> &Self {
        self.lock().adopt = true;
        self
    }

    /// Cluster reads that still see CREATING before RUNNING (default 1).
    pub fn cluster_creating_reads(&self, n: u32) -> &Self {
        self.lock().cluster_creating_reads = n;
        self
    }

    /// Clusters created from now on go to ERROR with `detail` once they are done creating,
    /// as a cluster whose VMs cannot start does.
    pub fn cluster_error(&self, detail: &str) -> &Self {
        self.lock().cluster_error = Some(detail.to_owned());
        self
    }

    /// List calls that page (Dataflow's jobs list) answer `n` items per page with a
    /// `nextPageToken`, after a first page without items.
    pub fn page_size(&self, n: usize) -> &Self {
        self.lock().page_size = n;
        self
    }

    /// A Data Fusion run that exists already, carrying `args`, with the next script.
    pub fn existing_cdap_run(&self, args: &[(&str, &str)]) -> String {
        let mut inner = self.lock();
        inner.counter += 1;
        let run = format!("run-{}", inner.counter);
        inner.new_job("cdap", &run, &run, "KILLED");
        if let Some(job) = inner.jobs.last_mut() {
            job.args = args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        }
        run
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests of `method` whose path contains `path_contains`.
    pub fn calls(&self, method: &str, path_contains: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .collect()
    }

    /// The job id (`CONVEYOR_JOB_ID`) of every Cloud Run execution created, in order.
    pub fn executions_created(&self) -> Vec<String> {
        self.lock()
            .jobs
            .iter()
            .filter(|j| j.kind == "execution")
            .map(|j| j.args.get("CONVEYOR_JOB_ID").cloned().unwrap_or_default())
            .collect()
    }

    /// Clusters created and not deleted.
    pub fn live_clusters(&self) -> Vec<String> {
        self.lock()
            .clusters
            .iter()
            .filter(|(_, c)| !c.deleted)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let late = {
        let full = uri.to_string();
        let mut inner = inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .delays
            .iter_mut()
            .find(|d| d.3 > 0 && d.0 == method.as_str() && full.contains(&d.1))
            .map(|d| {
                d.3 -= 1;
                d.2
            })
    };
    if let Some(ms) = late {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut inner = inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    inner.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    });
    if let Some(fault) = inner
        .faults
        .iter_mut()
        .find(|f| f.times > 0 && f.method == method.as_str() && path.contains(&f.path_contains))
    {
        fault.times -= 1;
        let status = fault.status;
        return error(status, google_code(status), "injected fault");
    }
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["v1", "projects", _, "locations", _, "batches"] => {
            serverless_create(&mut inner, &uri, &body)
        }
        ["v1", "projects", _, "locations", _, "batches", id] => match inner.job("batch", id) {
            Some(job) => {
                let state = job.read();
                let message = if state == "FAILED" {
                    "Job failed with message [Exception in thread \"main\" KMS key not found]"
                } else {
                    ""
                };
                ok(json!({
                    "name": format!("projects/my-project/locations/us-central1/batches/{id}"),
                    "state": state,
                    "stateMessage": message,
                    "operation": job.operation,
                }))
            }
            None => error(404, "NOT_FOUND", "batch not found"),
        },
        ["v1", "projects", _, "regions", _, "operations", op] if method == Method::POST => {
            let Some(op) = op.strip_suffix(":cancel") else {
                return error(404, "NOT_FOUND", "no such method");
            };
            let wanted = format!("projects/my-project/regions/us-central1/operations/{op}");
            match inner.jobs.iter_mut().find(|j| j.operation == wanted) {
                Some(job) => {
                    job.cancel();
                    ok(json!({}))
                }
                None => error(404, "NOT_FOUND", "operation not found"),
            }
        }
        ["v1", "projects", _, "regions", _, "clusters"] if method == Method::POST => {
            let name = body["clusterName"].as_str().unwrap_or_default().to_owned();
            let creating = inner.cluster_creating_reads;
            if inner.adopting("cluster") {
                inner.clusters.insert(
                    name,
                    Cluster {
                        creating_reads: 0,
                        deleted: false,
                        error: None,
                    },
                );
                return error(409, "ALREADY_EXISTS", "Already exists: cluster");
            }
            if inner.clusters.get(&name).is_some_and(|c| !c.deleted) {
                return error(409, "ALREADY_EXISTS", "Already exists: cluster");
            }
            let error = inner.cluster_error.clone();
            inner.clusters.insert(
                name.clone(),
                Cluster {
                    creating_reads: creating,
                    deleted: false,
                    error,
                },
            );
            ok(
                json!({"name": "projects/my-project/regions/us-central1/operations/create", "metadata": {"clusterName": name}}),
            )
        }
        ["v1", "projects", _, "regions", _, "clusters", name] => {
            let Some(cluster) = inner.clusters.get_mut(*name).filter(|c| !c.deleted) else {
                return error(404, "NOT_FOUND", "Not found: Cluster");
            };
            if method == Method::DELETE {
                cluster.deleted = true;
                return ok(
                    json!({"name": "projects/my-project/regions/us-central1/operations/delete"}),
                );
            }
            if cluster.creating_reads > 0 {
                cluster.creating_reads -= 1;
                return ok(json!({"clusterName": name, "status": {"state": "CREATING"}}));
            }
            match &cluster.error {
                Some(detail) => ok(json!({"clusterName": name, "status": {
                    "state": "ERROR", "detail": detail,
                }})),
                None => ok(json!({"clusterName": name, "status": {"state": "RUNNING"}})),
            }
        }
        ["v1", "projects", _, "regions", _, "jobs:submit"] => {
            let id = body["job"]["reference"]["jobId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let cluster = body["job"]["placement"]["clusterName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let running = inner
                .clusters
                .get(&cluster)
                .is_some_and(|c| !c.deleted && c.creating_reads == 0 && c.error.is_none());
            if !running {
                return error(400, "FAILED_PRECONDITION", "cluster is not running");
            }
            if let Err(conflict) = inner.create_once("job", &id, "Already exists: Job") {
                return conflict;
            }
            ok(json!({"reference": {"jobId": id}, "status": {"state": "PENDING"}}))
        }
        ["v1", "projects", _, "regions", _, "jobs", id] => {
            if let Some(id) = id.strip_suffix(":cancel") {
                return match inner.job("job", id) {
                    Some(job) => {
                        job.cancel();
                        ok(
                            json!({"reference": {"jobId": id}, "status": {"state": "CANCEL_PENDING"}}),
                        )
                    }
                    None => error(404, "NOT_FOUND", "Not found: Job"),
                };
            }
            match inner.job("job", id) {
                Some(job) => {
                    let state = job.read();
                    let details = if state == "ERROR" {
                        "Job failed with message [run_replicator.sh: exit status 2]"
                    } else {
                        ""
                    };
                    ok(json!({
                        "reference": {"jobId": id},
                        "status": {"state": state, "details": details},
                    }))
                }
                None => error(404, "NOT_FOUND", "Not found: Job"),
            }
        }
        ["v1b3", "projects", _, "locations", _, "jobs"] => {
            let name = query(&uri, "name").unwrap_or_default();
            let jobs: Vec<Value> = inner
                .jobs
                .iter()
                .filter(|j| j.kind == "dataflow" && j.name == name)
                .map(|j| json!({"id": j.id, "name": j.name, "currentState": j.current()}))
                .collect();
            if inner.page_size == 0 {
                return ok(json!({ "jobs": jobs }));
            }
            // Paged as Dataflow does: `pageToken` is the offset here; the first page is
            // empty (Dataflow may answer a page without jobs but with a next token).
            let offset: usize = query(&uri, "pageToken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let (page, next) = if offset == 0 && query(&uri, "pageToken").is_none() {
                (Vec::new(), Some(0))
            } else {
                let end = (offset + inner.page_size).min(jobs.len());
                let page = jobs.get(offset..end).unwrap_or_default().to_vec();
                (page, (end < jobs.len()).then_some(end))
            };
            match next {
                Some(n) => ok(json!({"jobs": page, "nextPageToken": n.to_string()})),
                None => ok(json!({ "jobs": page })),
            }
        }
        [
            "v1b3",
            "projects",
            _,
            "locations",
            _,
            "flexTemplates:launch",
        ] => {
            let name = body["launchParameter"]["jobName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            inner.counter += 1;
            let id = format!("2026-11-21_02_00_00-{}", 1000 + inner.counter);
            if inner.adopting("dataflow") {
                inner.new_job("dataflow", &id, &name, "JOB_STATE_CANCELLED");
                return error(
                    409,
                    "ALREADY_EXISTS",
                    &format!("There is already an active job named {name}."),
                );
            }
            let active = inner.jobs.iter().any(|j| {
                j.kind == "dataflow"
                    && j.name == name
                    && !matches!(
                        j.current().as_str(),
                        "JOB_STATE_DONE" | "JOB_STATE_FAILED" | "JOB_STATE_CANCELLED"
                    )
            });
            if active {
                return error(409, "ALREADY_EXISTS", "There is already an active job");
            }
            inner.new_job("dataflow", &id, &name, "JOB_STATE_CANCELLED");
            ok(json!({"job": {"id": id, "name": name, "currentState": "JOB_STATE_QUEUED"}}))
        }
        ["v1b3", "projects", _, "locations", _, "jobs", id] => match inner.job("dataflow", id) {
            Some(job) if method == Method::PUT => {
                if body["requestedState"] == "JOB_STATE_CANCELLED" {
                    job.cancel();
                } else if body["requestedState"] == "JOB_STATE_DRAINING" {
                    job.drain();
                }
                ok(json!({"id": job.id, "name": job.name, "currentState": job.current()}))
            }
            Some(job) => {
                let (state, since) = job.read_since();
                if state == "JOB_STATE_FAILED" {
                    job.message = "Workflow failed. Causes: SQLServer connection refused".into();
                }
                ok(json!({
                    "id": job.id,
                    "name": job.name,
                    "currentState": state,
                    "currentStateTime": since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                }))
            }
            None => error(404, "NOT_FOUND", "job not found"),
        },
        [
            "v1b3",
            "projects",
            _,
            "locations",
            _,
            "jobs",
            id,
            "messages",
        ] => match inner.job("dataflow", id) {
            Some(job) if !job.message.is_empty() => ok(json!({"jobMessages": [
                {"messageImportance": "JOB_MESSAGE_ERROR", "messageText": job.message}
            ]})),
            Some(_) => ok(json!({})),
            None => error(404, "NOT_FOUND", "job not found"),
        },
        ["api", "v3", "namespaces", _, "start"] => {
            let item = &body[0];
            if item["programId"] != "DataPipelineWorkflow" || item["programType"] != "workflow" {
                return ok(json!([{"statusCode": 400, "error": "not a pipeline workflow"}]));
            }
            inner.counter += 1;
            let run = format!("run-{}", inner.counter);
            inner.new_job("cdap", &run, &run, "KILLED");
            if let Some(job) = inner.jobs.last_mut() {
                job.args = serde_json::from_value(item["runtimeargs"].clone()).unwrap_or_default();
            }
            ok(json!([{
                "appId": item["appId"],
                "programType": "Workflow",
                "programId": "DataPipelineWorkflow",
                "statusCode": 200,
                "runId": run,
            }]))
        }
        [
            "api",
            "v3",
            "namespaces",
            _,
            "apps",
            _,
            "workflows",
            "DataPipelineWorkflow",
            "runs",
            rest @ ..,
        ] => match rest {
            [] => {
                let records: Vec<Value> = inner
                    .jobs
                    .iter()
                    .rev()
                    .filter(|j| j.kind == "cdap")
                    .map(|j| cdap_record(j, &j.current()))
                    .collect();
                ok(Value::Array(records))
            }
            [run] => match inner.job("cdap", run) {
                Some(job) => {
                    let state = job.read();
                    ok(cdap_record(job, &state))
                }
                None => error(404, "NOT_FOUND", "run not found"),
            },
            [run, "stop"] => match inner.job("cdap", run) {
                Some(job) => {
                    job.cancel();
                    (StatusCode::OK, axum::Json(Value::Null))
                }
                None => error(404, "NOT_FOUND", "run not found"),
            },
            _ => error(
                404,
                "NOT_FOUND",
                &format!("the fake has no {method} {path}"),
            ),
        },
        [
            "v2",
            "projects",
            project,
            "locations",
            region,
            "jobs",
            job_run,
        ] if method == Method::POST => {
            let Some(job) = job_run.strip_suffix(":run") else {
                return error(404, "NOT_FOUND", "no such method");
            };
            if job != "exporter" {
                return error(404, "NOT_FOUND", &format!("Resource '{job}' was not found"));
            }
            inner.counter += 1;
            let name = format!(
                "projects/{project}/locations/{region}/jobs/{job}/executions/{job}-{:05}",
                inner.counter
            );
            let override_ = &body["overrides"]["containerOverrides"][0];
            let env: BTreeMap<String, String> = override_["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_owned(),
                        e["value"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            inner.new_job("execution", &name, &name, "CANCELLED");
            let task_count = body["overrides"]["taskCount"].as_i64().unwrap_or(1);
            if let Some(created) = inner.jobs.last_mut() {
                created.args = env;
                created.container_args = override_["args"].clone();
                created.task_count = task_count;
            }
            let execution = inner
                .jobs
                .last()
                .map(|j| execution_resource(j, "PENDING"))
                .unwrap_or_default();
            let mut metadata = execution;
            metadata["@type"] = json!("type.googleapis.com/google.cloud.run.v2.Execution");
            let answer = ok(json!({
                "name": format!("projects/{project}/locations/{region}/operations/op-{}", inner.counter),
                "metadata": metadata,
                "done": false,
            }));
            // The run went through but its answer was lost (a timeout, a 503 on the way
            // back): the caller must find the execution again, not start a second.
            if inner.adopting("execution") {
                return error(503, "UNAVAILABLE", "The service is currently unavailable.");
            }
            answer
        }
        ["v2", "projects", _, "locations", _, "jobs", _, "executions"] => {
            let job_path = uri
                .path()
                .trim_start_matches("/v2/")
                .trim_end_matches("/executions")
                .to_owned();
            // Newest first, as Cloud Run lists them.
            let executions: Vec<Value> = inner
                .jobs
                .iter()
                .rev()
                .filter(|j| j.kind == "execution" && j.id.starts_with(&format!("{job_path}/")))
                .map(|j| execution_resource(j, &j.current()))
                .collect();
            let size = if inner.page_size == 0 {
                query(&uri, "pageSize")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(100)
            } else {
                inner.page_size
            };
            let offset: usize = query(&uri, "pageToken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let end = (offset + size).min(executions.len());
            let page = executions.get(offset..end).unwrap_or_default().to_vec();
            if end < executions.len() {
                ok(json!({"executions": page, "nextPageToken": end.to_string()}))
            } else {
                ok(json!({ "executions": page }))
            }
        }
        [
            "v2",
            "projects",
            _,
            "locations",
            _,
            "jobs",
            _,
            "executions",
            execution,
        ] => {
            let cancel = execution.strip_suffix(":cancel");
            let name = uri.path().trim_start_matches("/v2/");
            let name = cancel.map_or_else(
                || name.to_owned(),
                |_| name.trim_end_matches(":cancel").to_owned(),
            );
            let Some(job) = inner.job("execution", &name) else {
                return error(
                    404,
                    "NOT_FOUND",
                    &format!("Resource '{name}' was not found"),
                );
            };
            match cancel {
                Some(_) if method == Method::POST => {
                    let state = job.current();
                    if matches!(state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED") {
                        return error(
                            400,
                            "FAILED_PRECONDITION",
                            "The execution has already completed.",
                        );
                    }
                    job.cancel();
                    let execution = execution_resource(job, &job.current());
                    let mut metadata = execution;
                    metadata["@type"] = json!("type.googleapis.com/google.cloud.run.v2.Execution");
                    ok(
                        json!({"name": format!("{name}/operations/cancel"), "metadata": metadata, "done": false}),
                    )
                }
                Some(_) => error(404, "NOT_FOUND", "no such method"),
                None => {
                    let state = job.read();
                    ok(execution_resource(job, &state))
                }
            }
        }
        _ => error(
            404,
            "NOT_FOUND",
            &format!("the fake has no {method} {path}"),
        ),
    }
}

fn serverless_create(inner: &mut Inner, uri: &Uri, body: &Value) -> Answer {
    let Some(id) = query(uri, "batchId") else {
        return error(400, "INVALID_ARGUMENT", "batchId is required");
    };
    if body["runtimeConfig"]["version"].as_str().is_none() {
        return error(400, "INVALID_ARGUMENT", "runtimeConfig.version is required");
    }
    if let Err(conflict) = inner.create_once("batch", &id, "Batch already exists") {
        return conflict;
    }
    let op = inner
        .jobs
        .last()
        .map(|j| j.operation.clone())
        .unwrap_or_default();
    ok(
        json!({"name": op, "metadata": {"batch": format!("projects/my-project/locations/us-central1/batches/{id}")}}),
    )
}

/// A Cloud Run execution (`GoogleCloudRunV2Execution`) in the engine's `state` (`PENDING`,
/// `RUNNING`, `CANCELLING`, `SUCCEEDED`, `FAILED`, `CANCELLED`), as Cloud Run shows it: a
/// `Completed` condition, task counts, start and completion times, and the containers'
/// environment with the overrides applied.
fn execution_resource(job: &Job, state: &str) -> Value {
    let env: Vec<Value> = job
        .args
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let tasks = job.task_count;
    let (condition, reason, message) = match state {
        "SUCCEEDED" => (
            "CONDITION_SUCCEEDED",
            None,
            "Execution completed successfully.",
        ),
        "FAILED" => (
            "CONDITION_FAILED",
            Some("NON_ZERO_EXIT_CODE"),
            "Task exporter-0 failed with message: export.py: BigQuery table not found (exit code 2).",
        ),
        "CANCELLED" => (
            "CONDITION_FAILED",
            Some("CANCELLED"),
            "The execution was cancelled.",
        ),
        "CANCELLING" => (
            "CONDITION_RECONCILING",
            Some("CANCELLING"),
            "Cancelling the execution.",
        ),
        _ => ("CONDITION_RECONCILING", None, ""),
    };
    let mut completed = json!({
        "type": "Completed",
        "state": condition,
        "lastTransitionTime": job.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(r) = reason {
        completed["executionReason"] = json!(r);
    }
    if !message.is_empty() {
        completed["message"] = json!(message);
    }
    let mut execution = json!({
        "name": job.id,
        "uid": format!("00000000-0000-4000-8000-{:012}", job.id.len()),
        "job": job.id.split("/executions/").next().unwrap_or_default(),
        "createTime": job.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "taskCount": tasks,
        "parallelism": tasks,
        "conditions": [completed],
        "template": {"containers": [{
            "image": "us-docker.pkg.dev/my-project/jobs/exporter:1",
            "args": job.container_args,
            "env": env,
        }]},
    });
    match state {
        "PENDING" => {}
        "RUNNING" | "CANCELLING" => {
            execution["startTime"] = json!("2026-11-21T02:00:00Z");
            execution["runningCount"] = json!(tasks);
        }
        _ => {
            execution["startTime"] = json!("2026-11-21T02:00:00Z");
            execution["completionTime"] = json!("2026-11-21T02:10:00Z");
            let count = match state {
                "SUCCEEDED" => "succeededCount",
                "FAILED" => "failedCount",
                _ => "cancelledCount",
            };
            execution[count] = json!(tasks);
        }
    }
    if execution["template"]["containers"][0]["args"].is_null()
        && let Some(c) = execution["template"]["containers"][0].as_object_mut()
    {
        c.remove("args");
    }
    execution
}

fn cdap_record(job: &Job, state: &str) -> Value {
    json!({
        "runid": job.id,
        "starting": 1_763_690_400,
        "status": state,
        "properties": {
            "runtimeArgs": serde_json::to_string(&job.args).unwrap_or_default(),
        },
    })
}
