//! BigQuery: the warehouse (load jobs), the run log, and the `sql` engine (query jobs),
//! through BigQuery's REST API on the process's one HTTP client and credentials source.
//!
//! Every job is inserted under its deterministic id first: BigQuery answers a second insert of
//! an id with 409, which means "already exists: adopt it" — one call on the normal path, and
//! concurrent duplicate deliveries start one job. The BigQuery emulator instead runs a job
//! inserted twice, so with [`BigQuery::emulator`] (`CONVEYOR_BIGQUERY_EMULATOR=true`) a job
//! is looked up before it is inserted (not atomic: for tests only).
//!
//! # Layout
//! - `mod.rs`: [`BigQuery`], the REST calls and how answers are classified.
//! - `load.rs`: the [`Warehouse`](conveyor_core::ports::Warehouse) port.
//! - `run_log.rs`: the [`RunLog`](conveyor_core::ports::RunLog) port.
//! - `sql.rs`: [`SqlEngine`], `engine: sql` as a query job behind the batch port.
//! - `rows.rs`: the [`RowSink`](conveyor_core::ports::RowSink) port: a message pipeline's
//!   rows as one DML insert job per message.

mod load;
mod rows;
mod run_log;
mod sql;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use conveyor_core::names::TableRef;
use conveyor_core::ports::PortError;
use http::Method;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub use load::load_configuration;
pub use sql::SqlEngine;

use crate::GcpAuth;
use crate::rest::{Class, classify_reason};

/// BigQuery in one project.
#[derive(Clone)]
pub struct BigQuery {
    http: crate::rest::Client,
    base: String,
    /// `{base}/projects/{project}/jobs`, parsed once (`None` when the base is not a URL:
    /// the call then fails naming it).
    jobs_url: Option<http::Uri>,
    auth: GcpAuth,
    project: String,
    location: Option<String>,
    /// Where BigQuery ran each job this process inserted or queried (its answer's
    /// `jobReference.location`): `jobs.get`, `jobs.cancel` and `getQueryResults` of a job in a
    /// single-region dataset answer 404 without it, and `location` is not always configured
    /// (`conveyor status`, `conveyor replay`).
    locations: Arc<std::sync::Mutex<HashMap<String, String>>>,
    emulator: bool,
    run_logs_ready: Arc<Mutex<HashSet<String>>>,
}

/// A job as `jobs.get` and `jobs.insert` describe it: the parts Conveyor reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobInfo {
    /// `PENDING`, `RUNNING` or `DONE`.
    pub(crate) state: String,
    /// On DONE with an error: the reason and message (with up to ten detailed errors).
    pub(crate) error: Option<(String, String)>,
    /// A load job's `statistics.load.outputRows`.
    pub(crate) output_rows: Option<u64>,
    /// The job's `configuration` (restarts a job under a new id), as `jobs.get` gives it;
    /// `None` from `jobs.insert`, whose caller has it.
    pub(crate) configuration: Option<Value>,
}

/// A job resource as BigQuery's REST API answers it, read straight into the fields Conveyor
/// uses (no JSON tree of the whole answer). `C` is how `configuration` is read: as JSON
/// (`jobs.get`), or skipped ([`IgnoredAny`]: `jobs.insert` echoes what was sent).
#[derive(Deserialize)]
struct JobResource<C> {
    #[serde(default, rename = "jobReference")]
    job_reference: Option<JobLocation>,
    #[serde(default)]
    status: Option<JobStatus>,
    #[serde(default)]
    statistics: Option<JobStatistics>,
    #[serde(default = "Option::default")]
    configuration: Option<C>,
}

/// The part of a `jobReference` answered that Conveyor keeps: where the job runs.
#[derive(Deserialize)]
struct JobLocation {
    #[serde(default)]
    location: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobStatus {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error_result: Option<ErrorProto>,
    #[serde(default)]
    errors: Option<Vec<ErrorProto>>,
}

#[derive(Deserialize)]
struct ErrorProto {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// Where the error is: for a load's data error, the file's `gs://` URI.
    #[serde(default)]
    location: Option<String>,
}

impl ErrorProto {
    /// The message, with the file it is about when BigQuery gives it apart (a load's
    /// `bad_files: quarantine` finds the bad files by their URIs in the error).
    fn text(self) -> Option<String> {
        let message = self.message?;
        Some(match self.location {
            Some(l) if l.starts_with("gs://") && !message.contains(&l) => format!("{l}: {message}"),
            _ => message,
        })
    }
}

#[derive(Deserialize)]
struct JobStatistics {
    #[serde(default)]
    load: Option<LoadStatistics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadStatistics {
    /// An int64, which BigQuery's JSON gives as a string (a number is read too).
    #[serde(default)]
    output_rows: Option<Value>,
}

impl<C> JobResource<C> {
    /// The job, its configuration read by `configuration`.
    fn into_info(self, configuration: impl FnOnce(C) -> Option<Value>) -> JobInfo {
        let status = self.status;
        let state = status
            .as_ref()
            .and_then(|s| s.state.clone())
            .unwrap_or_else(|| "PENDING".to_owned());
        let error = status.and_then(|s| {
            let e = s.error_result?;
            let reason = e.reason.unwrap_or_default();
            let mut message = e.message.unwrap_or_else(|| reason.clone());
            let details: Vec<String> = s
                .errors
                .into_iter()
                .flatten()
                .filter_map(ErrorProto::text)
                .take(10)
                .collect();
            if !details.is_empty() {
                message = format!("{message}: {}", details.join("; "));
            }
            Some((reason, message))
        });
        let output_rows = self
            .statistics
            .and_then(|s| s.load?.output_rows)
            .and_then(|v| match v {
                Value::String(s) => s.parse().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            });
        JobInfo {
            state,
            error,
            output_rows,
            configuration: self.configuration.and_then(configuration),
        }
    }
}

/// `jobs.insert`'s body: the job's reference and configuration.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobInsert<'a, C: ?Sized> {
    job_reference: JobReference<'a>,
    configuration: &'a C,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobReference<'a> {
    project_id: &'a str,
    job_id: &'a str,
    location: Option<&'a str>,
}

impl JobInfo {
    fn done(&self) -> bool {
        self.state == "DONE"
    }
}

/// Whether a job's `errorResult.reason` is a failure that may pass (the one table of reasons:
/// [`crate::rest::classify`]).
pub(crate) fn transient_reason(reason: &str) -> bool {
    classify_reason(reason) == Some(Class::Transient)
}

/// The outcome of inserting a job under its id.
pub(crate) enum Inserted {
    /// Created now.
    New(JobInfo),
    /// The id was taken (409): the job exists.
    Exists,
}

impl BigQuery {
    /// A client for `project` on the REST API at `base_url` (default
    /// `https://bigquery.googleapis.com/bigquery/v2`; the emulator's
    /// `http://127.0.0.1:PORT/bigquery/v2`).
    pub fn new(
        project: &str,
        location: Option<String>,
        base_url: Option<&str>,
        auth: &GcpAuth,
    ) -> Self {
        let base = base_url
            .unwrap_or("https://bigquery.googleapis.com/bigquery/v2")
            .trim_end_matches('/')
            .to_owned();
        Self {
            http: crate::http_client(),
            jobs_url: format!("{base}/projects/{project}/jobs").parse().ok(),
            base,
            auth: auth.clone(),
            project: project.to_owned(),
            location,
            locations: Arc::default(),
            emulator: false,
            run_logs_ready: Arc::default(),
        }
    }

    /// Looks jobs up before inserting them: the BigQuery emulator runs a job inserted twice
    /// under one id instead of answering 409. Not atomic; for emulators only.
    #[must_use]
    pub fn emulator(mut self, yes: bool) -> Self {
        self.emulator = yes;
        self
    }

    fn project_of<'a>(&'a self, t: &'a TableRef) -> &'a str {
        t.project.as_deref().unwrap_or(&self.project)
    }

    /// One REST call: the answer's bytes, or the error as [`crate::rest::classify`] says
    /// (404 not found, 409 conflict, 408/429/5xx and BigQuery's transient reasons may pass, a
    /// 401 gets a new token once). `build` makes the request (again after a 401).
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> crate::rest::RequestBuilder,
    ) -> Result<bytes::Bytes, PortError> {
        let resp = self.auth.send(what, build).await?;
        resp.bytes().await.map_err(|e| e.into_port(what))
    }

    /// One REST call at `path` (under the API's base) with its answer as JSON: empty is
    /// null, text that is not JSON is `{"text": …}`. Errors as [`Self::send`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, PortError> {
        let build = || {
            let req = self
                .http
                .request(method.clone(), format!("{}/{path}", self.base))
                .query(query);
            match body {
                Some(b) => req.json(b),
                None => req,
            }
        };
        let body = self.send(what, build).await?;
        let text = String::from_utf8_lossy(&body);
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }))
        })
    }

    /// One REST call whose answer is read into `R` (an answer that is not `R` may pass: a
    /// proxy's page, a cut-off body). Errors as [`Self::send`].
    async fn call_typed<R: DeserializeOwned>(
        &self,
        what: &str,
        build: impl Fn() -> crate::rest::RequestBuilder,
    ) -> Result<R, PortError> {
        let body = self.send(what, build).await?;
        serde_json::from_slice(&body)
            .map_err(|e| PortError::transient(format!("{what}: unreadable answer: {e}")))
    }

    /// How long BigQuery may hold a query call waiting for its job (`timeoutMs`): half the
    /// client's timeout, so BigQuery answers "not complete yet" before the client gives up
    /// on the call.
    fn wait_ms(&self) -> u64 {
        let client = self.http.timeout().unwrap_or(crate::rest::REQUEST_TIMEOUT);
        u64::try_from(client.as_millis() / 2)
            .unwrap_or(u64::MAX)
            .min(60_000)
    }

    /// Remembers where BigQuery runs `job_id`, as its answer said.
    fn remember_location(&self, job_id: &str, location: Option<&str>) {
        if let Some(l) = location.filter(|l| !l.is_empty()) {
            self.locations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(job_id.to_owned(), l.to_owned());
        }
    }

    /// Where `job_id` runs: as BigQuery answered when this process inserted or queried it,
    /// else the configured location.
    fn location_of(&self, job_id: &str) -> Option<String> {
        self.locations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job_id)
            .cloned()
            .or_else(|| self.location.clone())
    }

    /// `jobs.get`.
    pub(crate) async fn get_job(&self, job_id: &str) -> Result<JobInfo, PortError> {
        let location = self.location_of(job_id);
        let build = || {
            let req = self.http.get(format!(
                "{}/projects/{}/jobs/{job_id}",
                self.base, self.project
            ));
            match &location {
                Some(l) => req.query(&[("location", l.as_str())]),
                None => req,
            }
        };
        let job: JobResource<Value> = self.call_typed("get job", build).await?;
        Ok(job.into_info(Some))
    }

    /// `jobs.insert` of `configuration` under `job_id`; 409 (or, on the emulator, a job
    /// found by a look-up first) is [`Inserted::Exists`].
    pub(crate) async fn insert_job<C: Serialize + ?Sized>(
        &self,
        job_id: &str,
        configuration: &C,
    ) -> Result<Inserted, PortError> {
        if self.emulator {
            match self.get_job(job_id).await {
                Ok(_) => return Ok(Inserted::Exists),
                Err(PortError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let body = JobInsert {
            job_reference: JobReference {
                project_id: &self.project,
                job_id,
                location: self.location.as_deref(),
            },
            configuration,
        };
        // The jobs URL is parsed once, when the client is made.
        let build = || {
            match &self.jobs_url {
                Some(url) => self.http.post(url.clone()),
                None => self
                    .http
                    .post(format!("{}/projects/{}/jobs", self.base, self.project)),
            }
            .json(&body)
        };
        match self
            .call_typed::<JobResource<IgnoredAny>>("insert job", build)
            .await
        {
            Ok(job) => {
                let location = job
                    .job_reference
                    .as_ref()
                    .and_then(|r| r.location.as_deref());
                self.remember_location(job_id, location);
                Ok(Inserted::New(job.into_info(|_| None)))
            }
            // The id is taken: the job exists.
            Err(PortError::Conflict(_)) => Ok(Inserted::Exists),
            Err(e) => Err(e),
        }
    }

    /// `jobs.cancel`.
    pub(crate) async fn cancel_job(&self, job_id: &str) -> Result<(), PortError> {
        let path = format!("projects/{}/jobs/{job_id}/cancel", self.project);
        let location = self.location_of(job_id);
        let query: Vec<(&str, &str)> = location.iter().map(|l| ("location", l.as_str())).collect();
        match self
            .call(Method::POST, &path, &query, None, "cancel job")
            .await
        {
            Ok(_) | Err(PortError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `wait` for the job to be DONE (polling with backoff); the job as last seen.
    pub(crate) async fn wait_job(
        &self,
        job_id: &str,
        first: Option<JobInfo>,
        wait: Duration,
    ) -> Result<JobInfo, PortError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(200);
        let mut job = match first {
            Some(j) => j,
            None => self.get_job(job_id).await?,
        };
        loop {
            if job.done() {
                return Ok(job);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(job);
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            job = self.get_job(job_id).await?;
        }
    }

    /// Runs a query and returns its rows (`f[i].v`) and the names of its columns, following
    /// every page, and checking the errors the emulator reports in a 200 body.
    pub(crate) async fn query(
        &self,
        sql: &str,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), PortError> {
        let body = json!({
            "query": sql,
            "useLegacySql": false,
            "timeoutMs": self.wait_ms(),
            "location": self.location,
        });
        let path = format!("projects/{}/queries", self.project);
        let page = self
            .call(Method::POST, &path, &[], Some(&body), "query")
            .await?;
        let job_id = page["jobReference"]["jobId"].as_str().map(str::to_owned);
        // Where BigQuery ran the query (from the tables it reads when no location is
        // configured): its pages are read there.
        let location = page["jobReference"]["location"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| self.location.clone());
        self.pages(page, job_id, location).await
    }

    /// A query under a deterministic job id (a data-quality check): `jobs.insert` (409: the
    /// job exists, its results are read), waited on, then its rows read as [`Self::query`]
    /// reads them.
    pub(crate) async fn query_as(
        &self,
        job_id: &str,
        sql: &str,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), PortError> {
        let configuration = json!({ "query": { "query": sql, "useLegacySql": false } });
        let first = match self.insert_job(job_id, &configuration).await? {
            Inserted::New(info) => Some(info),
            Inserted::Exists => None,
        };
        let job = self
            .wait_job(job_id, first, Duration::from_millis(self.wait_ms()))
            .await?;
        if !job.done() {
            return Err(PortError::transient(format!(
                "query job {job_id} is still {}; its results are read on the next check",
                job.state
            )));
        }
        if let Some((reason, message)) = job.error {
            let msg = format!("query job {job_id} failed: {message}");
            return Err(match classify_reason(&reason) {
                Some(Class::Transient) => PortError::transient(msg),
                _ => PortError::permanent(msg),
            });
        }
        let location = self.location_of(job_id).or_else(|| self.location.clone());
        let wait = self.wait_ms().to_string();
        let mut q: Vec<(&str, &str)> = location.iter().map(|l| ("location", l.as_str())).collect();
        q.push(("timeoutMs", &wait));
        let path = format!("projects/{}/queries/{job_id}", self.project);
        let page = self
            .call(Method::GET, &path, &q, None, "query results")
            .await?;
        self.pages(page, Some(job_id.to_owned()), location).await
    }

    /// The rows of a query from its first page on, following its pages.
    async fn pages(
        &self,
        mut page: Value,
        job_id: Option<String>,
        location: Option<String>,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), PortError> {
        let mut names: Vec<String> = Vec::new();
        let mut out = Vec::new();
        loop {
            if let Some(errors) = page["errors"].as_array().filter(|e| !e.is_empty()) {
                let msg: Vec<&str> = errors
                    .iter()
                    .filter_map(|e| e["message"].as_str())
                    .collect();
                let msg = format!("query failed: {}", msg.join("; "));
                // Classified by their reason as an error answer is (the emulator answers a
                // missing table with 200 and a `notFound` here).
                return Err(
                    match errors[0]["reason"].as_str().and_then(classify_reason) {
                        Some(Class::Transient) => PortError::transient(msg),
                        Some(Class::NotFound) => PortError::not_found(msg),
                        Some(Class::Conflict) => PortError::conflict(msg),
                        Some(Class::Precondition) => PortError::precondition(msg),
                        Some(Class::Permanent) | None => PortError::permanent(msg),
                    },
                );
            }
            let complete = page["jobComplete"].as_bool().unwrap_or(true);
            if complete {
                if names.is_empty() {
                    names = page["schema"]["fields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["name"].as_str().map(str::to_owned))
                        .collect();
                }
                for row in page["rows"].as_array().into_iter().flatten() {
                    out.push(
                        row["f"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| c.get("v").cloned().unwrap_or(Value::Null))
                            .collect(),
                    );
                }
            }
            let token = page["pageToken"].as_str().map(str::to_owned);
            let Some(job_id) = &job_id else { break };
            if complete && token.is_none() {
                break;
            }
            let wait = self.wait_ms().to_string();
            let mut q: Vec<(&str, &str)> =
                location.iter().map(|l| ("location", l.as_str())).collect();
            q.push(("timeoutMs", &wait));
            if let Some(t) = token.as_deref() {
                q.push(("pageToken", t));
            }
            let path = format!("projects/{}/queries/{job_id}", self.project);
            page = self
                .call(Method::GET, &path, &q, None, "query results")
                .await?;
        }
        Ok((names, out))
    }
}

/// A cell as text (`None` for NULL).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A table as a GoogleSQL identifier: `` `project.dataset.table` ``.
pub(crate) fn quoted(project: &str, t: &TableRef) -> String {
    format!("`{project}.{}.{}`", t.dataset, t.table)
}
