//! End-to-end tests of the batch engines: the embedded chain (watched bucket, SQLite
//! warehouse and run log, the real steps) with [`Engines`] pointed at a local fake of the
//! engines' REST APIs. For each engine: success; failure, retry, success; failure to max
//! attempts; timeout with cancel; adopting an existing job (409); transient API errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use conveyor_core::engines::Engines;
use conveyor_core::event::StepName;
use conveyor_core::names::{JobId, PipelineName, RunId};
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::fake_engines::Fake;
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

#[tokio::test]
async fn a_serverless_batch_is_created_under_its_job_id_with_the_pinned_runtime_and_succeeds() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]]);
    let chain = Chain::start(&serverless("1m", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    let rows = chain.batch_rows(None).await;
    let job_id = rows[0].dataproc_job_id.clone().expect("job id");
    assert!(
        rows.iter()
            .all(|r| r.dataproc_job_id.as_deref() == Some(&job_id))
    );
    let creates = fake.calls("POST", BATCHES);
    assert_eq!(creates.len(), 1);
    let create = &creates[0];
    assert_eq!(create.path, format!("{BATCHES}?batchId={job_id}"));
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
    assert!(!fake.calls("GET", &format!("{BATCHES}/{job_id}")).is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn a_failed_serverless_batch_is_resubmitted_under_a_new_batch_id_and_succeeds() {
    let fake = Fake::start().await;
    fake.script(&[
        &["PENDING", "RUNNING", "FAILED"],
        &["PENDING", "RUNNING", "SUCCEEDED"],
    ]);
    let chain = Chain::start(&serverless("1m", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "RUNNING"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "SUCCEEDED"),
        ])
    );
    let rows = chain.batch_rows(None).await;
    let ids = job_ids(&rows);
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0].ends_with("-a1") && ids[1].ends_with("-a2"),
        "{ids:?}"
    );
    let failed = rows
        .iter()
        .find(|r| r.status == "FAILED")
        .expect("failed row");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("KMS key not found")),
        "{:?}",
        failed.error
    );
    assert!(failed.detail.contains("retry_at"));
    let creates: Vec<String> = fake
        .calls("POST", BATCHES)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        creates,
        vec![
            format!("{BATCHES}?batchId={}", ids[0]),
            format!("{BATCHES}?batchId={}", ids[1]),
        ]
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_serverless_batch_that_keeps_failing_ends_failed_after_max_attempts() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING", "FAILED"]]);
    let chain = Chain::start(&serverless("1m", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "RUNNING"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "FAILED"),
            (3, "SUBMITTED"),
            (3, "RUNNING"),
            (3, "FAILED"),
        ])
    );
    let rows = chain.batch_rows(None).await;
    let last = rows.last().expect("last row");
    assert!(
        !last.detail.contains("retry_at"),
        "the final failure schedules no retry"
    );
    assert_eq!(fake.calls("POST", BATCHES).len(), 3);
    assert_eq!(job_ids(&rows).len(), 3);
    chain.stop().await;
}

#[tokio::test]
async fn a_serverless_batch_past_its_timeout_is_cancelled_through_its_operation_and_ends_timed_out()
{
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING"]]);
    let chain = Chain::start(&serverless("1s", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "TIMED_OUT")])
    );
    let cancels = fake.calls("POST", ":cancel");
    assert_eq!(cancels.len(), 1, "{cancels:#?}");
    assert!(
        cancels[0]
            .path
            .starts_with("/v1/projects/my-project/regions/us-central1/operations/op-"),
        "{}",
        cancels[0].path
    );
    let rows = chain.batch_rows(None).await;
    let timed_out = rows.last().expect("row");
    assert!(
        timed_out
            .error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        timed_out.error
    );
    assert_eq!(
        fake.calls("POST", BATCHES).len(),
        1,
        "a timeout is not retried"
    );
    chain.stop().await;
}

#[tokio::test]
async fn an_existing_serverless_batch_answering_409_is_adopted_and_followed_to_its_end() {
    let fake = Fake::start().await;
    fake.adopt().script(&[&["RUNNING", "RUNNING", "SUCCEEDED"]]);
    let chain = Chain::start(&serverless("1m", 3), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    assert_eq!(fake.calls("POST", BATCHES).len(), 1, "no second batch");
    let job_id = chain.batch_rows(None).await[0]
        .dataproc_job_id
        .clone()
        .expect("job id");
    assert!(!fake.calls("GET", &format!("{BATCHES}/{job_id}")).is_empty());
    chain.stop().await;
}

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
    assert_eq!(
        creates,
        vec![
            format!("{BATCHES}?batchId={}", ids[0]),
            format!("{BATCHES}?batchId={}", ids[1]),
        ],
        "the 409 batch was adopted, the retry created a new one"
    );
    chain.stop().await;
}

#[tokio::test]
async fn transient_dataproc_errors_are_retried_and_never_count_as_batch_failures() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]])
        .fail("POST", BATCHES, 503, 1)
        .fail("GET", &format!("{BATCHES}/"), 404, 1)
        .fail("GET", &format!("{BATCHES}/"), 429, 2)
        .fail("GET", &format!("{BATCHES}/"), 503, 2);
    let chain = Chain::start(&serverless("1m", 1), fake.clone()).await;
    chain.drop_csv("users/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")]),
        "max_attempts is 1: any counted failure would have ended the run"
    );
    let creates = fake.calls("POST", BATCHES);
    assert_eq!(creates.len(), 2, "the 503 create was redelivered once");
    assert_eq!(creates[0].path, creates[1].path, "under the same batch id");
    assert!(fake.calls("GET", &format!("{BATCHES}/")).len() >= 7);
    assert!(
        !chain
            .run_log()
            .await
            .iter()
            .any(|r| r.status == "FAILED" || r.status == "REJECTED")
    );
    chain.stop().await;
}

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

/// The clusters deleted, in order. A check that overlaps another (the submitted event's and a
/// tick's) may send the same idempotent call twice: each cluster is listed once.
fn cluster_deletes(fake: &Fake) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in fake.calls("DELETE", &format!("{REGION}/clusters/")) {
        let name = r.path.rsplit('/').next().unwrap_or_default().to_owned();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The distinct job ids submitted to clusters, in order (see [`cluster_deletes`]).
fn jobs_submitted(fake: &Fake) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in fake.calls("POST", "jobs:submit") {
        let id = r.body["job"]["reference"]["jobId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
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

#[tokio::test]
async fn a_pig_sh_job_runs_on_a_single_node_ephemeral_cluster_that_is_deleted_after_success() {
    let fake = Fake::start().await;
    fake.cluster_creating_reads(2)
        .script(&[&["PENDING", "RUNNING", "RUNNING", "DONE"]]);
    let chain = Chain::start(&cluster("1m", 3), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    let job_id = chain.batch_rows(None).await[0]
        .dataproc_job_id
        .clone()
        .expect("job id");
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
    assert_eq!(jobs_submitted(&fake), vec![job_id.clone()]);
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
    assert_eq!(cluster_deletes(&fake), vec![name]);
    assert!(fake.live_clusters().is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn a_failed_cluster_job_deletes_its_cluster_and_is_retried_on_a_new_cluster() {
    let fake = Fake::start().await;
    fake.script(&[
        &["PENDING", "RUNNING", "ERROR"],
        &["RUNNING", "RUNNING", "DONE"],
    ]);
    let chain = Chain::start(&cluster("1m", 3), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "RUNNING"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "SUCCEEDED"),
        ])
    );
    let rows = chain.batch_rows(None).await;
    let failed = rows.iter().find(|r| r.status == "FAILED").expect("failed");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("run_replicator.sh: exit status 2")),
        "{:?}",
        failed.error
    );
    let created = cluster_creates(&fake);
    assert_eq!(created.len(), 2);
    assert_ne!(created[0], created[1], "a new cluster per attempt");
    assert_eq!(cluster_deletes(&fake), created, "both deleted, in order");
    assert!(fake.live_clusters().is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn a_cluster_job_that_keeps_failing_deletes_every_cluster_and_ends_failed() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING", "ERROR"]]);
    let chain = Chain::start(&cluster("1m", 2), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "RUNNING"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "FAILED"),
        ])
    );
    let created = cluster_creates(&fake);
    assert_eq!(created.len(), 2);
    assert_eq!(cluster_deletes(&fake), created);
    assert!(fake.live_clusters().is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn a_cluster_job_past_its_timeout_is_cancelled_and_its_cluster_deleted() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING"]]);
    let chain = Chain::start(&cluster("1s", 3), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "TIMED_OUT")])
    );
    let job_id = chain.batch_rows(None).await[0]
        .dataproc_job_id
        .clone()
        .expect("job id");
    let cancels = fake.calls("POST", &format!("{REGION}/jobs/{job_id}:cancel"));
    assert_eq!(cancels.len(), 1);
    let created = cluster_creates(&fake);
    assert_eq!(cluster_deletes(&fake), created);
    assert!(fake.live_clusters().is_empty());
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
async fn an_existing_cluster_and_job_answering_409_are_adopted_and_the_cluster_still_deleted() {
    let fake = Fake::start().await;
    fake.adopt().script(&[&["RUNNING", "RUNNING", "DONE"]]);
    let chain = Chain::start(&cluster("1m", 3), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    assert_eq!(
        cluster_creates(&fake).len(),
        1,
        "the 409 cluster was adopted"
    );
    let job_id = chain.batch_rows(None).await[0]
        .dataproc_job_id
        .clone()
        .expect("job id");
    assert_eq!(
        jobs_submitted(&fake),
        vec![job_id],
        "the 409 job was adopted"
    );
    assert_eq!(cluster_deletes(&fake), cluster_creates(&fake));
    assert!(fake.live_clusters().is_empty());
    chain.stop().await;
}

#[tokio::test]
async fn transient_cluster_api_errors_are_retried_and_the_cluster_is_deleted_once_the_job_ends() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING", "DONE"]])
        .fail("POST", &format!("{REGION}/clusters"), 429, 1)
        .fail("GET", &format!("{REGION}/clusters/"), 404, 1)
        .fail("POST", "jobs:submit", 503, 1)
        .fail("GET", &format!("{REGION}/jobs/"), 500, 2)
        .fail("DELETE", &format!("{REGION}/clusters/"), 503, 2);
    let chain = Chain::start(&cluster("1m", 1), fake.clone()).await;
    chain.drop_csv("cerebro/dev1_groupondw/ref_attr_class_dev/part-0.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    assert!(
        fake.calls("DELETE", &format!("{REGION}/clusters/")).len() >= 3,
        "two 503s, then the delete that went through"
    );
    assert!(fake.live_clusters().is_empty());
    assert!(
        !chain
            .run_log()
            .await
            .iter()
            .any(|r| r.status == "FAILED" || r.status == "REJECTED")
    );
    chain.stop().await;
}

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

#[tokio::test]
async fn a_flex_template_is_launched_with_a_deterministic_job_name_and_its_environment_and_succeeds()
 {
    let fake = Fake::start().await;
    fake.script(&[&[
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_DONE",
    ]]);
    let chain = Chain::start(&dataflow("1m", 3), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    let rows = chain.batch_rows(None).await;
    let job_id = rows[0].dataproc_job_id.clone().expect("job id");
    let expected = JobId::derive("batch", &RunId::parse(&rows[0].run_id).expect("run"), 1);
    assert_eq!(
        job_id,
        expected.as_str(),
        "the job id derives from run and attempt"
    );
    assert!(rows.last().expect("row").detail.contains("JOB_STATE_DONE"));
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
    chain.stop().await;
}

#[tokio::test]
async fn a_failed_dataflow_job_is_relaunched_under_a_new_job_name_and_succeeds() {
    let fake = Fake::start().await;
    fake.script(&[
        &["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"],
        &["JOB_STATE_RUNNING", "JOB_STATE_RUNNING", "JOB_STATE_DONE"],
    ]);
    let chain = Chain::start(&dataflow("1m", 3), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "RUNNING"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "SUCCEEDED"),
        ])
    );
    let rows = chain.batch_rows(None).await;
    assert_eq!(launches(&fake), job_ids(&rows));
    let failed = rows.iter().find(|r| r.status == "FAILED").expect("failed");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("SQLServer connection refused")),
        "the job's error message is kept: {:?}",
        failed.error
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_dataflow_job_that_keeps_failing_ends_failed_after_max_attempts() {
    let fake = Fake::start().await;
    fake.script(&[&["JOB_STATE_RUNNING", "JOB_STATE_FAILED"]]);
    let chain = Chain::start(&dataflow("1m", 2), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[
            (1, "SUBMITTED"),
            (1, "RUNNING"),
            (1, "FAILED"),
            (2, "SUBMITTED"),
            (2, "RUNNING"),
            (2, "FAILED"),
        ])
    );
    assert_eq!(launches(&fake).len(), 2);
    let last = chain.batch_rows(None).await.pop().expect("row");
    assert!(!last.detail.contains("retry_at"));
    chain.stop().await;
}

#[tokio::test]
async fn a_dataflow_job_past_its_timeout_is_cancelled_with_requested_state_cancelled() {
    let fake = Fake::start().await;
    fake.script(&[&["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]]);
    let chain = Chain::start(&dataflow("1s", 3), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "TIMED_OUT")])
    );
    let updates = fake.calls("PUT", &format!("{DATAFLOW}/jobs/"));
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body["requestedState"], "JOB_STATE_CANCELLED");
    assert!(
        updates[0].path.contains("2026-11-21_02_00_00-"),
        "by Dataflow's job id"
    );
    assert_eq!(launches(&fake).len(), 1);
    chain.stop().await;
}

#[tokio::test]
async fn a_launch_answering_409_adopts_the_running_job_of_that_name() {
    let fake = Fake::start().await;
    fake.adopt()
        .script(&[&["JOB_STATE_RUNNING", "JOB_STATE_RUNNING", "JOB_STATE_DONE"]]);
    let chain = Chain::start(&dataflow("1m", 3), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    assert_eq!(launches(&fake).len(), 1, "launched once, answered 409");
    let job_id = chain.batch_rows(None).await[0]
        .dataproc_job_id
        .clone()
        .expect("job id");
    assert!(
        fake.calls("GET", &format!("{DATAFLOW}/jobs?name={job_id}"))
            .len()
            >= 2,
        "found by name after the 409"
    );
    chain.stop().await;
}

#[tokio::test]
async fn transient_dataflow_errors_are_retried_and_never_count_as_failures() {
    let fake = Fake::start().await;
    fake.script(&[&[
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_DONE",
    ]])
    .fail("POST", "flexTemplates:launch", 429, 1)
    .fail("GET", &format!("{DATAFLOW}/jobs/"), 503, 2)
    .fail("GET", &format!("{DATAFLOW}/jobs/"), 404, 1);
    let chain = Chain::start(&dataflow("1m", 1), fake.clone()).await;
    chain.drop_csv("orders/2026-11-20/a.csv");
    chain.settle().await;

    assert_eq!(
        chain.history().await,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    let names = launches(&fake);
    assert_eq!(names.len(), 2, "the 429 launch was redelivered");
    assert_eq!(names[0], names[1]);
    assert!(
        !chain
            .run_log()
            .await
            .iter()
            .any(|r| r.status == "FAILED" || r.status == "REJECTED")
    );
    chain.stop().await;
}

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

#[tokio::test]
async fn each_active_row_starts_its_own_data_fusion_run_with_its_runtime_args_and_completes() {
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "STARTING", "RUNNING", "RUNNING", "COMPLETED"]]);
    let chain = Chain::start(&fusion("1m", 3), fake.clone()).await;
    let (status, reply) = chain.start_by_hand("cdf_ingest", "2026-11-20").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle().await;

    let started = starts(&fake);
    assert_eq!(started.len(), 2, "two active rows, two runs: {started:#?}");
    let mut sources: Vec<&str> = started.iter().map(|a| a["data_source"].as_str()).collect();
    sources.sort_unstable();
    assert_eq!(sources, vec!["engineer", "payroll"]);
    for (row, source) in [("hr-engineer", "engineer"), ("hr-payroll", "payroll")] {
        let run = row_run("2026-11-20", row);
        let rows = chain.batch_rows(Some(run.as_str())).await;
        let history: Vec<(u32, String)> =
            rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
        assert_eq!(
            history,
            h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")]),
            "{row}"
        );
        let job_id = JobId::derive("batch", &run, 1);
        assert!(
            rows.iter()
                .all(|r| r.dataproc_job_id.as_deref() == Some(job_id.as_str()))
        );
        assert!(rows.last().expect("row").detail.contains("COMPLETED"));
        let args = started
            .iter()
            .find(|a| a["data_source"] == source)
            .expect("start of the row");
        assert_eq!(args["business_unit"], "hr");
        assert_eq!(args["output_dataset"], "cdf_output");
        assert_eq!(
            args["run"],
            run.as_str(),
            "placeholders are rendered per run"
        );
        assert_eq!(args["conveyor.job_id"], job_id.as_str());
        assert_eq!(args["conveyor.attempt"], "1");
    }
    // The same start again (a redelivery): every row's run is found, none started again.
    let (status, _) = chain.start_by_hand("cdf_ingest", "2026-11-20").await;
    assert_eq!(status, StatusCode::OK);
    chain.settle().await;
    assert_eq!(starts(&fake).len(), 2);
    chain.stop().await;
}

#[tokio::test]
async fn a_failed_data_fusion_run_is_restarted_as_a_new_attempt_and_completes() {
    let fake = Fake::start().await;
    fake.script(&[
        &["STARTING", "RUNNING", "FAILED"],
        &["STARTING", "RUNNING", "FAILED"],
        &["RUNNING", "RUNNING", "COMPLETED"],
    ]);
    let chain = Chain::start(&fusion("1m", 3), fake.clone()).await;
    let (status, reply) = chain.start_by_hand("cdf_ingest", "k").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle().await;

    for row in ["hr-engineer", "hr-payroll"] {
        let run = row_run("k", row);
        let rows = chain.batch_rows(Some(run.as_str())).await;
        let statuses: Vec<(u32, String)> =
            rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
        assert_eq!(
            statuses.last(),
            Some(&(2, "SUCCEEDED".to_owned())),
            "{row}: {statuses:?}"
        );
        assert!(statuses.contains(&(1, "FAILED".to_owned())), "{row}");
        let failed = rows.iter().find(|r| r.status == "FAILED").expect("failed");
        assert!(
            failed
                .error
                .as_deref()
                .is_some_and(|e| e.contains("ended FAILED")),
            "{:?}",
            failed.error
        );
    }
    let started = starts(&fake);
    assert_eq!(started.len(), 4, "two rows, two attempts each");
    let second: Vec<&BTreeMap<String, String>> = started
        .iter()
        .filter(|a| a["conveyor.attempt"] == "2")
        .collect();
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|a| a["conveyor.job_id"].ends_with("-a2")));
    chain.stop().await;
}

#[tokio::test]
async fn a_data_fusion_run_that_keeps_failing_ends_failed_after_max_attempts() {
    let fake = Fake::start().await;
    fake.script(&[&["RUNNING", "FAILED"]]);
    let chain = Chain::start(&fusion("1m", 2), fake.clone()).await;
    let (status, reply) = chain.start_by_hand("cdf_ingest", "k").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle().await;

    for row in ["hr-engineer", "hr-payroll"] {
        let rows = chain.batch_rows(Some(row_run("k", row).as_str())).await;
        let statuses: Vec<(u32, String)> =
            rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
        assert_eq!(
            statuses,
            h(&[
                (1, "SUBMITTED"),
                (1, "RUNNING"),
                (1, "FAILED"),
                (2, "SUBMITTED"),
                (2, "RUNNING"),
                (2, "FAILED"),
            ]),
            "{row}"
        );
        assert!(!rows.last().expect("row").detail.contains("retry_at"));
    }
    assert_eq!(starts(&fake).len(), 4);
    chain.stop().await;
}

#[tokio::test]
async fn a_data_fusion_run_still_running_at_its_timeout_is_stopped_and_never_counted_a_success() {
    let fake = Fake::start().await;
    fake.script(&[&["STARTING", "RUNNING"]]);
    let chain = Chain::start(&fusion("1s", 3), fake.clone()).await;
    let (status, reply) = chain.start_by_hand("cdf_ingest", "k").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle().await;

    for row in ["hr-engineer", "hr-payroll"] {
        let rows = chain.batch_rows(Some(row_run("k", row).as_str())).await;
        let statuses: Vec<(u32, String)> =
            rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
        assert_eq!(
            statuses,
            h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "TIMED_OUT")]),
            "{row}"
        );
    }
    let stops = fake.calls("POST", "/stop");
    assert_eq!(stops.len(), 2, "{stops:#?}");
    assert!(
        stops
            .iter()
            .all(|s| s.path.starts_with(&format!("{CDAP_RUNS}/run-")))
    );
    assert_eq!(starts(&fake).len(), 2, "a timeout is not retried");
    chain.stop().await;
}

#[tokio::test]
async fn a_resubmitted_data_fusion_run_is_found_by_its_job_id_argument_and_adopted() {
    let fake = Fake::start().await;
    let run = row_run("k", "hr-engineer");
    let job_id = JobId::derive("batch", &run, 1);
    fake.script(&[&["RUNNING", "RUNNING", "COMPLETED"]]);
    let existing = fake.existing_cdap_run(&[
        ("conveyor.job_id", job_id.as_str()),
        ("business_unit", "hr"),
        ("data_source", "engineer"),
    ]);
    let chain = Chain::start(&fusion("1m", 3), fake.clone()).await;
    let (status, reply) = chain.start_by_hand("cdf_ingest", "k").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle().await;

    let started = starts(&fake);
    assert_eq!(started.len(), 1, "only the payroll row was started");
    assert_eq!(started[0]["data_source"], "payroll");
    let rows = chain.batch_rows(Some(run.as_str())).await;
    let statuses: Vec<(u32, String)> = rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
    assert_eq!(
        statuses,
        h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")])
    );
    assert!(
        !fake
            .calls("GET", &format!("{CDAP_RUNS}/{existing}"))
            .is_empty(),
        "the adopted run is followed"
    );
    chain.stop().await;
}

#[tokio::test]
async fn transient_data_fusion_errors_are_retried_and_never_count_as_failures() {
    let fake = Fake::start().await;
    fake.script(&[&["STARTING", "RUNNING", "RUNNING", "COMPLETED"]])
        .fail("GET", &format!("{CDAP_RUNS}/"), 503, 2)
        .fail("GET", &format!("{CDAP_RUNS}/"), 404, 1)
        .fail("GET", &format!("{CDAP_RUNS}/"), 429, 1);
    let chain = Chain::start(&fusion("1m", 1), fake.clone()).await;
    let (status, _) = chain.start_by_hand("cdf_ingest", "k").await;
    assert_eq!(status, StatusCode::OK);
    chain.settle().await;

    for row in ["hr-engineer", "hr-payroll"] {
        let rows = chain.batch_rows(Some(row_run("k", row).as_str())).await;
        let statuses: Vec<(u32, String)> =
            rows.iter().map(|r| (r.attempt, r.status.clone())).collect();
        assert_eq!(
            statuses,
            h(&[(1, "SUBMITTED"), (1, "RUNNING"), (1, "SUCCEEDED")]),
            "{row}"
        );
    }
    assert_eq!(starts(&fake).len(), 2);
    assert!(
        !chain
            .run_log()
            .await
            .iter()
            .any(|r| r.status == "FAILED" || r.status == "REJECTED")
    );
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
