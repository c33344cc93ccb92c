//! End-to-end tests of the embedded chain: real files in watched bucket directories, the
//! real SQLite warehouse, real `sh` processes as batches, and the function routers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor_core::event::StepName;
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::Chain;
use tower::ServiceExt;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/landing/sales/2026-11-20")
        .join(name)
}

/// The (attempt, status) of `pipeline`'s rows of `step` about a job or the load (not the run
/// ends, which `run_ends` reads).
fn statuses(rows: &[RunLogRow], pipeline: &str, step: &str) -> Vec<(u32, String)> {
    rows.iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline)
                && r.step == step
                && !(r.step == "submit" && r.job.is_none())
        })
        .map(|r| (r.attempt, r.status.clone()))
        .collect()
}

/// The statuses of `pipeline`'s run ends (`dev.conveyor.run.finished`: submit rows without a job).
fn run_ends(rows: &[RunLogRow], pipeline: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline) && r.step == "submit" && r.job.is_none()
        })
        .map(|r| r.status.clone())
        .collect()
}

const FOUR_FORMATS: &str = r#"
pipelines:
  - name: avro
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.avro" } }
    load: { table: "analytics.avro_{date}", format: AVRO }
    batch: { engine: local, command: "true" }
    poll: { interval: 50ms }
  - name: parquet
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.parquet" } }
    load: { table: "analytics.parquet_{date}", format: PARQUET }
  - name: csv
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.csv_{date}", format: CSV, skip_leading_rows: 1 }
  - name: ndjson
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.ndjson" } }
    load: { table: "analytics.ndjson_{date}", format: NDJSON }
"#;

/// Rows in an example file, counted independently of the loader where the format allows.
fn input_rows(file: &str) -> u64 {
    let text = || std::fs::read_to_string(example(file)).expect("read example");
    match file.rsplit('.').next() {
        Some("csv") => text()
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count() as u64,
        Some("ndjson") => text().lines().filter(|l| !l.trim().is_empty()).count() as u64,
        Some("avro") => 5,
        _ => 4,
    }
}

#[tokio::test]
async fn dropped_files_of_every_format_become_table_rows_and_run_log_rows() {
    let chain = Chain::start(FOUR_FORMATS).await;
    for f in [
        "orders.avro",
        "orders.parquet",
        "orders.csv",
        "orders.ndjson",
    ] {
        chain.drop_file("landing", &format!("sales/2026-11-20/{f}"), &example(f));
    }
    chain.settle(Duration::from_secs(30)).await;
    for (format, file) in [
        ("avro", "orders.avro"),
        ("parquet", "orders.parquet"),
        ("csv", "orders.csv"),
        ("ndjson", "orders.ndjson"),
    ] {
        assert_eq!(
            chain.rows(&format!("analytics.{format}_2026_11_20")).await,
            input_rows(file),
            "{format}"
        );
    }
    let log = chain.run_log().await;
    for p in ["avro", "parquet", "csv", "ndjson"] {
        assert_eq!(
            statuses(&log, p, "load"),
            vec![(1, "SUCCEEDED".to_owned())],
            "{p}"
        );
    }
    assert_eq!(
        statuses(&log, "avro", "submit"),
        vec![(1, "SUBMITTED".to_owned())]
    );
    let poll = statuses(&log, "avro", "poll");
    assert_eq!(poll.last(), Some(&(1, "SUCCEEDED".to_owned())), "{poll:?}");
    assert_eq!(
        run_ends(&log, "avro"),
        ["SUCCEEDED"],
        "the batch ends the run"
    );
    assert_eq!(
        run_ends(&log, "csv"),
        ["SUCCEEDED"],
        "without jobs the load ends the run"
    );
    let load_row = log
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("csv") && r.step == "load")
        .expect("csv load row");
    assert_eq!(load_row.db_name.as_deref(), Some("analytics"));
    assert_eq!(load_row.table_name.as_deref(), Some("csv_2026_11_20"));
    assert_eq!(load_row.rows_loaded, Some(6));
    assert_eq!(
        load_row.source_object.as_deref(),
        Some("gs://landing/sales/2026-11-20/orders.csv")
    );
    let batch_row = log
        .iter()
        .find(|r| {
            r.pipeline.as_deref() == Some("avro") && r.status == "SUCCEEDED" && r.step == "poll"
        })
        .expect("batch row");
    assert!(
        batch_row
            .dataproc_job_id
            .as_deref()
            .is_some_and(|j| j.starts_with("cv-batch-"))
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_failing_batch_is_retried_up_to_max_attempts_and_ends_failed_with_its_error() {
    let yaml = r#"
pipelines:
  - name: flaky
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load: { table: "ds.flaky", format: CSV }
    batch: { engine: local, command: "echo attempt {attempt} >> $MARKS; echo 'spark died' >&2; exit 3" }
    poll: { max_attempts: 3, interval: 50ms, backoff: { initial: 100ms, multiplier: 2, max: 1s } }
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let marks = tmp.path().join("marks");
    let chain = Chain::start(&yaml.replace("$MARKS", &marks.display().to_string())).await;
    chain.write_file("landing", "in/a.csv", "x\n1\n2\n");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let submits = statuses(&log, "flaky", "submit");
    assert_eq!(
        submits,
        vec![
            (1, "SUBMITTED".into()),
            (2, "SUBMITTED".into()),
            (3, "SUBMITTED".into())
        ]
    );
    let failures: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some("flaky") && r.status == "FAILED" && r.job.is_some()
        })
        .collect();
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert_eq!(
        run_ends(&log, "flaky"),
        ["FAILED"],
        "the job's final failure ends the run"
    );
    let last = failures.last().expect("final failure");
    assert_eq!(last.attempt, 3);
    assert!(
        last.error
            .as_deref()
            .is_some_and(|e| e.contains("exit status 3") && e.contains("spark died")),
        "{:?}",
        last.error
    );
    assert!(
        !last.detail.contains("retry_at"),
        "the final failure schedules no retry"
    );
    assert!(!log.iter().any(|r| r.pipeline.as_deref() == Some("flaky")
        && r.step == "poll"
        && r.status == "SUCCEEDED"));
    let ran = std::fs::read_to_string(&marks).expect("marks");
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        vec!["attempt 1", "attempt 2", "attempt 3"]
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_batch_that_outlives_its_timeout_is_cancelled_and_ends_timed_out() {
    let yaml = r#"
pipelines:
  - name: slow
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load: { table: "ds.slow", format: CSV }
    batch: { engine: local, command: "sleep 30; echo finished > $MARK" }
    poll: { timeout: 1s, max_attempts: 2, interval: 50ms }
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mark = tmp.path().join("finished");
    let chain = Chain::start(&yaml.replace("$MARK", &mark.display().to_string())).await;
    chain.write_file("landing", "in/a.csv", "x\n1\n");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let poll = statuses(&log, "slow", "poll");
    assert_eq!(poll.last(), Some(&(1, "TIMED_OUT".to_owned())), "{poll:?}");
    assert!(!poll.iter().any(|(_, s)| s == "SUCCEEDED"));
    assert_eq!(
        statuses(&log, "slow", "submit").len(),
        1,
        "a timeout is final, not retried"
    );
    let row = log
        .iter()
        .find(|r| r.status == "TIMED_OUT")
        .expect("timed out row");
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        row.error
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids: Vec<String> = std::fs::read_dir(chain.dir.path().join("state/batches"))
        .expect("batches")
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("pid")).ok())
        .collect();
    assert_eq!(pids.len(), 1);
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", pids[0].trim())).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the cancelled batch is still running: {stat}"
    );
    assert!(!mark.exists());
    chain.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_loads_once_and_starts_the_batch_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let runs = tmp.path().join("runs");
    let yaml = format!(
        r#"
pipelines:
  - name: once
    trigger: {{ object: {{ bucket: landing, pattern: "in/{{day}}/*.csv" }} }}
    load: {{ table: "ds.once_{{day}}", format: CSV }}
    batch: {{ engine: local, command: "echo {{run_id}} >> {}" }}
    poll: {{ interval: 50ms }}
"#,
        runs.display()
    );
    let chain = Chain::start(&yaml).await;
    chain.write_file("landing", "in/d1/a.csv", "x,y\n1,a\n2,b\n3,c\n");
    chain.settle(Duration::from_secs(30)).await;
    let object = chain
        .ctx
        .ports
        .store
        .head(
            &"landing".parse().expect("bucket"),
            &"in/d1/a.csv".parse().expect("name"),
        )
        .await
        .expect("head")
        .expect("object");
    // The same GCS notification again, twice, through the load function's HTTP endpoint.
    let body = serde_json::json!({"bucket": "landing", "name": "in/d1/a.csv", "generation": object.object.generation}).to_string();
    for _ in 0..2 {
        let (status, reply) = chain.post(StepName::Load, &body, "application/json").await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    // A hand-written curl without a generation means the object as it is now: the same run.
    let (status, reply) = chain
        .post(
            StepName::Load,
            r#"{"bucket":"landing","name":"in/d1/a.csv"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = chain
        .post(
            StepName::Load,
            r#"{"bucket":"landing","name":"in/d1/missing.csv"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.once_d1").await, 3);
    assert_eq!(chain.batch_dirs(), 1);
    let started = std::fs::read_to_string(&runs).expect("runs file");
    assert_eq!(started.lines().count(), 1, "{started}");
    let log = chain.run_log().await;
    assert_eq!(
        statuses(&log, "once", "load").len(),
        1,
        "one run-log row per transition"
    );
    assert_eq!(statuses(&log, "once", "submit").len(), 1);
    chain.stop().await;
}

#[tokio::test]
async fn a_new_generation_of_the_same_object_is_a_new_run() {
    let chain = Chain::start(FOUR_FORMATS).await;
    chain.write_file("landing", "sales/d/a.ndjson", "{\"a\":1}\n");
    chain.settle(Duration::from_secs(30)).await;
    std::thread::sleep(Duration::from_millis(20));
    chain.write_file("landing", "sales/d/a.ndjson", "{\"a\":1}\n{\"a\":2}\n");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        chain.rows("analytics.ndjson_d").await,
        3,
        "append of 1 then 2 rows"
    );
    chain.stop().await;
}

#[tokio::test]
async fn bad_rows_fail_the_load_with_their_row_numbers_and_load_nothing() {
    let yaml = r#"
pipelines:
  - name: strict
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load:
      table: "ds.strict"
      format: CSV
      schema:
        - { name: id, type: INT64, mode: REQUIRED }
        - { name: amount, type: FLOAT64 }
    batch: { engine: local, command: "true" }
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file(
        "landing",
        "in/bad.csv",
        "id,amount\n1,2.5\n2,abc\n,3\n4,1\n",
    );
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.strict").await, 0, "nothing half-loaded");
    let log = chain.run_log().await;
    let failed = log
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("strict") && r.step == "load")
        .expect("load row");
    assert_eq!(failed.status, "FAILED");
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("row 3") || error.contains("2 bad row"),
        "{error}"
    );
    assert!(
        statuses(&log, "strict", "submit").is_empty(),
        "no batch after a failed load"
    );
    assert_eq!(chain.batch_dirs(), 0);
    chain.stop().await;
}

#[tokio::test]
async fn a_malformed_direct_call_gets_400_with_the_reason_and_a_run_log_record() {
    let chain = Chain::start(FOUR_FORMATS).await;
    let (status, reply) = chain
        .post(StepName::Load, "{this is not json", "application/json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not JSON")),
        "{reply}"
    );
    let (status, reply) = chain
        .post(
            StepName::Load,
            r#"{"bucket":"landing","name":"../../etc/passwd"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["reason"]
            .as_str()
            .is_some_and(|r| r.contains("object name")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(10)).await;
    let log = chain.run_log().await;
    let rejected: Vec<&RunLogRow> = log.iter().filter(|r| r.status == "REJECTED").collect();
    assert_eq!(rejected.len(), 2, "{log:#?}");
    assert!(
        rejected
            .iter()
            .all(|r| r.step == "load" && r.error.is_some())
    );
    // The service keeps serving.
    let (status, _) = chain
        .post(
            StepName::Submit,
            r#"{"pipeline":"avro"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    chain.stop().await;
}

#[tokio::test]
async fn a_permanent_error_inside_a_pubsub_push_is_acknowledged_and_recorded() {
    let chain = Chain::start(FOUR_FORMATS).await;
    let data = "eyJwaXBlbGluZSI6Im5vX3N1Y2hfcGlwZWxpbmUifQ=="; // {"pipeline":"no_such_pipeline"}
    let envelope = format!(
        r#"{{"subscription":"projects\/test\/subscriptions\/s","message":{{"data":"{data}","messageId":"7","message_id":"7"}}}}"#
    );
    let (status, reply) = chain
        .post(StepName::Submit, &envelope, "application/json")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "acknowledged so Pub/Sub does not redeliver forever"
    );
    assert_eq!(reply["status"], "rejected");
    assert!(
        reply["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown pipeline")),
        "{reply}"
    );
    let (status, _) = chain
        .post(
            StepName::Submit,
            r#"{"subscription":"s","message":{"data":"%%%","messageId":"8"}}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    chain.settle(Duration::from_secs(10)).await;
    let log = chain.run_log().await;
    assert_eq!(
        log.iter()
            .filter(|r| r.status == "REJECTED" && r.step == "submit")
            .count(),
        2,
        "{log:#?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn every_function_accepts_a_binary_mode_cloudevent_and_answers_healthz() {
    let chain = Chain::start(FOUR_FORMATS).await;
    chain.write_file("landing", "sales/d2/x.csv", "a\n1\n");
    chain.settle(Duration::from_secs(30)).await;
    let router = conveyor_core::http::router(StepName::Load, chain.ctx.clone());
    let req = Request::post("/")
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "abc")
        .header(
            "ce-source",
            "//storage.googleapis.com/projects/_/buckets/landing",
        )
        .header("ce-type", "google.cloud.storage.object.v1.finalized")
        .body(Body::from(
            r#"{"bucket":"landing","name":"sales/d2/x.csv","generation":"1"}"#,
        ))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let health = router
        .oneshot(Request::get("/healthz").body(Body::empty()).expect("req"))
        .await
        .expect("resp");
    assert_eq!(health.status(), StatusCode::OK);
    chain.stop().await;
}

#[tokio::test]
async fn the_same_router_answers_a_recorded_lambda_function_url_event() {
    let chain = Chain::start(FOUR_FORMATS).await;
    let event = include_str!("fixtures/lambda-function-url.json");
    let req = lambda_http::request::from_str(event).expect("a Function URL event");
    let req = req.map(|body| Body::from(body.to_vec()));
    let resp = conveyor_core::http::router(StepName::Submit, chain.ctx.clone())
        .oneshot(req)
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let reply: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("submitted cv-batch-avro-")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.batch_dirs(), 1);
    chain.stop().await;
}

/// Serves `body` at `/exports/orders.csv` on a local port, with an ETag.
async fn serve_csv(body: Vec<u8>) -> String {
    let app = axum::Router::new().route(
        "/exports/orders.csv",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("etag", "\"orders-v1\"")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/exports/orders.csv")
}

#[tokio::test]
async fn a_url_is_staged_into_the_local_bucket_once_and_the_chain_loads_it() {
    let url = serve_csv(std::fs::read(example("orders.csv")).expect("example")).await;
    let yaml = format!(
        r#"
pipelines:
  - name: web_sales
    trigger:
      object: {{ bucket: landing, pattern: "sales/{{date}}/*.csv" }}
      manual: true
    stage:
      source: {{ https: {{ urls: ["{url}"] }} }}
      bucket: landing
      prefix: "sales/{{date}}/"
    load: {{ table: "analytics.web_{{date}}", format: CSV, skip_leading_rows: 1 }}
"#
    );
    let chain = Chain::start(&yaml).await;
    let body = r#"{"pipeline": "web_sales"}"#;
    let (status, reply) = chain.post(StepName::Stage, body, "application/json").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("staged 1 object(s)")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        chain
            .rows(&format!("analytics.web_{}", today.replace('-', "_")))
            .await,
        input_rows("orders.csv")
    );
    let log = chain.run_log().await;
    assert_eq!(
        statuses(&log, "web_sales", "stage"),
        vec![(1, "SUCCEEDED".to_owned())]
    );
    assert_eq!(
        statuses(&log, "web_sales", "load"),
        vec![(1, "SUCCEEDED".to_owned())]
    );
    assert!(
        chain
            .bucket("landing")
            .join(format!("sales/{today}/orders.csv"))
            .exists()
    );

    // The same URL, unchanged: nothing is copied again and nothing is loaded twice.
    let (status, reply) = chain.post(StepName::Stage, body, "application/json").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("staged 0 object(s)") && s.contains("1 unchanged")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        statuses(&chain.run_log().await, "web_sales", "load").len(),
        1
    );
    chain.stop().await;
}
