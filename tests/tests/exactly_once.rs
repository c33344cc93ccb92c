//! Exactly once under overwrites, races, replays and hostile input, on the embedded chain
//! (the same step code the functions run): superseded generations, names that are patterns or
//! not data, concurrent duplicate deliveries, two stage runs at once, Cloud Scheduler's retry
//! of a tick, control characters, floods of junk, and the HTTP layer's own refusals; content
//! generations (`touch`, `cp -p`) and bounded refusals (missing objects, forged generations).

use std::time::Duration;

use axum::http::StatusCode;
use conveyor_core::event::StepName;
use conveyor_core::inbound::{Origin, StartRequest};
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::Chain;

fn rows_of<'a>(log: &'a [RunLogRow], pipeline: &str, step: &str) -> Vec<&'a RunLogRow> {
    log.iter()
        .filter(|r| r.pipeline.as_deref() == Some(pipeline) && r.step == step)
        .collect()
}

const SALES: &str = r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "in/**" } }
    load: { table: "ds.sales", format: CSV }
"#;

#[tokio::test]
async fn an_event_for_an_overwritten_generation_is_superseded_and_each_generation_loads_once() {
    let chain = Chain::start(SALES).await;
    chain.write_file("landing", "in/a.csv", "id\n1\n2\n");
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 2);
    let bucket = BucketName::parse("landing").expect("bucket");
    let name = ObjectName::parse("in/a.csv").expect("name");
    let old = chain
        .ctx
        .ports
        .store
        .head(&bucket, &name)
        .await
        .expect("head")
        .expect("exists")
        .object
        .generation;
    // Overwritten: the new generation's arrival loads it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    chain.write_file("landing", "in/a.csv", "id\n10\n20\n30\n");
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("ds.sales").await,
        5,
        "2 rows of the first generation, 3 of the second"
    );
    // The first generation's event, late (a backlog, a replay): not loaded again, and not the
    // new content under the old name either.
    for generation in [old.as_str(), "gen-a", "999"] {
        let body =
            format!(r#"{{"bucket":"landing","name":"in/a.csv","generation":"{generation}"}}"#);
        let (status, reply) = chain.post(StepName::Load, &body, "application/json").await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert!(
            reply["summary"]
                .as_str()
                .is_some_and(|s| s.contains("superseded")),
            "{reply}"
        );
    }
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 5);
    let log = chain.run_log().await;
    assert_eq!(
        rows_of(&log, "sales", "load").len(),
        2,
        "one load per generation"
    );
    // Aggregated like rejections: the first late event of the window is recorded, the others
    // are counted (one row when the next window of that kind begins).
    let superseded = log.iter().filter(|r| r.status == "SUPERSEDED").count();
    assert_eq!(
        superseded, 1,
        "the first late event is recorded, the repeats counted"
    );
    chain.stop().await;
}

#[tokio::test]
async fn check_generation_false_loads_the_named_generation_without_reading_the_live_one() {
    let chain = Chain::start(
        r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "in/**" } }
    load: { table: "ds.sales", format: CSV, check_generation: false }
"#,
    )
    .await;
    chain.write_file("landing", "in/a.csv", "id\n1\n2\n");
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 2);
    // A generation the store never had: with the check it is superseded (the test above);
    // without it, the event is trusted and the object's content loads under its name.
    let body = r#"{"bucket":"landing","name":"in/a.csv","generation":"999"}"#;
    let (status, reply) = chain.post(StepName::Load, body, "application/json").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 4, "{reply}");
    let log = chain.run_log().await;
    assert_eq!(log.iter().filter(|r| r.status == "SUPERSEDED").count(), 0);
    // A request that names no generation is still checked: a missing object is refused.
    let body = r#"{"bucket":"landing","name":"in/missing.csv"}"#;
    let (status, reply) = chain.post(StepName::Load, body, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(
        reply["reason"]
            .as_str()
            .or(reply["error"].as_str())
            .is_some_and(|s| s.contains("does not exist")),
        "{reply}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn names_that_are_patterns_or_not_data_are_not_loaded() {
    let chain = Chain::start(SALES).await;
    for (name, content) in [
        ("in/good.csv", "id\n1\n"),
        ("in/x.csv.tmp", "id\n2\n"),
        ("in/_SUCCESS", ""),
        ("in/_temporary/0/part-0.csv", "id\n3\n"),
    ] {
        chain.write_file("landing", name, content);
    }
    chain.settle(Duration::from_secs(20)).await;
    for name in [
        "in/x.csv.tmp",
        "in/_SUCCESS",
        "in/_temporary/0/part-0.csv",
        "in/.hidden.csv",
    ] {
        let body = format!(r#"{{"bucket":"landing","name":"{name}","generation":"1"}}"#);
        let (status, reply) = chain.post(StepName::Load, &body, "application/json").await;
        assert_eq!(status, StatusCode::OK, "{name}: {reply}");
        assert!(
            reply["summary"]
                .as_str()
                .is_some_and(|s| s.contains("not data")),
            "{name}: {reply}"
        );
    }
    // A name BigQuery would read as a wildcard is refused, with the reason, and recorded.
    let (status, reply) = chain
        .post(
            StepName::Load,
            r#"{"bucket":"landing","name":"in/*.csv"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["reason"]
            .as_str()
            .is_some_and(|r| r.contains("wildcard")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 1, "only good.csv is data");
    let log = chain.run_log().await;
    assert!(
        log.iter().any(|r| r.status == "REJECTED"
            && r.error.as_deref().is_some_and(|e| e.contains("wildcard")))
    );
    chain.stop().await;
}

#[tokio::test]
async fn four_concurrent_identical_deliveries_load_once() {
    let chain = Chain::start(SALES).await;
    chain.write_file("landing", "in/b.csv", "id\n1\n2\n3\n");
    let body = r#"{"bucket":"landing","name":"in/b.csv"}"#;
    let (a, b, c, d) = tokio::join!(
        chain.post(StepName::Load, body, "application/json"),
        chain.post(StepName::Load, body, "application/json"),
        chain.post(StepName::Load, body, "application/json"),
        chain.post(StepName::Load, body, "application/json"),
    );
    for (status, reply) in [a, b, c, d] {
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 3, "loaded once");
    let log = chain.run_log().await;
    let loads = rows_of(&log, "sales", "load");
    assert_eq!(
        loads.len(),
        1,
        "one run-log row for the one load: {loads:#?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn two_stage_runs_at_once_copy_each_object_once() {
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..200 {
        std::fs::write(
            src.path().join(format!("f{i:03}.csv")),
            format!("id\n{i}\n"),
        )
        .expect("write");
    }
    let yaml = format!(
        r#"
pipelines:
  - name: vendor
    trigger: {{ manual: true }}
    stage: {{ source: "{}", bucket: landing, prefix: "vendor/" }}
"#,
        src.path().display()
    );
    let chain = Chain::start(&yaml).await;
    let pipeline = chain
        .ctx
        .config
        .pipeline("vendor")
        .expect("pipeline")
        .clone();
    let start = StartRequest {
        pipeline: Some(pipeline.name.clone()),
        origin: Origin::Manual,
        at: chrono::Utc::now(),
        key: None,
    };
    let run = || async {
        let mut outcome = conveyor_core::steps::Outcome::default();
        conveyor_core::steps::stage_pipeline(
            &chain.ctx,
            &pipeline,
            &start,
            false,
            &mut outcome,
            &mut |_| {},
        )
        .await
    };
    let (first, second) = tokio::join!(run(), run());
    let copied: usize = [&first, &second]
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.copied.len())
        .sum();
    assert_eq!(
        copied, 200,
        "each object copied once: {first:?} / {second:?}"
    );
    let busy = [&first, &second]
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert!(
        busy.iter().all(|e| e.contains("holds its lease")),
        "a second run is told why it stops: {busy:?}"
    );
    // The lease is released: the next run runs (and finds nothing new).
    let third = run().await.expect("third run");
    assert_eq!(third.copied.len(), 0);
    assert_eq!(third.skipped.len(), 200);
    chain.stop().await;
}

#[tokio::test]
async fn a_scheduler_retry_a_minute_later_is_the_same_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marks = tmp.path().join("runs");
    let yaml = r#"
pipelines:
  - name: nightly
    trigger: { schedule: { cron: "0 2 * * *" } }
    poll: { interval: 50ms }
    jobs: [{ name: report, engine: local, command: "echo {run_id} >> MARKS" }]
"#
    .replace("MARKS", &marks.display().to_string());
    let chain = Chain::start(&yaml).await;
    let body = r#"{"pipeline":"nightly","trigger":"schedule"}"#;
    let header = ("x-cloudscheduler-scheduletime", "2026-11-20T02:00:00Z");
    for _ in 0..2 {
        let (status, reply) = chain
            .request(
                StepName::Submit,
                "POST",
                "/",
                body,
                &[("content-type", "application/json"), header],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        // The retry arrives later (a minute later in production).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.settle(Duration::from_secs(20)).await;
    let runs = std::fs::read_to_string(&marks).expect("marks");
    assert_eq!(runs.lines().count(), 1, "{runs}");
    chain.stop().await;
}

#[tokio::test]
async fn a_nul_byte_in_an_events_values_is_refused_and_starts_nothing() {
    let chain = Chain::start(
        r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load: { table: "ds.sales", format: CSV }
    jobs: [{ name: agg, engine: local, command: "echo {table}" }]
"#,
    )
    .await;
    let event = serde_json::json!({
        "type": "dev.conveyor.table.loaded",
        "run_id": "sales-0123456789ab",
        "pipeline": "sales",
        "step": "load",
        "attempt": 1,
        "status": "SUCCEEDED",
        "time": "2026-11-20T00:00:00Z",
        "detail": {"table": "ds.sales", "vars": {"table": "ds.sales\u{0000}; rm -rf /"}},
    });
    let (status, reply) = chain
        .post(StepName::Submit, &event.to_string(), "application/json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(
        reply["reason"]
            .as_str()
            .is_some_and(|r| r.contains("control character")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(10)).await;
    assert_eq!(chain.batch_dirs(), 0, "no job directory, whole or half");
    chain.stop().await;
}

#[tokio::test]
async fn a_thousand_junk_requests_make_a_bounded_number_of_run_log_rows() {
    let chain = Chain::start(SALES).await;
    for i in 0..1000 {
        let (status, _) = chain
            .post(
                StepName::Load,
                &format!("{{\"junk\": {i}, \"x\": \"{}\"}}", "y".repeat(i % 7)),
                "application/json",
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    chain.settle(Duration::from_secs(20)).await;
    let rejected = chain
        .run_log()
        .await
        .iter()
        .filter(|r| r.status == "REJECTED")
        .count();
    assert!(
        (1..=3).contains(&rejected),
        "{rejected} REJECTED rows for 1,000 junk requests"
    );
    chain.stop().await;
}

#[tokio::test]
async fn the_http_layers_refusals_have_the_json_shape() {
    let chain = Chain::start(SALES).await;
    let big = "x".repeat(conveyor_core::http::BODY_LIMIT + 1);
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("x-h{i}"), "v".repeat(400)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (method, path, body, headers, want) in [
        ("GET", "/nope", "", vec![], StatusCode::NOT_FOUND),
        ("DELETE", "/", "", vec![], StatusCode::METHOD_NOT_ALLOWED),
        (
            "POST",
            "/",
            big.as_str(),
            vec![("content-type", "application/json")],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            "/",
            "{}",
            many,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
    ] {
        let (status, reply) = chain
            .request(StepName::Load, method, path, body, &headers)
            .await;
        assert_eq!(status, want, "{method} {path}: {reply}");
        assert_eq!(reply["status"], "rejected", "{method} {path}: {reply}");
        assert!(reply["reason"].is_string(), "{reply}");
    }
    chain.stop().await;
}

#[tokio::test]
async fn a_touched_file_loads_nothing_and_an_overwrite_keeping_its_mtime_loads_once() {
    let chain = Chain::start(SALES).await;
    let path = chain.bucket("landing").join("in/a.csv");
    chain.write_file("landing", "in/a.csv", "id\n1\n2\n");
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("ds.sales").await, 2);
    let old_mtime = std::fs::metadata(&path)
        .expect("stat")
        .modified()
        .expect("mtime");

    // `touch`: a new modification time, the same content.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(std::time::SystemTime::now()).expect("touch");
    drop(f);
    tokio::time::sleep(Duration::from_millis(300)).await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("ds.sales").await,
        2,
        "a touch loaded the file again"
    );

    // `cp -p` (or `rsync -t`, `tar x`): new content of the same size, the old mtime.
    std::fs::write(&path, "id\n3\n4\n").expect("overwrite");
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(old_mtime).expect("keep the mtime");
    drop(f);
    tokio::time::sleep(Duration::from_millis(300)).await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("ds.sales").await,
        4,
        "the overwrite was not loaded (once)"
    );
    let log = chain.run_log().await;
    assert_eq!(
        rows_of(&log, "sales", "load")
            .iter()
            .filter(|r| r.status == "SUCCEEDED")
            .count(),
        2
    );
    chain.stop().await;
}

#[tokio::test]
async fn three_hundred_missing_objects_and_forged_generations_make_a_few_rows() {
    let chain = Chain::start(SALES).await;
    for i in 0..300 {
        let body = format!(r#"{{"bucket":"landing","name":"in/missing-{i}.csv"}}"#);
        let (status, reply) = chain.post(StepName::Load, &body, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    }
    chain.write_file("landing", "in/a.csv", "id\n1\n");
    chain.settle(Duration::from_secs(20)).await;
    // Forged generations of 1 MiB each: superseded, aggregated, stored at most 64 bytes.
    for i in 0..3 {
        let generation = format!("{i}{}", "9".repeat(1 << 20));
        let body =
            format!(r#"{{"bucket":"landing","name":"in/a.csv","generation":"{generation}"}}"#);
        let (status, reply) = chain.post(StepName::Load, &body, "application/json").await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    chain.settle(Duration::from_secs(20)).await;
    let log = chain.run_log().await;
    let rejected = log.iter().filter(|r| r.status == "REJECTED").count();
    assert!(
        (1..=3).contains(&rejected),
        "{rejected} REJECTED rows for 300 missing objects"
    );
    let superseded: Vec<_> = log.iter().filter(|r| r.status == "SUPERSEDED").collect();
    assert_eq!(superseded.len(), 1, "three forged generations");
    let stored = superseded[0].error.as_deref().unwrap_or_default().len()
        + superseded[0].detail.to_string().len();
    assert!(
        stored < 4096,
        "{stored} bytes stored for a forged generation"
    );
    chain.stop().await;
}
