//! The function binaries as real processes on the Google Cloud adapters, against the official
//! Pub/Sub emulator, fake-gcs-server and bqemulator (started by `scripts/emulators.sh`):
//! upload → GCS notification → push to load → load job → loaded event → submit, poll, log →
//! run-log rows in BigQuery. The batch is a Dataproc Serverless batch on the local REST fake of
//! the engines' APIs (no emulator exists for Dataproc).
//!
//! Without the Pub/Sub emulator these tests skip loudly; under `CI=true` they fail.

use std::time::{Duration, Instant};

use base64::Engine as _;
use conveyor_e2e::fake_engines::Fake;
use conveyor_e2e::{Emulators, Function, PROJECT, ok};
use serde_json::{Value, json};

struct Setup {
    emu: Emulators,
    http: reqwest::Client,
    functions: Vec<Function>,
    fake: Fake,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulators::start(
            &dir.path().join("emu"),
            &["start"],
            "the GCP emulator tests",
        )?;
        let http = reqwest::Client::new();
        emu.topic("conveyor-events").await;
        emu.bucket("landing").await;
        for ds in ["analytics", "conveyor"] {
            emu.dataset(ds).await;
        }
        let config = dir.path().join("conveyor.yaml");
        std::fs::write(
            &config,
            r#"
environment: emulators
run_log: { table: conveyor.run_log }
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales_{date}", format: CSV, skip_leading_rows: 1 }
    batch:
      engine: dataproc_serverless
      project: test
      region: us-central1
      runtime_version: "2.2"
      pyspark: { main_python_file_uri: "gs://code/aggregate.py", args: ["--table={table}"] }
    poll: { interval: 100ms, timeout: 1m }
"#,
        )
        .expect("config");
        let fake = Fake::start().await;
        fake.script(&[&["PENDING", "RUNNING", "SUCCEEDED"]]);
        let mut functions = Vec::new();
        for step in ["load", "submit", "poll", "log"] {
            let log = dir.path().join(format!("{step}.log"));
            let extra = [
                ("CONVEYOR_ADAPTERS", "gcp"),
                ("CONVEYOR_DATAPROC_ENDPOINT", fake.url.as_str()),
            ];
            functions.push(emu.function(step, &config, &extra, &log).await);
        }
        // What a push filter sees: every published event, pulled with its attributes.
        emu.subscription("events-pull", "conveyor-events", json!({}))
            .await;
        let subs = [
            ("to-load", "gcs-notifications", &functions[0].url),
            ("to-submit", "conveyor-events", &functions[1].url),
            ("to-poll", "conveyor-events", &functions[2].url),
            ("to-log", "conveyor-events", &functions[3].url),
        ];
        for (name, topic, url) in subs {
            emu.push_subscription(name, topic, &format!("{url}/")).await;
        }
        Some(Self {
            emu,
            http,
            functions,
            fake,
            _dir: dir,
        })
    }

    fn poll_url(&self) -> String {
        self.functions[2].url.clone()
    }

    async fn upload(&self, name: &str, body: &str) {
        ok(
            self.http
                .post(format!(
                    "{}/upload/storage/v1/b/landing/o?uploadType=media&name={name}",
                    self.emu.gcs
                ))
                .body(body.to_owned())
                .send()
                .await,
            "upload",
        )
        .await;
    }

    async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        self.emu.query(sql).await
    }

    async fn count(&self, table: &str) -> Option<u64> {
        self.emu.count(table).await
    }

    /// Every run-log row, duplicates included, as (event_id, pipeline, step, attempt, status,
    /// rows_loaded, dataproc_job_id, error, tableName, environment).
    async fn run_log(&self) -> Vec<Vec<Value>> {
        self.query(&format!(
            "SELECT event_id, pipeline, step, attempt, status, rows_loaded, dataproc_job_id, error, tableName, environment FROM `{PROJECT}.conveyor.run_log`"
        ))
        .await
    }

    /// Lines of `step`'s function log containing every one of `needles`.
    fn log_lines(&self, step: &str, needles: &[&str]) -> usize {
        std::fs::read_to_string(self._dir.path().join(format!("{step}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    async fn load_jobs(&self) -> Vec<String> {
        let resp = ok(
            self.http
                .get(format!(
                    "{}/bigquery/v2/projects/{PROJECT}/jobs?allUsers=true",
                    self.emu.bq
                ))
                .send()
                .await,
            "list jobs",
        )
        .await;
        resp["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["jobReference"]["jobId"].as_str().map(str::to_owned))
            .filter(|id| id.starts_with("cv-load-"))
            .collect()
    }

    /// Ticks the poll function (Cloud Scheduler's part) until `done` holds.
    async fn until<F, Fut>(&self, what: &str, limit: Duration, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            let _ = self
                .http
                .post(format!("{}/", self.poll_url()))
                .json(&json!({"tick": true}))
                .send()
                .await;
            if done().await {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn has(rows: &[Vec<Value>], step: &str, status: &str) -> bool {
    rows.iter().any(|r| r[2] == step && r[4] == status)
}

/// The run log's idempotency, on the raw table: every transition (`step`, `status`) of the
/// run is one event id however often it was delivered, and a row repeating an event id (the
/// emulator's insertAll keeps duplicates that BigQuery's `insertId` drops; reads de-duplicate)
/// is a copy of that event's row. Returns (events, rows) of the transition.
fn transition(rows: &[Vec<Value>], step: &str, status: &str) -> (usize, usize) {
    let mut by_event: std::collections::BTreeMap<String, Vec<&Vec<Value>>> = Default::default();
    for r in rows.iter().filter(|r| r[2] == step && r[4] == status) {
        by_event
            .entry(r[0].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(r);
    }
    for (event, copies) in &by_event {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "rows of event {event} differ: {copies:?}"
        );
    }
    (by_event.len(), by_event.values().map(Vec::len).sum())
}

const ORDERS: &str =
    "order_id,customer,amount\n1,ada,10.5\n2,bob,3.25\n3,cy,7\n4,di,1\n5,ed,2.5\n6,flo,9\n";

/// The deployed load function reads the pause (`conveyor pause`, written to BigQuery's run
/// log): a paused pipeline's upload is recorded PAUSED and not loaded; `conveyor resume
/// --load-remote` announces it to the load function again and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipelines_upload_is_held_by_the_load_function_until_resume_announces_it() {
    let Some(s) = Setup::start().await else {
        return;
    };
    let cwd = s._dir.path();
    let endpoint = format!("{}/bigquery/v2", s.emu.bq);
    let env = [
        ("CONVEYOR_PROJECT", conveyor_e2e::PROJECT),
        ("CONVEYOR_BIGQUERY_ENDPOINT", endpoint.as_str()),
        ("CONVEYOR_ANONYMOUS", "true"),
        ("CONVEYOR_BIGQUERY_EMULATOR", "true"),
    ];
    let out = super::operate::conveyor(cwd, &["pause", "sales", "--reason", "late"], &env).await;
    assert!(out.status.success(), "{}", super::operate::text(&out));

    s.upload("sales/2026-11-21/orders.csv", ORDERS).await;
    s.until(
        "the paused arrival's row",
        Duration::from_secs(60),
        || async { has(&s.run_log().await, "load", "PAUSED") },
    )
    .await;
    assert!(s.load_jobs().await.is_empty(), "a paused pipeline loaded");
    assert_eq!(s.count("analytics.sales_2026_11_21").await, None);

    let load_url = format!("{}/", s.functions[0].url);
    let out =
        super::operate::conveyor(cwd, &["resume", "sales", "--load-remote", &load_url], &env).await;
    let shown = super::operate::text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("arrival gs://landing/sales/2026-11-21/orders.csv"),
        "{shown}"
    );
    s.until(
        "the held run to finish",
        Duration::from_secs(90),
        || async { has(&s.run_log().await, "poll", "SUCCEEDED") },
    )
    .await;
    assert_eq!(s.count("analytics.sales_2026_11_21").await, Some(6));
    assert_eq!(s.load_jobs().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_flows_through_every_function_and_redelivery_and_outages_load_exactly_once() {
    let Some(s) = Setup::start().await else {
        return;
    };

    // 1. Upload → notification → load → loaded → submit → poll → log.
    s.upload("sales/2026-11-20/orders.csv", ORDERS).await;
    s.until("the run to finish", Duration::from_secs(90), || async {
        let log = s.run_log().await;
        has(&log, "poll", "SUCCEEDED")
    })
    .await;
    assert_eq!(s.count("analytics.sales_2026_11_20").await, Some(6));
    let log = s.run_log().await;
    assert!(has(&log, "load", "SUCCEEDED"), "{log:?}");
    assert!(has(&log, "submit", "SUBMITTED"), "{log:?}");
    let load = log.iter().find(|r| r[2] == "load").expect("load row");
    assert_eq!(load[5].as_str(), Some("6"), "rows_loaded: {load:?}");
    assert_eq!(
        load[8].as_str(),
        Some("sales_2026_11_20"),
        "tableName: {load:?}"
    );
    assert_eq!(load[9].as_str(), Some("emulators"), "environment: {load:?}");
    let batch = log
        .iter()
        .find(|r| r[2] == "poll" && r[4] == "SUCCEEDED")
        .expect("batch row");
    assert!(
        batch[6]
            .as_str()
            .is_some_and(|j| j.starts_with("cv-batch-sales-")),
        "dataproc_job_id: {batch:?}"
    );
    assert_eq!(s.load_jobs().await.len(), 1);
    let creates = s
        .fake
        .calls("POST", "/v1/projects/test/locations/us-central1/batches");
    assert_eq!(creates.len(), 1, "one Dataproc batch per run");
    assert_eq!(
        creates[0].body["pysparkBatch"]["args"][0],
        "--table=analytics.sales_2026_11_20"
    );

    // 1b. The published events carry the `ce-*` attributes the push filters of infra/ match
    //     on: the type (reverse-DNS), the id and the extensions, equal to the data's.
    let pulled = ok(
        s.http
            .post(format!(
                "{}/v1/projects/{PROJECT}/subscriptions/events-pull:pull",
                s.emu.pubsub
            ))
            .json(&json!({"maxMessages": 100}))
            .send()
            .await,
        "pull events",
    )
    .await;
    let messages = pulled["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut types = std::collections::BTreeSet::new();
    for m in &messages {
        let a = &m["message"]["attributes"];
        let data = base64::engine::general_purpose::STANDARD
            .decode(m["message"]["data"].as_str().unwrap_or_default())
            .expect("base64 data");
        let event: Value = serde_json::from_slice(&data).expect("a JSON event");
        let ty = a["ce-type"].as_str().unwrap_or_default();
        assert!(ty.starts_with("dev.conveyor."), "{m}");
        assert_eq!(event["type"], ty, "{m}");
        assert_eq!(a["ce-specversion"], "1.0", "{m}");
        assert_eq!(a["ce-conveyorrun"], event["run_id"], "{m}");
        assert_eq!(a["ce-conveyorpipeline"], "sales", "{m}");
        assert!(a["ce-id"].as_str().is_some_and(|id| !id.is_empty()), "{m}");
        // The filter of the consuming function matches it (subscriptions.json is what
        // Terraform's filters are built from).
        let consumer = conveyor_core::event::StepName::ALL
            .into_iter()
            .find(|step| {
                *step != conveyor_core::event::StepName::Log
                    && conveyor_core::steps::subscriptions(*step)
                        .iter()
                        .any(|t| t.as_str() == ty)
            });
        if ty != "dev.conveyor.batch.running" && ty != "dev.conveyor.run.finished" {
            assert!(consumer.is_some(), "no function consumes {ty}");
        }
        types.insert(ty.to_owned());
    }
    for expected in [
        "dev.conveyor.table.loaded",
        "dev.conveyor.batch.submitted",
        "dev.conveyor.batch.finished",
    ] {
        assert!(types.contains(expected), "{expected} published: {types:?}");
    }

    // 2. The same notification again: no second load job, no duplicate rows.
    let meta = ok(
        s.http
            .get(format!(
                "{}/storage/v1/b/landing/o/sales%2F2026-11-20%2Forders.csv",
                s.emu.gcs
            ))
            .send()
            .await,
        "meta",
    )
    .await;
    let generation = meta["generation"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| meta["generation"].to_string());
    let data = base64::engine::general_purpose::STANDARD.encode(meta.to_string());
    // Pub/Sub's pushes to the load function (the emulator pushes as `Java/...`), counted
    // from its request log: a delivery counter.
    let deliveries = |s: &Setup| s.log_lines("load", &["Java/", "request finished"]);
    let delivered_before = deliveries(&s);
    assert!(
        delivered_before >= 1,
        "the load log counts Pub/Sub's pushes: {}",
        std::fs::read_to_string(s._dir.path().join("load.log")).unwrap_or_default()
    );
    ok(
        s.http
            .post(format!("{}/v1/projects/{PROJECT}/topics/gcs-notifications:publish", s.emu.pubsub))
            .json(&json!({"messages": [{"data": data, "attributes": {
                "eventType": "OBJECT_FINALIZE", "bucketId": "landing", "objectId": "sales/2026-11-20/orders.csv",
                "objectGeneration": generation, "payloadFormat": "JSON_API_V1"}}]}))
            .send()
            .await,
        "republish",
    )
    .await;
    // Evidence that the redelivery reached the load function: one more push answered.
    s.until(
        "the load function to handle the redelivered notification",
        Duration::from_secs(60),
        || async { deliveries(&s) > delivered_before },
    )
    .await;
    assert_eq!(
        s.load_jobs().await.len(),
        1,
        "a redelivered notification created a second load job"
    );
    assert_eq!(s.count("analytics.sales_2026_11_20").await, Some(6));
    let log = s.run_log().await;
    let (events, rows) = transition(&log, "load", "SUCCEEDED");
    assert_eq!(
        events, 1,
        "one load transition however often delivered ({rows} rows): {log:?}"
    );

    // 2b. A direct call naming a generation that is not the live one is acknowledged as
    //     superseded and loads nothing (a caller's generation is checked against the store).
    let superseded = s
        .http
        .post(format!("{}/", s.functions[0].url))
        .json(&json!({"bucket": "landing", "name": "sales/2026-11-20/orders.csv", "generation": "999"}))
        .send()
        .await
        .expect("direct call");
    assert_eq!(superseded.status().as_u16(), 200);
    let reply: Value = superseded.json().await.expect("json");
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|t| t.contains("superseded")),
        "{reply}"
    );
    assert_eq!(s.load_jobs().await.len(), 1);

    // 3. BigQuery down: the load function answers 5xx and Pub/Sub redelivers; once BigQuery
    //    is back the file is loaded exactly once.
    s.emu.script("stop-bq");
    // The log function's contract: 503 while its run log is unreachable (Pub/Sub retries),
    // 400 for a body that is no event (acknowledged as rejected when it came through Pub/Sub).
    let event = &messages.first().expect("a published event")["message"];
    let event_body = base64::engine::general_purpose::STANDARD
        .decode(event["data"].as_str().unwrap_or_default())
        .expect("base64");
    let to_log = |body: Vec<u8>| {
        s.http
            .post(format!("{}/", s.functions[3].url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let down = to_log(event_body.clone()).await.expect("post to log");
    assert_eq!(down.status().as_u16(), 503, "log during the outage");
    let bad = to_log(br#"{"tick": true}"#.to_vec())
        .await
        .expect("post to log");
    assert_eq!(bad.status().as_u16(), 400, "log given no event");
    let direct = s
        .http
        .post(format!("{}/", s.functions[0].url))
        .json(&json!({"bucket": "landing", "name": "sales/2026-11-20/orders.csv", "generation": generation}))
        .send()
        .await
        .expect("direct call");
    assert_eq!(
        direct.status().as_u16(),
        503,
        "the load function must ask for redelivery while BigQuery is down"
    );
    let refusals = |s: &Setup| s.log_lines("load", &["asking for redelivery"]);
    let refused_before = refusals(&s);
    s.upload("sales/2026-11-21/orders.csv", ORDERS).await;
    // Evidence that Pub/Sub redelivered into the outage: the load function asked for a
    // redelivery at least twice for the upload (its first delivery and a redelivery).
    let deadline = Instant::now() + Duration::from_secs(60);
    while refusals(&s) < refused_before + 2 {
        assert!(
            Instant::now() < deadline,
            "no redelivery reached the load function during the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.emu.script("start-bq");
    s.until(
        "the second file to load",
        Duration::from_secs(90),
        || async { s.count("analytics.sales_2026_11_21").await == Some(6) },
    )
    .await;
    // The file's run went on to its batch: its notification was acknowledged, so no
    // redelivery is outstanding that could load it again.
    s.until(
        "the second file's run to finish",
        Duration::from_secs(90),
        || async { transition(&s.run_log().await, "poll", "SUCCEEDED").0 >= 2 },
    )
    .await;
    assert_eq!(
        s.count("analytics.sales_2026_11_21").await,
        Some(6),
        "loaded more than once"
    );
    let up = to_log(event_body).await.expect("post to log");
    assert_eq!(up.status().as_u16(), 200, "log once BigQuery is back");
    // Two files, two load transitions: neither the redelivered notification of the first
    // nor the redeliveries during the outage added one.
    let log = s.run_log().await;
    let (events, rows) = transition(&log, "load", "SUCCEEDED");
    assert_eq!(
        events, 2,
        "one load transition per file ({rows} rows): {log:?}"
    );
    let jobs = s.load_jobs().await;
    assert_eq!(jobs.len(), 2, "one load job per file: {jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcs_store_streams_reads_writes_lists_and_describes_objects_on_fake_gcs_server() {
    use conveyor_core::names::{BucketName, ObjectName};
    use conveyor_core::ports::ObjectStore;
    use conveyor_gcp::{GcpAuth, GcsStore};
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-gcs"],
        "the GCP emulator tests",
    ) else {
        return;
    };
    emu.bucket("landing").await;
    let store = GcsStore::new(&emu.wire.gcs, GcpAuth::Anonymous);
    let bucket = BucketName::parse("landing").expect("bucket");

    // Larger than two upload chunks: the resumable session is used chunk by chunk.
    let big: Vec<u8> = (0..(20 * 1024 * 1024 + 123))
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let name = ObjectName::parse("raw/big file+1.bin").expect("name");
    let meta = store
        .put(&bucket, &name, Box::pin(std::io::Cursor::new(big.clone())))
        .await
        .expect("put big");
    assert_eq!(meta.object.size, Some(big.len() as u64));
    assert!(!meta.object.generation.is_empty());
    let mut back = Vec::new();
    store
        .open(&bucket, &name)
        .await
        .expect("open")
        .read_to_end(&mut back)
        .await
        .expect("read");
    assert!(
        back == big,
        "the object read back differs from what was written"
    );

    for (n, body) in [
        ("raw/a.csv", "a\n1\n"),
        ("raw/sub/b.csv", "b\n2\n"),
        ("other/c.csv", "c\n"),
    ] {
        store
            .put(
                &bucket,
                &ObjectName::parse(n).expect("name"),
                Box::pin(std::io::Cursor::new(body.as_bytes().to_vec())),
            )
            .await
            .expect("put");
    }
    let empty = ObjectName::parse("raw/empty.txt").expect("name");
    let meta = store
        .put(&bucket, &empty, Box::pin(std::io::Cursor::new(Vec::new())))
        .await
        .expect("put empty");
    assert_eq!(meta.object.size, Some(0));

    let listed: Vec<String> = store
        .list(&bucket, "raw/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.object.name.to_string())
        .collect();
    assert_eq!(
        listed,
        vec![
            "raw/a.csv",
            "raw/big file+1.bin",
            "raw/empty.txt",
            "raw/sub/b.csv"
        ]
    );
    let head = store
        .head(&bucket, &ObjectName::parse("raw/a.csv").expect("name"))
        .await
        .expect("head")
        .expect("exists");
    assert_eq!(head.object.size, Some(4));
    assert!(!head.etag.is_empty());
    assert!(
        store
            .head(&bucket, &ObjectName::parse("raw/missing").expect("name"))
            .await
            .expect("head")
            .is_none()
    );
    assert!(matches!(
        store
            .open(&bucket, &ObjectName::parse("raw/missing").expect("name"))
            .await,
        Err(conveyor_core::ports::PortError::NotFound(_))
    ));

    // Delete: gone once, then there is nothing to delete.
    let doomed = ObjectName::parse("other/c.csv").expect("name");
    assert!(store.delete(&bucket, &doomed, None).await.expect("delete"));
    assert!(store.head(&bucket, &doomed).await.expect("head").is_none());
    assert!(
        !store
            .delete(&bucket, &doomed, None)
            .await
            .expect("delete again")
    );

    // Conditional create: the second writer finds the object there and writes nothing.
    let marker = ObjectName::parse("_conveyor/lease").expect("name");
    let first = store
        .create_new(
            &bucket,
            &marker,
            Box::pin(std::io::Cursor::new(b"one".to_vec())),
        )
        .await
        .expect("create");
    assert!(first.is_some());
    let second = store
        .create_new(
            &bucket,
            &marker,
            Box::pin(std::io::Cursor::new(b"two!".to_vec())),
        )
        .await
        .expect("create again");
    assert!(second.is_none());
    assert_eq!(
        store
            .head(&bucket, &marker)
            .await
            .expect("head")
            .expect("exists")
            .object
            .size,
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_loads_in_one_multi_uri_job_and_a_sql_job_writes_its_destination_on_bqemulator() {
    use conveyor_core::config::{BatchSpec, CreateDisposition, SqlJob};
    use conveyor_core::event::ObjectRef;
    use conveyor_core::format::Format;
    use conveyor_core::names::{JobId, PipelineName, RunId, TableRef};
    use conveyor_core::ports::{BatchEngine, BatchRequest, LoadJob, LoadState, Warehouse};
    use conveyor_gcp::SqlEngine;

    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        // fake-gcs-server and bqemulator on one folder (bqemulator reads `gs://` there); no
        // Pub/Sub emulator: nothing here is notified.
        &["start-gcs", "start-bigquery"],
        "the GCP emulator tests",
    ) else {
        return;
    };
    let http = reqwest::Client::new();
    emu.bucket("landing").await;
    for ds in ["staging", "analytics"] {
        emu.dataset(ds).await;
    }
    let parts = [
        ("part-0.csv", "id,v\n1,a\n2,b\n"),
        ("part-1.csv", "id,v\n2,b\n3,c\n"),
        ("part-2.csv", "id,v\n4,d\n"),
    ];
    let mut sources = Vec::new();
    for (name, body) in parts {
        let object = format!("orders/2026-11-20/{name}");
        ok(
            http.post(format!(
                "{}/upload/storage/v1/b/landing/o?uploadType=media&name={object}",
                emu.gcs
            ))
            .body(body)
            .send()
            .await,
            "upload",
        )
        .await;
        sources.push(ObjectRef {
            bucket: "landing".parse().expect("bucket"),
            name: object.parse().expect("name"),
            generation: "1".into(),
            size: None,
        });
    }
    let bq = emu.bigquery();
    let run = RunId::derive(&PipelineName::parse("gebi").expect("name"), &["folder"]);
    let staging = TableRef::parse("staging.orders_2026_11_20").expect("table");
    let job = LoadJob::new(
        JobId::derive("load", &run, 1),
        sources,
        staging.clone(),
        Format::Csv,
    )
    .with_header_row();
    let first = bq.load(&job, Duration::from_secs(30)).await.expect("load");
    assert!(matches!(first.state, LoadState::Done { .. }), "{first:?}");
    assert!(!first.adopted);
    assert_eq!(
        bq.row_count(&staging).await.expect("count"),
        5,
        "three files, one job"
    );
    let again = bq.load(&job, Duration::from_secs(30)).await.expect("load");
    assert!(again.adopted, "the same job id is adopted");
    assert_eq!(
        bq.row_count(&staging).await.expect("count"),
        5,
        "not loaded twice"
    );

    // bqemulator ignores a query job's `destinationTable` (it writes an anonymous table), so
    // the job here is a script that names its table; the destination form's request is
    // checked against the REST fake (shared/gcp/tests/bigquery_rest.rs).
    let engine = SqlEngine::new(bq.clone());
    let spec = BatchSpec::Sql(SqlJob {
        query: "CREATE OR REPLACE TABLE analytics.orders_{date} AS \
                SELECT DISTINCT id, v FROM staging.orders_{date}"
            .into(),
        destination: None,
        write_disposition: None,
        create_disposition: CreateDisposition::CreateIfNeeded,
    });
    let req = BatchRequest {
        job_id: JobId::derive("dedupe", &run, 1),
        run_id: run.clone(),
        attempt: 1,
        spec: spec.clone(),
        vars: std::collections::BTreeMap::from([("date".into(), "2026_11_20".into())]),
        job: "dedupe".into(),
        row: std::collections::BTreeMap::new(),
    };
    let submitted = engine.submit(&req).await.expect("submit");
    assert!(!submitted.adopted);
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let s = engine.state(&spec, &req.job_id).await.expect("state");
        if s.terminal {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the query job did not finish: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state.state, "DONE", "{state:?}");
    let dest = TableRef::parse("analytics.orders_2026_11_20").expect("table");
    assert_eq!(bq.row_count(&dest).await.expect("count"), 4);
    assert!(engine.submit(&req).await.expect("resubmit").adopted);
    assert_eq!(bq.row_count(&dest).await.expect("count"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_latest_status_view_sql_says_failed_when_a_later_job_failed_after_a_retry_on_bqemulator()
 {
    use conveyor_core::names::TableRef;
    use conveyor_core::ports::RunLog;

    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-bigquery"],
        "the BigQuery view test",
    ) else {
        return;
    };
    emu.dataset("conveyor").await;
    let http = reqwest::Client::new();
    // The rows as the log function writes them (the adapter creates the table).
    let bq = emu.bigquery();
    let table = TableRef::parse("conveyor.run_log").expect("table");
    let cases = conveyor_e2e::runs::run_cases();
    for case in &cases {
        for r in &case.rows {
            bq.record(&table, r).await.expect("record");
        }
    }
    // The view's query as Terraform deploys it (templatefile fills in the table).
    let sql = std::fs::read_to_string(
        conveyor_e2e::repo().join("infra/modules/conveyor/run_latest_status.sql"),
    )
    .expect("view sql")
    .replace("${run_log}", &format!("{PROJECT}.conveyor.run_log"));
    let resp = ok(
        http.post(format!("{}/bigquery/v2/projects/{PROJECT}/queries", emu.bq))
            .json(&json!({
                "query": format!("SELECT run_id, event_id, status, run_status FROM ({sql})"),
                "useLegacySql": false,
            }))
            .send()
            .await,
        "query the view",
    )
    .await;
    let rows: Vec<Vec<String>> = resp["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("the view's query answered no rows: {resp}"))
        .iter()
        .map(|r| {
            r["f"]
                .as_array()
                .expect("fields")
                .iter()
                .map(|c| c["v"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), cases.len(), "one row per run: {rows:?}");
    for case in &cases {
        let row = rows
            .iter()
            .find(|r| r[0] == case.run_id())
            .unwrap_or_else(|| panic!("{}: no row in the view", case.name));
        let state = case.state();
        assert_eq!(state.status, case.expected, "{}: RunState", case.name);
        assert_eq!(
            row[3], case.expected,
            "{}: the view's run_status",
            case.name
        );
        assert_eq!(
            row[1], state.event_id,
            "{}: the view shows the row that decides the state",
            case.name
        );
    }
}
