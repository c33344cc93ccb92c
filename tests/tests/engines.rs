//! End-to-end tests of the batch engines: the embedded chain (watched bucket, SQLite
//! warehouse and run log, the real steps) with [`Engines`] pointed at a local fake of the
//! engines' REST APIs.
//!
//! Six scenarios are one table run against each engine (an [`Engine`] describes its
//! configuration, its states, how a run starts and how to read its creates and cancels):
//! success; failure, retry, success; failure to max attempts; timeout with cancel; adopting
//! an existing job (409); transient API errors. Each engine's own checks ride on the
//! scenarios as hooks; scenarios of one engine only, and how the engines classify the
//! APIs' refusals, follow the table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use conveyor_core::engines::Engines;
use conveyor_core::event::StepName;
use conveyor_core::names::{JobId, PipelineName, RunId};
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::fake_engines::{Fake, Recorded};
use conveyor_gcp::engines::{CloudEngines as _, Endpoints, StaticToken};

/// The embedded chain whose batches go to the fake engines.
struct Chain {
    inner: conveyor_e2e::Chain,
    fake: Fake,
}

impl std::ops::Deref for Chain {
    type Target = conveyor_e2e::Chain;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Chain {
    /// Starts the chain on `yaml`, where `$FAKE` is the fake's URL.
    async fn start(yaml: &str, fake: Fake) -> Self {
        let yaml = yaml.replace("$FAKE", &fake.url);
        let engines = Engines::new()
            .with_cloud(
                Endpoints::all_at(&fake.url),
                Arc::new(StaticToken::new("test-token")),
            )
            .expect("engines");
        let inner = conveyor_e2e::Chain::start_with(&yaml, Some(engines)).await;
        Self { inner, fake }
    }

    /// Drops a small CSV file at `object` in the `landing` bucket (write, then rename).
    fn drop_csv(&self, object: &str) {
        self.inner
            .write_file("landing", object, "id,name\n1,ada\n2,grace\n");
    }

    /// Starts `pipeline` by hand with an idempotency key, as `curl` or Cloud Scheduler does.
    async fn start_by_hand(&self, pipeline: &str, key: &str) -> (StatusCode, serde_json::Value) {
        let body = serde_json::json!({"pipeline": pipeline, "key": key}).to_string();
        self.inner
            .post(StepName::Submit, &body, "application/json")
            .await
    }

    /// Waits until a batch was started and nothing has been in flight for a while.
    async fn settle(&self) {
        self.inner
            .settle_when(
                Duration::from_secs(30),
                || !self.fake.requests().is_empty(),
                || format!("requests: {:#?}", self.fake.requests()),
            )
            .await;
    }

    /// The batch rows of `run_id` (every run when `None`), in lifecycle order: by attempt,
    /// then SUBMITTED, RUNNING, the end.
    async fn batch_rows(&self, run_id: Option<&str>) -> Vec<RunLogRow> {
        let rank = |s: &str| match s {
            "SUBMITTED" => 0,
            "RUNNING" => 1,
            _ => 2,
        };
        let mut rows: Vec<RunLogRow> = self
            .run_log()
            .await
            .into_iter()
            .filter(|r| r.dataproc_job_id.is_some())
            .filter(|r| run_id.is_none_or(|id| r.run_id == id))
            .collect();
        rows.sort_by_key(|r| (r.run_id.clone(), r.attempt, rank(&r.status)));
        rows
    }

    /// `(attempt, status)` of every batch row of the one run.
    async fn history(&self) -> Vec<(u32, String)> {
        self.batch_rows(None)
            .await
            .iter()
            .map(|r| (r.attempt, r.status.clone()))
            .collect()
    }

    async fn stop(self) {
        self.inner.stop().await;
    }
}

fn h(rows: &[(u32, &str)]) -> Vec<(u32, String)> {
    rows.iter().map(|(a, s)| (*a, (*s).to_owned())).collect()
}

/// The job id of every attempt in the run log, one per attempt, in order.
fn job_ids(rows: &[RunLogRow]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in rows {
        let id = r.dataproc_job_id.clone().unwrap_or_default();
        if ids.last() != Some(&id) {
            ids.push(id);
        }
    }
    ids
}

fn poll(timeout: &str, attempts: u32) -> String {
    format!(
        "poll: {{ interval: 50ms, timeout: {timeout}, max_attempts: {attempts}, \
         backoff: {{ initial: 100ms, multiplier: 2, max: 1s }} }}"
    )
}

/// The distinct strings of `items`, in first-seen order. A check that overlaps another (the
/// submitted event's and a tick's) may send the same idempotent call twice.
fn distinct(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

// ----------------------------------------------------------------------------------------
// The engines, described for the scenarios: their configuration, their states, how a run
// is started, and how to read the fake's creates, reads and cancels.

/// How a run of the engine's pipeline is started.
enum Start {
    /// A CSV file dropped at this object of the `landing` bucket.
    File(&'static str),
    /// By hand, with the key [`KEY`]; each listed row of the pipeline is a run of its own.
    ByHand { rows: &'static [&'static str] },
}

/// The key of the starts by hand.
const KEY: &str = "2026-11-20";

/// A check of one engine's fake and runs, made at the end of a scenario.
type Check = fn(&Fake, &[Run]);

/// No check.
fn none(_: &Fake, _: &[Run]) {}

/// One engine as the scenarios drive it.
struct Engine {
    /// The pipelines' configuration, for a poll timeout and a number of attempts.
    config: fn(&str, u32) -> String,
    /// The engine's states: queued, running, succeeded, failed.
    queued: &'static str,
    running: &'static str,
    succeeded: &'static str,
    failed: &'static str,
    /// What the fake's failed job says: kept in the run log's error.
    failure: &'static str,
    start: Start,
    /// The job id of each create the fake received, in order.
    creates: fn(&Fake) -> Vec<String>,
    /// Whether every create is sent once (the cluster's submit may be sent twice by
    /// overlapping checks: only its distinct ids are compared).
    creates_once: bool,
    /// The reads of the state of `job_id` (or of every job when the engine reads by its own id).
    reads: fn(&Fake, &str) -> usize,
    /// The cancels (or stops) sent.
    cancels: fn(&Fake) -> Vec<Recorded>,
    /// Whether a cancel is the engine's cancel of a job (by its own id or operation).
    is_cancel: fn(&Recorded, &str) -> bool,
    /// Set-up before a scenario (the fake's cluster reads, ...).
    setup: fn(&Fake),
    /// Makes the first create of the job find it existing; returns the id of the job the
    /// engine should then follow (`None`: the job id).
    existing: fn(&Fake) -> Option<String>,
    /// The transient API errors of the engine, armed on the fake.
    transient: fn(&Fake),
    /// The creates a run of the transient scenario sends (`None`: not counted).
    transient_creates: Option<usize>,
    /// Checked after every scenario.
    always: Check,
    /// Checked after each scenario, on top of the common checks.
    succeeded_check: Check,
    retried_check: Check,
    keeps_failing_check: Check,
    timed_out_check: Check,
    /// Given the id of the job followed.
    adopted_check: fn(&Fake, &[Run], &str),
    transient_check: Check,
}

/// One run of a scenario: its id and its batch rows in lifecycle order.
struct Run {
    id: RunId,
    rows: Vec<RunLogRow>,
}

impl Run {
    fn history(&self) -> Vec<(u32, String)> {
        self.rows
            .iter()
            .map(|r| (r.attempt, r.status.clone()))
            .collect()
    }

    fn job_ids(&self) -> Vec<String> {
        job_ids(&self.rows)
    }

    /// The job id of the first attempt.
    fn job_id(&self) -> String {
        self.rows[0].dataproc_job_id.clone().expect("job id")
    }
}

impl Engine {
    fn runs_per_start(&self) -> usize {
        match self.start {
            Start::File(_) => 1,
            Start::ByHand { rows } => rows.len(),
        }
    }

    /// Starts the chain on the engine with `scripts`, starts the pipeline and settles.
    async fn run(&self, fake: &Fake, timeout: &str, attempts: u32) -> Chain {
        let chain = Chain::start(&(self.config)(timeout, attempts), fake.clone()).await;
        self.trigger(&chain).await;
        chain.settle().await;
        chain
    }

    async fn trigger(&self, chain: &Chain) {
        match self.start {
            Start::File(object) => chain.drop_csv(object),
            Start::ByHand { .. } => {
                let (status, reply) = chain.start_by_hand(PIPELINE_BY_HAND, KEY).await;
                assert_eq!(status, StatusCode::OK, "{reply}");
            }
        }
    }

    /// The runs of the start, each with its rows.
    async fn runs(&self, chain: &Chain) -> Vec<Run> {
        match self.start {
            Start::File(_) => {
                let rows = chain.batch_rows(None).await;
                let id = RunId::parse(&rows.first().expect("a batch row").run_id).expect("run");
                vec![Run { id, rows }]
            }
            Start::ByHand { rows } => {
                let mut runs = Vec::new();
                for row in rows {
                    let id = row_run(KEY, row);
                    let rows = chain.batch_rows(Some(id.as_str())).await;
                    runs.push(Run { id, rows });
                }
                runs
            }
        }
    }

    /// A fake set up for the engine.
    async fn fake(&self) -> Fake {
        let fake = Fake::start().await;
        (self.setup)(&fake);
        fake
    }

    /// [`Self::fake`], with every run of the start scripted through `ends` (see [`script`]).
    async fn scripted(&self, ends: &[&[&str]]) -> Fake {
        let fake = self.fake().await;
        script(&fake, self.runs_per_start(), ends);
        fake
    }

    /// The states of an attempt that succeeds: queued, running (read twice), succeeded.
    fn succeeding(&self) -> [&'static str; 4] {
        [self.queued, self.running, self.running, self.succeeded]
    }

    /// The fake's creates are the runs' job ids; where the engine sends each create once,
    /// `per_run` of them for each run.
    fn assert_creates(&self, fake: &Fake, runs: &[Run], per_run: usize) {
        let creates = (self.creates)(fake);
        if self.creates_once {
            // Delivery is at least once: under load the poll tick and the event-driven poll
            // can both start a due retry before either's row is written. The second create
            // goes under the same id (asserted below) and adopts; at most one extra each.
            let expected = per_run * runs.len();
            assert!(
                (expected..=2 * expected).contains(&creates.len()),
                "{creates:?}"
            );
        }
        assert_eq!(
            sorted(distinct(creates)),
            all_job_ids(runs),
            "a create sent again goes under the same job id"
        );
    }

    /// The scenario's own `check` of the engine, then the checks made after every scenario.
    fn finish(&self, fake: &Fake, runs: &[Run], check: Check) {
        check(fake, runs);
        (self.always)(fake, runs);
    }
}

/// Scripts the fake's jobs: each of `ends` is the states of one attempt, for every run (the
/// last serves every further job).
fn script(fake: &Fake, runs: usize, ends: &[&[&str]]) {
    let mut scripts: Vec<&[&str]> = Vec::new();
    for end in ends {
        for _ in 0..runs {
            scripts.push(end);
        }
    }
    fake.script(&scripts);
}

/// The pipeline started by hand (Data Fusion's).
const PIPELINE_BY_HAND: &str = "cdf_ingest";

/// The history of attempts that each went SUBMITTED, RUNNING, then ended as `ends` says.
fn attempts(ends: &[&str]) -> Vec<(u32, String)> {
    let mut history = Vec::new();
    for (attempt, end) in (1..).zip(ends) {
        for status in ["SUBMITTED", "RUNNING", end] {
            history.push((attempt, status.to_owned()));
        }
    }
    history
}

/// Each run's history is `expected`, except that an attempt's RUNNING row may be missing:
/// the fake moves a job to its next state on every read, and a second read before the poll's
/// (a redelivered start adopting the job, under load) takes RUNNING, so the poll sees the end
/// directly. Every attempt still starts SUBMITTED and ends as expected, in order, and some poll
/// recorded RUNNING.
fn assert_histories(runs: &[Run], expected: &[(u32, String)]) {
    for run in runs {
        let history = run.history();
        let seen_running = |row: &(u32, String)| row.1 != "RUNNING" || history.contains(row);
        let wanted: Vec<_> = expected
            .iter()
            .filter(|r| seen_running(r))
            .cloned()
            .collect();
        assert_eq!(history, wanted, "{}", run.id);
        assert!(
            history.iter().any(|r| r.1 == "RUNNING"),
            "{}: no poll recorded RUNNING: {history:?}",
            run.id
        );
    }
}

/// Every run of every scenario holds no failed or rejected row.
async fn no_failure(chain: &Chain) {
    assert!(
        !chain
            .run_log()
            .await
            .iter()
            .any(|r| r.status == "FAILED" || r.status == "REJECTED")
    );
}

/// The job ids of every attempt of every run, sorted.
fn all_job_ids(runs: &[Run]) -> Vec<String> {
    let mut ids: Vec<String> = runs.iter().flat_map(Run::job_ids).collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ----------------------------------------------------------------------------------------
// The scenarios, each run against every engine.

/// The job is created under its job id (derived from run and attempt), followed to its end,
/// and succeeds.
async fn succeeds(e: &Engine) {
    let fake = e.scripted(&[&e.succeeding()]).await;
    let chain = e.run(&fake, "1m", 3).await;

    let runs = e.runs(&chain).await;
    assert_histories(&runs, &attempts(&["SUCCEEDED"]));
    for run in &runs {
        let job_id = JobId::derive("batch", &run.id, 1);
        assert!(
            run.rows
                .iter()
                .all(|r| r.dataproc_job_id.as_deref() == Some(job_id.as_str())),
            "the job id derives from run and attempt"
        );
        assert!(run.rows.last().expect("row").detail.contains(e.succeeded));
        assert!((e.reads)(&fake, job_id.as_str()) > 0, "the job is followed");
    }
    e.assert_creates(&fake, &runs, 1);
    e.finish(&fake, &runs, e.succeeded_check);
    if let Start::ByHand { .. } = e.start {
        // The same start again (a redelivery): every row's run is found, none started again.
        e.trigger(&chain).await;
        chain.settle().await;
        assert_eq!((e.creates)(&fake).len(), runs.len());
    }
    chain.stop().await;
}

/// A failed job is created again as the run's next attempt under a new job id, and succeeds.
async fn is_retried_after_a_failure(e: &Engine) {
    let fake = e
        .scripted(&[
            &[e.queued, e.running, e.failed],
            &[e.running, e.running, e.succeeded],
        ])
        .await;
    let chain = e.run(&fake, "1m", 3).await;

    let runs = e.runs(&chain).await;
    assert_histories(&runs, &attempts(&["FAILED", "SUCCEEDED"]));
    for run in &runs {
        let ids = run.job_ids();
        assert_eq!(ids.len(), 2);
        assert!(
            ids[0].ends_with("-a1") && ids[1].ends_with("-a2"),
            "{ids:?}"
        );
        let failed = run
            .rows
            .iter()
            .find(|r| r.status == "FAILED")
            .expect("failed row");
        let error = failed.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(e.failure),
            "the job's error message is kept: {error}"
        );
        assert!(failed.detail.contains("retry_at"));
    }
    e.assert_creates(&fake, &runs, 2);
    e.finish(&fake, &runs, e.retried_check);
    chain.stop().await;
}

/// A job that fails at every attempt ends the run failed after `max_attempts`, with no
/// retry scheduled by the last failure.
async fn keeps_failing_until_max_attempts(e: &Engine) {
    let fake = e.fake().await;
    script(&fake, 1, &[&[e.queued, e.running, e.failed]]);
    let chain = e.run(&fake, "1m", 3).await;

    let runs = e.runs(&chain).await;
    assert_histories(&runs, &attempts(&["FAILED", "FAILED", "FAILED"]));
    for run in &runs {
        assert!(
            !run.rows.last().expect("row").detail.contains("retry_at"),
            "the final failure schedules no retry"
        );
        assert_eq!(run.job_ids().len(), 3);
    }
    e.assert_creates(&fake, &runs, 3);
    e.finish(&fake, &runs, e.keeps_failing_check);
    chain.stop().await;
}

/// A job still running at the poll timeout is cancelled once, ends TIMED_OUT, is never
/// counted a success and not retried.
async fn is_cancelled_at_its_timeout(e: &Engine) {
    let fake = e.fake().await;
    script(&fake, 1, &[&[e.queued, e.running]]);
    let chain = e.run(&fake, "1s", 3).await;

    let runs = e.runs(&chain).await;
    assert_histories(&runs, &attempts(&["TIMED_OUT"]));
    for run in &runs {
        let timed_out = run.rows.last().expect("row");
        assert!(
            timed_out
                .error
                .as_deref()
                .is_some_and(|err| err.contains("timed out")),
            "{:?}",
            timed_out.error
        );
    }
    let cancels = (e.cancels)(&fake);
    assert_eq!(
        cancels.len(),
        runs.len(),
        "one cancel per job: {cancels:#?}"
    );
    for cancel in &cancels {
        assert!(
            runs.iter().any(|run| (e.is_cancel)(cancel, &run.job_id())),
            "{cancel:#?}"
        );
    }
    // A timeout is not retried.
    e.assert_creates(&fake, &runs, 1);
    e.finish(&fake, &runs, e.timed_out_check);
    chain.stop().await;
}

/// A job that exists already (a create answering 409, or found by its job id) is adopted
/// and followed to its end, not created again.
async fn adopts_an_existing_job(e: &Engine) {
    let fake = e.fake().await;
    script(&fake, 1, &[&[e.running, e.running, e.succeeded]]);
    let followed = (e.existing)(&fake);
    let chain = e.run(&fake, "1m", 3).await;

    let runs = e.runs(&chain).await;
    assert_histories(&runs, &attempts(&["SUCCEEDED"]));
    let creates = (e.creates)(&fake);
    assert_eq!(
        distinct(creates.clone()).len(),
        1,
        "created once: {creates:?}"
    );
    if e.creates_once {
        assert_eq!(creates.len(), 1, "no second job");
    }
    let followed = followed.unwrap_or_else(|| runs[0].job_id());
    assert!(
        (e.reads)(&fake, &followed) > 0,
        "the adopted job is followed"
    );
    e.finish(&fake, &runs, none);
    (e.adopted_check)(&fake, &runs, &followed);
    chain.stop().await;
}

/// Transient API errors (429, 5xx, a 404 read just after a create) are retried under the same
/// job id and never count as a failure: with `max_attempts: 1`, one would end the run.
async fn retries_transient_api_errors(e: &Engine) {
    let fake = e.scripted(&[&e.succeeding()]).await;
    (e.transient)(&fake);
    let chain = e.run(&fake, "1m", 1).await;

    let runs = e.runs(&chain).await;
    for run in &runs {
        assert_eq!(
            run.history(),
            h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")]),
            "max_attempts is 1: any counted failure would have ended the run ({})",
            run.id
        );
    }
    let creates = (e.creates)(&fake);
    if let Some(n) = e.transient_creates {
        assert_eq!(creates.len(), n, "{creates:?}");
    }
    assert_eq!(
        sorted(distinct(creates)),
        all_job_ids(&runs),
        "a create sent again goes under the same job id"
    );
    no_failure(&chain).await;
    e.finish(&fake, &runs, e.transient_check);
    chain.stop().await;
}

/// The scenarios as tests, one module per engine: `engines::<engine>::<scenario>`.
macro_rules! scenarios {
    ($($module:ident: $engine:ident),* $(,)?) => {
        $(scenarios!(@engine $module $engine [
            succeeds,
            is_retried_after_a_failure,
            keeps_failing_until_max_attempts,
            is_cancelled_at_its_timeout,
            adopts_an_existing_job,
            retries_transient_api_errors
        ]);)*
    };
    (@engine $module:ident $engine:ident [$($scenario:ident),*]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::$engine).await;
                }
            )*
        }
    };
}

scenarios! {
    dataproc_serverless: SERVERLESS,
    dataproc_cluster: CLUSTER,
    dataflow_flex: DATAFLOW_FLEX,
    data_fusion: DATA_FUSION,
    cloud_run_job: CLOUD_RUN_JOB,
}

// ----------------------------------------------------------------------------------------
// Dataproc Serverless (seed 002)

fn serverless(timeout: &str, attempts: u32) -> String {
    format!(
        r#"
pipelines:
  - name: users_reencrypt
    trigger: {{ object: {{ bucket: landing, pattern: "users/{{date}}/*.csv" }} }}
    load: {{ table: "encryption_poc.users_{{date}}", format: CSV }}
    batch:
      engine: dataproc_serverless
      project: my-project
      region: us-central1
      runtime_version: "2.1"
      spark:
        main_class: com.example.services.Application
        jar_file_uris: [gs://encryption-poc/kms-utils-1.1.jar]
        args: ["--source-table={{table}}", "--date={{date}}", "--read-limit-rows=2"]
      service_account: dataproc@my-project.iam.gserviceaccount.com
      subnet: projects/my-project/regions/us-central1/subnetworks/dataproc
    {}
"#,
        poll(timeout, attempts)
    )
}

const BATCHES: &str = "/v1/projects/my-project/locations/us-central1/batches";

/// Dataproc Serverless: a batch per attempt, created under `?batchId=<job id>`, cancelled
/// through its operation.
const SERVERLESS: Engine = Engine {
    config: serverless,
    queued: "PENDING",
    running: "RUNNING",
    succeeded: "SUCCEEDED",
    failed: "FAILED",
    failure: "KMS key not found",
    start: Start::File("users/2026-11-20/a.csv"),
    creates: |fake| {
        let prefix = format!("{BATCHES}?batchId=");
        fake.calls("POST", BATCHES)
            .iter()
            .map(|r| r.path.strip_prefix(&prefix).unwrap_or(&r.path).to_owned())
            .collect()
    },
    creates_once: true,
    reads: |fake, job_id| fake.calls("GET", &format!("{BATCHES}/{job_id}")).len(),
    cancels: |fake| fake.calls("POST", ":cancel"),
    is_cancel: |cancel, _| {
        cancel
            .path
            .starts_with("/v1/projects/my-project/regions/us-central1/operations/op-")
    },
    setup: |_| {},
    existing: |fake| {
        fake.adopt();
        None
    },
    transient: |fake| {
        fake.fail("POST", BATCHES, 503, 1)
            .fail("GET", &format!("{BATCHES}/"), 404, 1)
            .fail("GET", &format!("{BATCHES}/"), 429, 2)
            .fail("GET", &format!("{BATCHES}/"), 503, 2);
    },
    transient_creates: Some(2),
    always: none,
    succeeded_check: |fake, _| {
        let create = &fake.calls("POST", BATCHES)[0];
        assert_eq!(create.authorization, "Bearer test-token");
        let body = &create.body;
        assert_eq!(body["runtimeConfig"]["version"], "2.1");
        assert_eq!(
            body["sparkBatch"]["mainClass"],
            "com.example.services.Application"
        );
        assert_eq!(
            body["sparkBatch"]["args"][0],
            "--source-table=encryption_poc.users_2026_11_20"
        );
        assert_eq!(body["sparkBatch"]["args"][1], "--date=2026-11-20");
        assert_eq!(
            body["environmentConfig"]["executionConfig"]["serviceAccount"],
            "dataproc@my-project.iam.gserviceaccount.com"
        );
        assert_eq!(
            body["environmentConfig"]["executionConfig"]["subnetworkUri"],
            "projects/my-project/regions/us-central1/subnetworks/dataproc"
        );
    },
    retried_check: none,
    keeps_failing_check: none,
    timed_out_check: none,
    adopted_check: |_, _, _| {},
    transient_check: |fake, _| {
        assert!(fake.calls("GET", &format!("{BATCHES}/")).len() >= 7);
    },
};

// ----------------------------------------------------------------------------------------
// Dataproc jobs on an ephemeral cluster (seed 000)

const REPLICATOR: &str = "sh export HOME=/root && export ODBCINI=/root/.odbc.ini && export ZOMBIERC=/root/.zrc2 && gsutil cp gs://etl-code/cerebro/run_replicator.sh . && chmod 777 run_replicator.sh && ./run_replicator.sh {db} {table_name}";

fn cluster(timeout: &str, attempts: u32) -> String {
    format!(
        r#"
pipelines:
  - name: cerebro_copy
    trigger: {{ object: {{ bucket: landing, pattern: "cerebro/{{db}}/{{table_name}}/*.csv" }} }}
    load: {{ table: "replicator.{{table_name}}", format: CSV }}
    batch:
      engine: dataproc_cluster
      project: my-project
      region: us-central1
      cluster:
        single_node: true
        image: projects/my-project/global/images/replicator-2026
        metastore: projects/my-project/locations/us-central1/services/hive
        max_idle: 12h
        subnet: dataproc-subnet
        service_account: replicator@my-project.iam.gserviceaccount.com
        tags: [allow-iap-ssh, dataproc-vm]
      pig:
        queries: ["{REPLICATOR}"]
    {}
"#,
        poll(timeout, attempts)
    )
}

const REGION: &str = "/v1/projects/my-project/regions/us-central1";

/// The object whose arrival starts the cluster's pipeline.
const CLUSTER_OBJECT: &str = "cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv";

/// The clusters deleted, in order, each once (see [`distinct`]).
fn cluster_deletes(fake: &Fake) -> Vec<String> {
    distinct(
        fake.calls("DELETE", &format!("{REGION}/clusters/"))
            .iter()
            .map(|r| r.path.rsplit('/').next().unwrap_or_default().to_owned())
            .collect(),
    )
}

/// The job id of every job submit, in order.
fn submits(fake: &Fake) -> Vec<String> {
    fake.calls("POST", "jobs:submit")
        .iter()
        .map(|r| {
            r.body["job"]["reference"]["jobId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The distinct job ids submitted to clusters, in order.
fn jobs_submitted(fake: &Fake) -> Vec<String> {
    distinct(submits(fake))
}

fn cluster_creates(fake: &Fake) -> Vec<String> {
    fake.calls("POST", &format!("{REGION}/clusters"))
        .iter()
        .map(|r| {
            r.body["clusterName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Every cluster created was deleted, in order, and none is left (a create sent again after a
/// transient error names the same cluster).
fn every_cluster_deleted(fake: &Fake) {
    assert_eq!(
        cluster_deletes(fake),
        distinct(cluster_creates(fake)),
        "deleted, in order"
    );
    assert!(fake.live_clusters().is_empty());
}

/// Dataproc jobs on an ephemeral cluster: a cluster and a job per attempt; the cluster is
/// deleted whatever the job's end.
const CLUSTER: Engine = Engine {
    config: cluster,
    queued: "PENDING",
    running: "RUNNING",
    succeeded: "DONE",
    failed: "ERROR",
    failure: "run_replicator.sh: exit status 2",
    start: Start::File(CLUSTER_OBJECT),
    creates: submits,
    creates_once: false,
    reads: |fake, job_id| fake.calls("GET", &format!("{REGION}/jobs/{job_id}")).len(),
    cancels: |fake| fake.calls("POST", &format!("{REGION}/jobs/")),
    is_cancel: |cancel, job_id| cancel.path == format!("{REGION}/jobs/{job_id}:cancel"),
    setup: |fake| {
        fake.cluster_creating_reads(2);
    },
    existing: |fake| {
        fake.adopt();
        None
    },
    transient: |fake| {
        fake.fail("POST", &format!("{REGION}/clusters"), 429, 1)
            .fail("GET", &format!("{REGION}/clusters/"), 404, 1)
            .fail("POST", "jobs:submit", 503, 1)
            .fail("GET", &format!("{REGION}/jobs/"), 500, 2)
            .fail("DELETE", &format!("{REGION}/clusters/"), 503, 2);
    },
    transient_creates: None,
    always: |fake, _| every_cluster_deleted(fake),
    succeeded_check: |fake, runs| {
        let creates = fake.calls("POST", &format!("{REGION}/clusters"));
        assert_eq!(creates.len(), 1);
        let cluster = &creates[0].body;
        let name = cluster["clusterName"].as_str().expect("name").to_owned();
        assert!(name.len() <= 51 && name.starts_with("cv-batch-"), "{name}");
        let config = &cluster["config"];
        assert_eq!(config["gceClusterConfig"]["internalIpOnly"], true);
        assert_eq!(
            config["gceClusterConfig"]["subnetworkUri"],
            "dataproc-subnet"
        );
        assert_eq!(
            config["gceClusterConfig"]["tags"],
            serde_json::json!(["allow-iap-ssh", "dataproc-vm"])
        );
        assert_eq!(
            config["gceClusterConfig"]["serviceAccountScopes"][0],
            "https://www.googleapis.com/auth/cloud-platform"
        );
        assert_eq!(
            config["softwareConfig"]["properties"]["dataproc:dataproc.allow.zero.workers"],
            "true"
        );
        assert_eq!(config["workerConfig"]["numInstances"], 0);
        assert_eq!(config["lifecycleConfig"]["idleDeleteTtl"], "43200s");
        assert_eq!(
            config["metastoreConfig"]["dataprocMetastoreService"],
            "projects/my-project/locations/us-central1/services/hive"
        );
        assert_eq!(
            config["masterConfig"]["imageUri"],
            "projects/my-project/global/images/replicator-2026"
        );
        let job_id = runs[0].job_id();
        let submits = fake.calls("POST", &format!("{REGION}/jobs:submit"));
        let job = &submits[0].body["job"];
        assert_eq!(job["reference"]["jobId"], job_id.as_str());
        assert_eq!(job["placement"]["clusterName"], name.as_str());
        let query = job["pigJob"]["queryList"]["queries"][0]
            .as_str()
            .expect("query");
        assert!(query.starts_with("sh export HOME=/root"), "{query}");
        assert!(
            query.ends_with("./run_replicator.sh dev1_groupondw ref_attr_class_dev"),
            "{query}"
        );
        assert_eq!(cluster_deletes(fake), vec![name]);
    },
    retried_check: |fake, _| {
        let created = cluster_creates(fake);
        assert_eq!(created.len(), 2);
        assert_ne!(created[0], created[1], "a new cluster per attempt");
    },
    keeps_failing_check: |fake, _| {
        // A create sent again (at-least-once delivery under load) names the same cluster.
        assert_eq!(
            distinct(cluster_creates(fake)).len(),
            3,
            "a cluster per attempt"
        );
    },
    timed_out_check: |fake, _| {
        assert_eq!(cluster_creates(fake).len(), 1, "one cluster, not retried");
    },
    adopted_check: |fake, runs, _| {
        assert_eq!(
            cluster_creates(fake).len(),
            1,
            "the 409 cluster was adopted"
        );
        assert_eq!(
            jobs_submitted(fake),
            vec![runs[0].job_id()],
            "the 409 job was adopted"
        );
    },
    transient_check: |fake, _| {
        assert!(
            fake.calls("DELETE", &format!("{REGION}/clusters/")).len() >= 3,
            "two 503s, then the delete that went through"
        );
    },
};

// ----------------------------------------------------------------------------------------
// Dataflow flex template (seeds 001 and 003)

fn dataflow(timeout: &str, attempts: u32) -> String {
    format!(
        r#"
pipelines:
  - name: sqlserver_orders
    trigger: {{ object: {{ bucket: landing, pattern: "orders/{{date}}/*.csv" }} }}
    load: {{ table: "staging.orders_{{date}}", format: CSV }}
    batch:
      engine: dataflow_flex
      project: my-project
      region: us-central1
      template: gs://dataflow-templates-us-central1/latest/flex/SQLServer_to_BigQuery
      parameters:
        connectionURL: "jdbc:sqlserver://10.0.0.5:1433;databaseName=erp"
        query: "select * from orders where order_date = '{{date}}'"
        outputTable: "my-project:analytics.orders"
        bigQueryLoadingTemporaryDirectory: gs://my-project-dataflow/tmp
      machine_type: e2-standard-2
      num_workers: 1
      max_workers: 4
      temp_location: gs://my-project-dataflow/tmp
      subnetwork: regions/us-central1/subnetworks/dataflow
      service_account: dataflow@my-project.iam.gserviceaccount.com
    {}
"#,
        poll(timeout, attempts)
    )
}

const DATAFLOW: &str = "/v1b3/projects/my-project/locations/us-central1";

fn launches(fake: &Fake) -> Vec<String> {
    fake.calls("POST", &format!("{DATAFLOW}/flexTemplates:launch"))
        .iter()
        .map(|r| {
            r.body["launchParameter"]["jobName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Dataflow flex templates: a job per attempt, launched under a job name derived from the
/// job id, looked up by name, read and cancelled by Dataflow's own job id.
const DATAFLOW_FLEX: Engine = Engine {
    config: dataflow,
    queued: "JOB_STATE_QUEUED",
    running: "JOB_STATE_RUNNING",
    succeeded: "JOB_STATE_DONE",
    failed: "JOB_STATE_FAILED",
    failure: "SQLServer connection refused",
    start: Start::File("orders/2026-11-20/a.csv"),
    creates: launches,
    creates_once: true,
    // Read by Dataflow's job id, which the run log does not hold: any job read.
    reads: |fake, _| fake.calls("GET", &format!("{DATAFLOW}/jobs/")).len(),
    cancels: |fake| fake.calls("PUT", &format!("{DATAFLOW}/jobs/")),
    is_cancel: |update, _| {
        update.body["requestedState"] == "JOB_STATE_CANCELLED"
            && update.path.contains("2026-11-21_02_00_00-")
    },
    setup: |_| {},
    existing: |fake| {
        fake.adopt();
        None
    },
    transient: |fake| {
        fake.fail("POST", "flexTemplates:launch", 429, 1)
            .fail("GET", &format!("{DATAFLOW}/jobs/"), 503, 2)
            .fail("GET", &format!("{DATAFLOW}/jobs/"), 404, 1);
    },
    transient_creates: Some(2),
    always: none,
    succeeded_check: |fake, runs| {
        let job_id = runs[0].job_id();
        let launch = &fake.calls("POST", "flexTemplates:launch")[0].body["launchParameter"];
        assert_eq!(launch["jobName"], job_id.as_str());
        assert_eq!(
            launch["containerSpecGcsPath"],
            "gs://dataflow-templates-us-central1/latest/flex/SQLServer_to_BigQuery"
        );
        assert_eq!(
            launch["parameters"]["query"],
            "select * from orders where order_date = '2026-11-20'"
        );
        let env = &launch["environment"];
        assert_eq!(env["machineType"], "e2-standard-2");
        assert_eq!(env["numWorkers"], 1);
        assert_eq!(env["maxWorkers"], 4);
        assert_eq!(env["tempLocation"], "gs://my-project-dataflow/tmp");
        assert_eq!(
            env["subnetwork"],
            "regions/us-central1/subnetworks/dataflow"
        );
        assert_eq!(
            env["serviceAccountEmail"],
            "dataflow@my-project.iam.gserviceaccount.com"
        );
        assert_eq!(
            fake.calls("GET", &format!("{DATAFLOW}/jobs?name={job_id}"))
                .len(),
            1,
            "looked up by name once before the launch"
        );
    },
    retried_check: none,
    keeps_failing_check: none,
    timed_out_check: none,
    adopted_check: |fake, runs, _| {
        let job_id = runs[0].job_id();
        assert!(
            fake.calls("GET", &format!("{DATAFLOW}/jobs?name={job_id}"))
                .len()
                >= 2,
            "found by name after the 409"
        );
    },
    transient_check: none,
};

// ----------------------------------------------------------------------------------------
// Cloud Data Fusion (seed 004)

fn fusion(timeout: &str, attempts: u32) -> String {
    format!(
        r#"
pipelines:
  - name: cdf_ingest
    trigger: {{ manual: true }}
    batch:
      engine: data_fusion
      instance_url: $FAKE/api
      pipeline: cdf_pipeline
      runtime_args: {{ output_dataset: cdf_output, run: "{{run_id}}" }}
      runs:
        - {{ args: {{ business_unit: hr, data_source: engineer }} }}
        - {{ args: {{ business_unit: hr, data_source: payroll }} }}
        - {{ active: false, args: {{ business_unit: finance, data_source: ledger }} }}
    poll: {{ success_states: [COMPLETED], interval: 50ms, timeout: {timeout}, max_attempts: {attempts}, backoff: {{ initial: 100ms, multiplier: 2, max: 1s }} }}
"#
    )
}

const CDAP_START: &str = "/api/v3/namespaces/default/start";
const CDAP_RUNS: &str =
    "/api/v3/namespaces/default/apps/cdf_pipeline/workflows/DataPipelineWorkflow/runs";

/// The runtime arguments of every start, in order.
fn starts(fake: &Fake) -> Vec<BTreeMap<String, String>> {
    fake.calls("POST", CDAP_START)
        .iter()
        .map(|r| serde_json::from_value(r.body[0]["runtimeargs"].clone()).unwrap_or_default())
        .collect()
}

/// The run id of the row `row` of the start keyed `key` of pipeline `cdf_ingest`.
fn row_run(key: &str, row: &str) -> RunId {
    let p = PipelineName::parse("cdf_ingest").expect("pipeline");
    let parent = RunId::derive(&p, &["key", key]);
    RunId::derive(&p, &[parent.as_str(), "row", row])
}

/// Cloud Data Fusion: each active row of a start by hand is a run of its own; a CDAP run
/// per attempt carries the job id in its runtime arguments, and is stopped at the timeout.
const DATA_FUSION: Engine = Engine {
    config: fusion,
    queued: "STARTING",
    running: "RUNNING",
    succeeded: "COMPLETED",
    failed: "FAILED",
    failure: "ended FAILED",
    start: Start::ByHand {
        rows: &["hr-engineer", "hr-payroll"],
    },
    creates: |fake| {
        starts(fake)
            .iter()
            .map(|a| a.get("conveyor.job_id").cloned().unwrap_or_default())
            .collect()
    },
    creates_once: true,
    // Read by CDAP's run id: any run read.
    reads: |fake, _| fake.calls("GET", &format!("{CDAP_RUNS}/")).len(),
    cancels: |fake| fake.calls("POST", "/stop"),
    is_cancel: |stop, _| stop.path.starts_with(&format!("{CDAP_RUNS}/run-")),
    setup: |_| {},
    existing: |fake| {
        let job_id = JobId::derive("batch", &row_run(KEY, "hr-engineer"), 1);
        Some(fake.existing_cdap_run(&[
            ("conveyor.job_id", job_id.as_str()),
            ("business_unit", "hr"),
            ("data_source", "engineer"),
        ]))
    },
    transient: |fake| {
        fake.fail("GET", &format!("{CDAP_RUNS}/"), 503, 2)
            .fail("GET", &format!("{CDAP_RUNS}/"), 404, 1)
            .fail("GET", &format!("{CDAP_RUNS}/"), 429, 1);
    },
    transient_creates: Some(2),
    always: none,
    succeeded_check: |fake, runs| {
        let started = starts(fake);
        let mut sources: Vec<&str> = started.iter().map(|a| a["data_source"].as_str()).collect();
        sources.sort_unstable();
        assert_eq!(sources, vec!["engineer", "payroll"]);
        for (run, source) in runs.iter().zip(["engineer", "payroll"]) {
            let job_id = JobId::derive("batch", &run.id, 1);
            let args = started
                .iter()
                .find(|a| a["data_source"] == source)
                .expect("start of the row");
            assert_eq!(args["business_unit"], "hr");
            assert_eq!(args["output_dataset"], "cdf_output");
            assert_eq!(
                args["run"],
                run.id.as_str(),
                "placeholders are rendered per run"
            );
            assert_eq!(args["conveyor.job_id"], job_id.as_str());
            assert_eq!(args["conveyor.attempt"], "1");
        }
    },
    retried_check: |fake, _| {
        let started = starts(fake);
        let second: Vec<&BTreeMap<String, String>> = started
            .iter()
            .filter(|a| a["conveyor.attempt"] == "2")
            .collect();
        assert_eq!(second.len(), 2);
        assert!(second.iter().all(|a| a["conveyor.job_id"].ends_with("-a2")));
    },
    keeps_failing_check: none,
    timed_out_check: none,
    adopted_check: |fake, _, followed| {
        let started = starts(fake);
        assert_eq!(started.len(), 1, "only the payroll row was started");
        assert_eq!(started[0]["data_source"], "payroll");
        let existing = followed;
        assert!(
            !fake
                .calls("GET", &format!("{CDAP_RUNS}/{existing}"))
                .is_empty(),
            "the adopted run is followed"
        );
    },
    transient_check: none,
};

// ----------------------------------------------------------------------------------------
// Cloud Run jobs (general work in production: a container run with the run's arguments)

fn cloud_run(timeout: &str, attempts: u32) -> String {
    format!(
        r#"
pipelines:
  - name: nightly_export
    trigger: {{ object: {{ bucket: landing, pattern: "exports/{{date}}/*.csv" }} }}
    load: {{ table: "staging.exports_{{date}}", format: CSV }}
    batch:
      engine: cloud_run_job
      project: my-project
      region: us-central1
      job: exporter
      args: ["--table={{table}}", "--date={{date}}"]
      env: {{ MODE: full, RUN: "{{run_id}}" }}
      task_count: 2
      task_timeout: 30m
    {}
"#,
        poll(timeout, attempts)
    )
}

const RUN_JOB: &str = "/v2/projects/my-project/locations/us-central1/jobs/exporter";

/// Cloud Run jobs: an execution per attempt, carrying its job id in `CONVEYOR_JOB_ID` (Cloud
/// Run names executions itself), found again by it in the job's executions, read and
/// cancelled by the execution's name.
const CLOUD_RUN_JOB: Engine = Engine {
    config: cloud_run,
    queued: "PENDING",
    running: "RUNNING",
    succeeded: "SUCCEEDED",
    failed: "FAILED",
    failure: "BigQuery table not found",
    start: Start::File("exports/2026-11-20/a.csv"),
    // The executions the fake created (a run whose answer was lost still created one).
    creates: Fake::executions_created,
    creates_once: true,
    // Read by the execution's name, which the run log does not hold: any execution read.
    reads: |fake, _| fake.calls("GET", &format!("{RUN_JOB}/executions/")).len(),
    cancels: |fake| fake.calls("POST", ":cancel"),
    is_cancel: |cancel, _| {
        cancel
            .path
            .starts_with(&format!("{RUN_JOB}/executions/exporter-"))
            && cancel.path.ends_with(":cancel")
    },
    setup: |_| {},
    // The first run goes through but its answer is lost (503): the redelivered submit must
    // find that execution by its job id, not start a second.
    existing: |fake| {
        fake.adopt();
        None
    },
    transient: |fake| {
        fake.fail("POST", &format!("{RUN_JOB}:run"), 429, 1)
            .fail("GET", &format!("{RUN_JOB}/executions?"), 503, 1)
            .fail("GET", &format!("{RUN_JOB}/executions/"), 503, 2)
            .fail("GET", &format!("{RUN_JOB}/executions/"), 404, 1);
    },
    transient_creates: Some(1),
    always: |fake, runs| {
        // Every run call carries its attempt's job id, and is the only way in.
        for call in fake.calls("POST", &format!("{RUN_JOB}:run")) {
            let env = &call.body["overrides"]["containerOverrides"][0]["env"];
            let id = env
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "CONVEYOR_JOB_ID")
                .and_then(|e| e["value"].as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(all_job_ids(runs).contains(&id), "{id} in {env}");
        }
    },
    succeeded_check: |fake, runs| {
        let runs_sent = fake.calls("POST", &format!("{RUN_JOB}:run"));
        assert_eq!(runs_sent.len(), 1);
        assert_eq!(runs_sent[0].authorization, "Bearer test-token");
        let overrides = &runs_sent[0].body["overrides"];
        assert_eq!(overrides["taskCount"], 2);
        assert_eq!(overrides["timeout"], "1800s");
        let container = &overrides["containerOverrides"][0];
        assert_eq!(
            container["args"],
            serde_json::json!(["--table=staging.exports_2026_11_20", "--date=2026-11-20"])
        );
        let env: BTreeMap<String, String> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(env["MODE"], "full");
        assert_eq!(env["RUN"], runs[0].id.as_str(), "placeholders are rendered");
        assert_eq!(env["CONVEYOR_JOB_ID"], runs[0].job_id());
        assert_eq!(
            fake.calls("GET", &format!("{RUN_JOB}/executions?")).len(),
            1,
            "looked up once before the run; then followed by the name the run answered"
        );
    },
    retried_check: none,
    keeps_failing_check: none,
    timed_out_check: none,
    adopted_check: |fake, runs, _| {
        assert_eq!(
            fake.calls("POST", &format!("{RUN_JOB}:run")).len(),
            1,
            "the run whose answer was lost is not sent again"
        );
        assert!(
            fake.calls("GET", &format!("{RUN_JOB}/executions?")).len() >= 2,
            "the redelivered submit looked the execution up by its job id"
        );
        assert_eq!(fake.executions_created(), vec![runs[0].job_id()]);
    },
    transient_check: |fake, _| {
        assert_eq!(
            fake.calls("POST", &format!("{RUN_JOB}:run")).len(),
            2,
            "the 429 run, then the one that went through"
        );
    },
};

// ----------------------------------------------------------------------------------------
// Scenarios of one engine only.

#[tokio::test]
async fn an_adopted_serverless_batch_that_had_failed_is_retried_under_a_new_batch_id() {
    let fake = Fake::start().await;
    fake.adopt()
        .script(&[&["FAILED"], &["PENDING", "RUNNING", "SUCCEEDED"]]);
    let chain = Chain::start(&serverless("1m", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "SUCCEEDED"),
        ])
    );
    let ids = job_ids(&chain.batch_rows(None).await);
    let creates: Vec<String> = fake
        .calls("POST", BATCHES)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    // At least once: under load the tick and the event-driven poll can both start the due
    // retry; the second create goes under the same id and adopts (at most one extra).
    assert!(creates.len() <= 3, "{creates:?}");
    assert_eq!(
        distinct(creates),
        vec![
            format!("{BATCHES}?batchId={}", ids[0]),
            format!("{BATCHES}?batchId={}", ids[1]),
        ],
        "the 409 batch was adopted, the retry created a new one"
    );
    chain.stop().await;
}

/// A pipeline's whole-run `timeout` reaches Google: the running batch (its own poll timeout a
/// minute away) is cancelled through its operation, once, and the run ends TIMED_OUT.
#[tokio::test]
async fn a_run_past_its_whole_run_timeout_cancels_its_serverless_batch_through_its_operation() {
    let fake = Fake::start().await;
    script(&fake, 1, &[&["PENDING", "RUNNING"]]);
    let yaml = serverless("1m", 3).replace("    batch:\n", "    timeout: 1s\n    batch:\n");
    assert!(yaml.contains("timeout: 1s"), "{yaml}");
    let chain = Chain::start(&yaml, fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    let rows = chain.batch_rows(None).await;
    let last = rows.last().expect("a batch row");
    assert_eq!(last.status, "TIMED_OUT", "{:?}", chain.history().await);
    assert!(
        last.error
            .as_deref()
            .is_some_and(|e| e.contains("the run timed out")),
        "{:?}",
        last.error
    );
    let cancels = fake.calls("POST", ":cancel");
    assert_eq!(cancels.len(), 1, "{cancels:#?}");
    assert!(
        cancels[0]
            .path
            .starts_with("/v1/projects/my-project/regions/us-central1/operations/op-")
            && cancels[0].path.ends_with(":cancel"),
        "{:?}",
        cancels[0].path
    );
    assert_eq!(cancels[0].authorization, "Bearer test-token");
    let ends: Vec<String> = chain
        .run_log()
        .await
        .iter()
        .filter(|r| r.step == "submit" && r.job.is_none())
        .map(|r| r.status.clone())
        .collect();
    assert_eq!(ends, ["TIMED_OUT"]);
    // Not retried: one create.
    assert_eq!(fake.calls("POST", BATCHES).len(), 1);
    chain.stop().await;
}

#[tokio::test]
async fn a_cluster_job_that_times_out_while_its_cluster_is_still_creating_deletes_the_cluster() {
    let fake = Fake::start().await;
    fake.cluster_creating_reads(1000);
    let chain = Chain::start(&cluster("1s", 3), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "TIMED_OUT")])
    );
    let row = chain.batch_rows(None).await.pop().expect("row");
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("CLUSTER_CREATING")),
        "{:?}",
        row.error
    );
    assert!(fake.calls("POST", "jobs:submit").is_empty());
    assert_eq!(cluster_deletes(&fake), cluster_creates(&fake));
    assert!(fake.live_clusters().is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn a_transient_error_on_a_data_fusion_row_start_is_retried_by_that_rows_delivery_alone() {
    let fake = Fake::start().await;
    fake.script(&[&["RUNNING", "COMPLETED"]])
        .fail("POST", CDAP_START, 503, 1);
    let chain = Chain::start(&fusion("1m", 1), fake.clone()).await;
    // The start only queues the rows (one dev.conveyor.row.queued each): it succeeds, and
    // the row whose start is refused for now is redelivered on its own (Pub/Sub, or the
    // embedded dispatcher), not the whole start.
    let (status, reply) = chain.start_by_hand("cdf_ingest", "k").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle().await;

    assert_eq!(
        chain.history().await.len(),
        6,
        "two rows, each SUBMITTED, RUNNING, SUCCEEDED"
    );
    let started = starts(&fake);
    assert_eq!(started.len(), 3, "the refused start, then one per row");
    let jobs: std::collections::BTreeSet<&String> =
        started.iter().map(|a| &a["conveyor.job_id"]).collect();
    assert_eq!(jobs.len(), 2, "each row's job started once");
    assert!(!chain.run_log().await.iter().any(|r| r.status == "FAILED"));
    chain.stop().await;
}

// ----------------------------------------------------------------------------------------
// How the engines classify the APIs' refusals, pages, cluster errors and slow cancels.

/// The run's rows that carry an error.
async fn errors(chain: &Chain) -> Vec<String> {
    chain
        .run_log()
        .await
        .iter()
        .filter_map(|r| r.error.clone())
        .collect()
}

/// A serverless create answering `status` once: a permanent refusal (403 permission, 400
/// invalid argument) ends the run with Google's reason and is never sent again.
async fn a_create_refused_for_good(status: u16, code: &str) {
    let fake = Fake::start().await;
    fake.script(&[&["RUNNING", "SUCCEEDED"]])
        .fail("POST", BATCHES, status, 1);
    let chain = Chain::start(&serverless("1m", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        fake.calls("POST", BATCHES).len(),
        1,
        "a {status} is final: not redelivered, not retried as another attempt"
    );
    assert_eq!(
        chain.history().await,
        h(&[(1, "FAILED")]),
        "the first attempt fails at its create, and no other attempt follows (max_attempts 3)"
    );
    let errors = errors(&chain).await;
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&format!("HTTP {status}")) && e.contains(code)),
        "the run log says why: {errors:?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_permission_denied_create_fails_the_run_for_good_with_the_reason() {
    a_create_refused_for_good(403, "PERMISSION_DENIED").await;
}

#[tokio::test]
async fn an_invalid_argument_create_fails_the_run_for_good_with_the_reason() {
    a_create_refused_for_good(400, "INVALID_ARGUMENT").await;
}

#[tokio::test]
async fn an_unauthenticated_answer_is_retried_with_the_same_batch_id() {
    let fake = Fake::start().await;
    fake.script(&[&["RUNNING", "SUCCEEDED"]])
        .fail("POST", BATCHES, 401, 1)
        .fail("GET", &format!("{BATCHES}/"), 401, 1);
    let chain = Chain::start(&serverless("1m", 1), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")]),
        "max_attempts is 1: a 401 counted as a failure would have ended the run"
    );
    let creates = fake.calls("POST", BATCHES);
    assert_eq!(creates.len(), 2, "the refused create was sent again");
    assert_eq!(creates[0].path, creates[1].path, "under the same batch id");
    chain.stop().await;
}

#[tokio::test]
async fn a_cluster_in_error_ends_its_job_failed_with_the_clusters_detail_and_is_deleted() {
    let fake = Fake::start().await;
    fake.cluster_error("Insufficient 'CPUS' quota. Requested 4.0, available 0.0.")
        .script(&[&["DONE"]]);
    let chain = Chain::start(&cluster("1m", 1), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    let history = chain.history().await;
    assert_eq!(
        history.first(),
        Some(&(1, "SUBMITTED".to_owned())),
        "{history:?}"
    );
    assert_eq!(
        history.last(),
        Some(&(1, "FAILED".to_owned())),
        "{history:?}"
    );
    let rows = chain.batch_rows(None).await;
    let failed = rows.iter().find(|r| r.status == "FAILED").expect("failed");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("is ERROR") && e.contains("Insufficient 'CPUS' quota")),
        "{:?}",
        failed.error
    );
    assert!(
        jobs_submitted(&fake).is_empty(),
        "no job is submitted to a cluster in error"
    );
    assert_eq!(cluster_deletes(&fake), cluster_creates(&fake));
    assert!(fake.live_clusters().is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn an_adopted_dataflow_job_is_found_on_a_later_page_of_the_jobs_list() {
    let fake = Fake::start().await;
    fake.adopt()
        .page_size(1)
        .script(&[&["JOB_STATE_RUNNING", "JOB_STATE_DONE"]]);
    let chain = Chain::start(&dataflow("1m", 3), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    let lists = fake.calls("GET", &format!("{DATAFLOW}/jobs?name="));
    assert!(
        lists.iter().any(|r| r.path.contains("&pageToken=0")),
        "the empty first page's token was followed: {lists:#?}"
    );
    assert_eq!(launches(&fake).len(), 1, "launched once, answered 409");
    chain.stop().await;
}

/// A streaming Dataflow job (`streaming: true`) never reaches DONE: it succeeds once Dataflow
/// says it has been `JOB_STATE_RUNNING` for `settle` (not at the first RUNNING read), and is
/// left running — never cancelled, not even past the poll timeout. `conveyor drain RUN` asks
/// Dataflow for `JOB_STATE_DRAINING`.
#[tokio::test]
async fn a_streaming_dataflow_job_succeeds_once_it_has_run_for_settle_and_is_left_running() {
    let fake = Fake::start().await;
    fake.script(&[&["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]]);
    let service_account = "      service_account: dataflow@my-project.iam.gserviceaccount.com\n";
    let yaml = dataflow("1s", 1).replace(
        service_account,
        &format!(
            "{service_account}      streaming: true\n      settle: 400ms\n      \
             worker_image: us-docker.pkg.dev/my-project/beam/worker:2.61\n      \
             additional_experiments: [use_runner_v2]\n"
        ),
    );
    assert_ne!(yaml, dataflow("1s", 1), "the streaming keys were added");
    let chain = Chain::start(&yaml, fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    let rows = chain.batch_rows(None).await;
    let history: Vec<_> = rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
    assert_eq!(
        history,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")]),
        "{rows:#?}"
    );
    // When the poll saw each state (the event's time), not when the log step wrote its row:
    // rows are written asynchronously, later under load.
    let running = rows[1].td_timestamp;
    let succeeded = rows[2].td_timestamp;
    assert!(
        succeeded - running >= chrono::Duration::milliseconds(300),
        "succeeded {} ms after RUNNING was first seen: before it settled",
        (succeeded - running).num_milliseconds()
    );
    let env = &fake.calls("POST", "flexTemplates:launch")[0].body["launchParameter"]["environment"];
    assert_eq!(
        env["sdkContainerImage"],
        "us-docker.pkg.dev/my-project/beam/worker:2.61"
    );
    assert_eq!(env["additionalExperiments"][0], "use_runner_v2");
    // Past the poll timeout (1 s) the job is still running: nothing cancels it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        fake.calls("PUT", &format!("{DATAFLOW}/jobs/")).is_empty(),
        "a streaming job that succeeded is left running"
    );
    assert_eq!(
        chain.history().await.len(),
        3,
        "and its run stays SUCCEEDED"
    );

    // `conveyor drain RUN` finds the run's streaming job and sends jobs.update with
    // JOB_STATE_DRAINING; the job then drains.
    let state = chain.dir.path().join("state");
    let drain = async |pipeline_file: &str| {
        let file = chain.dir.path().join("conveyor.yaml");
        std::fs::write(&file, pipeline_file.replace("$FAKE", &fake.url)).expect("pipeline file");
        tokio::process::Command::new(conveyor_e2e::binary("conveyor"))
            .arg("--config")
            .arg(&file)
            .arg("--state-dir")
            .arg(&state)
            .args(["drain", &rows[0].run_id, "--local"])
            .env("CONVEYOR_DATAFLOW_ENDPOINT", &fake.url)
            .env("CONVEYOR_ANONYMOUS", "true")
            .env_remove("CONVEYOR_PROJECT")
            .output()
            .await
            .expect("conveyor drain")
    };
    let out = drain(&yaml).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("drain requested"), "{stdout}");
    let updates = fake.calls("PUT", &format!("{DATAFLOW}/jobs/"));
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0].body["requestedState"], "JOB_STATE_DRAINING");
    // A run whose pipeline has no streaming job is refused, naming why.
    let refused = drain(&dataflow("1s", 1)).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("no streaming job"), "{stderr}");
    assert_eq!(fake.calls("PUT", &format!("{DATAFLOW}/jobs/")).len(), 1);
    chain.stop().await;
}

/// Two deliveries of one Cloud Run job's submit at once (two starts of the same run here; a
/// redelivery racing its original is the same): both would list the job's executions, find
/// none and `:run` it. The submit claim lets one run it; the other finds its execution.
#[tokio::test]
async fn two_simultaneous_submits_of_one_cloud_run_job_run_it_once() {
    let fake = Fake::start().await;
    fake.script(&[&["RUNNING", "SUCCEEDED"]]);
    // The executions list answers late, so both submits have listed before either runs.
    fake.delay("GET", &format!("{RUN_JOB}/executions?"), 300, 2);
    let yaml = format!(
        r#"
pipelines:
  - name: nightly_export
    trigger: {{ manual: true }}
    batch:
      engine: cloud_run_job
      project: my-project
      region: us-central1
      job: exporter
      args: ["--date={{date}}"]
    {}
"#,
        poll("1m", 1)
    );
    let chain = Chain::start(&yaml, fake.clone()).await;
    let (a, b) = tokio::join!(
        chain.start_by_hand("nightly_export", "k1"),
        chain.start_by_hand("nightly_export", "k1")
    );
    assert!(a.0.is_success() && b.0.is_success(), "{a:?} {b:?}");
    chain.settle().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !chain.history().await.iter().any(|(_, s)| s == "SUCCEEDED") {
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not succeed: {:?}",
            chain.history().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = fake.calls("POST", &format!("{RUN_JOB}:run"));
    assert_eq!(
        runs.len(),
        1,
        "one execution for one job id: {:?}",
        fake.executions_created()
    );
    assert_eq!(fake.executions_created().len(), 1);
    chain.stop().await;
}
