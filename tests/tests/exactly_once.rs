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
    // Overwritten: the new generation's arrival loads it (a new file renamed in place: a new
    // inode and content, whatever the clock says).
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
        let reply = chain.accepted(StepName::Load, &body).await;
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
    let reply = chain.accepted(StepName::Load, body).await;
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
    chain
        .refused(
            StepName::Load,
            r#"{"bucket":"landing","name":"in/*.csv"}"#,
            "wildcard",
        )
        .await;
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
        date: None,
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

/// A start request for `pipeline` as Pub/Sub pushes it, with `message_id`.
fn pushed_start(pipeline: &str, message_id: &str) -> String {
    use base64::Engine as _;
    let data =
        base64::engine::general_purpose::STANDARD.encode(format!(r#"{{"pipeline":"{pipeline}"}}"#));
    format!(
        r#"{{"subscription":"projects/p/subscriptions/submit","message":{{"data":"{data}","messageId":"{message_id}","publishTime":"2026-12-01T00:00:00Z"}}}}"#
    )
}

#[tokio::test]
async fn a_pushed_start_redelivered_is_one_run_and_two_messages_are_two() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marks = tmp.path().join("runs");
    let yaml = r#"
pipelines:
  - name: nightly
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs: [{ name: report, engine: local, command: "echo {run_id} >> MARKS" }]
"#
    .replace("MARKS", &marks.display().to_string());
    let chain = Chain::start(&yaml).await;
    let deliver = async |id: &str| {
        let (status, reply) = chain
            .post(
                StepName::Submit,
                &pushed_start("nightly", id),
                "application/json",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    };
    let runs = || {
        std::fs::read_to_string(&marks)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
    };
    // Two messages in the same minute: two runs (one per minute would make them one).
    deliver("5001").await;
    deliver("5002").await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(runs().len(), 2, "two messages, two runs: {:?}", runs());
    // Pub/Sub redelivers message 5001 (the ack was lost): the same run. That a redelivery in
    // a later minute, or hours later, is the same run is the unit test
    // `a_start_pushed_through_pubsub_and_redelivered_a_minute_later_is_the_same_run`, which
    // moves the start's time instead of waiting for the wall clock's next minute.
    deliver("5001").await;
    chain.settle(Duration::from_secs(20)).await;
    let after = std::fs::read_to_string(&marks).expect("marks");
    assert_eq!(
        after.lines().count(),
        2,
        "the redelivery ran again:\n{after}"
    );
    chain.stop().await;
}

/// Serves `router` on a loopback port with `options`; returns the address and a stopper.
async fn serve(
    router: axum::Router,
    options: conveyor_service::ServeOptions,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(conveyor_service::serve(
        listener,
        router,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    (addr, stop)
}

/// Sends `request` on a new connection and reads the answer until the server closes it.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server answered within 5 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_idle_connection_that_sends_no_header_is_closed_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let chain = Chain::start(SALES).await;
    let options = conveyor_service::ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (addr, _stop) = serve(
        conveyor_core::http::router(StepName::Load, chain.ctx.clone()),
        options,
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut half = tokio::net::TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    for (what, stream) in [("silent", &mut silent), ("half a header", &mut half)] {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_) | Err(_))),
            "a {what} connection is still open after 3 s"
        );
    }
    chain.stop().await;
}

#[tokio::test]
async fn healthz_answers_while_more_idle_connections_are_open_than_the_limit() {
    let chain = Chain::start(SALES).await;
    let options = conveyor_service::ServeOptions {
        header_read_timeout: Duration::from_secs(60),
        max_connections: 16,
    };
    let (addr, _stop) = serve(
        conveyor_core::http::router(StepName::Load, chain.ctx.clone()),
        options,
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let began = std::time::Instant::now();
    let answer = exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "healthz took {:?} behind 300 idle connections",
        began.elapsed()
    );
    drop(idle);
    chain.stop().await;
}

#[tokio::test]
async fn over_a_hundred_headers_get_a_json_431_from_the_served_function() {
    let chain = Chain::start(SALES).await;
    let (addr, _stop) = serve(
        conveyor_core::http::router(StepName::Load, chain.ctx.clone()),
        conveyor_service::ServeOptions::default(),
    )
    .await;
    let headers: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = exchange(
        addr,
        &format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n{headers}\r\n{{}}"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the 431's body is not JSON ({e}): {answer:?}"));
    assert_eq!(json["status"], "rejected", "{json}");
    chain.stop().await;
}

#[tokio::test]
async fn devs_404_and_405_name_the_paths_it_serves() {
    use tower::ServiceExt as _;
    let chain = Chain::start(SALES).await;
    let router = conveyor_core::http::combined_router(chain.ctx.clone());
    for (method, path, want, names) in [
        ("GET", "/nope", StatusCode::NOT_FOUND, "POST /stage, /load"),
        (
            "GET",
            "/load/nope",
            StatusCode::NOT_FOUND,
            "POST /load, POST /load/messages/<pipeline> or GET /load/healthz",
        ),
        (
            "GET",
            "/submit",
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /submit, POST /submit/rerun, POST /submit/mark-success or GET /submit/healthz",
        ),
        (
            "POST",
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /stage, /load",
        ),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), want, "{method} {path}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let reason = json["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(names), "{method} {path}: {reason}");
        assert!(
            !reason.contains("POST / or"),
            "{method} {path} names a path dev does not serve: {reason}"
        );
    }
    chain.stop().await;
}

#[tokio::test]
async fn a_name_the_file_system_cannot_hold_is_refused_without_the_servers_paths() {
    let chain = Chain::start(SALES).await;
    chain.write_file("landing", "in/first.csv", "id\n1\n");
    chain.settle(Duration::from_secs(20)).await;
    let name = format!("in/{}.csv", "a".repeat(1010));
    let body = serde_json::json!({"bucket": "landing", "name": name});
    let (status, reply) = chain
        .post(StepName::Load, &body.to_string(), "application/json")
        .await;
    chain.settle(Duration::from_secs(20)).await;
    let state = chain.dir.path().display().to_string();
    let reply = reply.to_string();
    assert!(!reply.contains(&state), "{status}: {reply}");
    assert!(
        reply.contains("cannot be stored as a file"),
        "{status}: {reply}"
    );
    for row in chain.run_log().await {
        assert!(
            !row.detail.contains(&state)
                && !row.error.as_deref().unwrap_or_default().contains(&state),
            "a run-log row names the server's path: {row:?}"
        );
    }
    chain.stop().await;
}

#[tokio::test]
async fn a_dataset_named_temp_by_a_placeholder_fails_its_load_for_good_naming_the_pipeline() {
    let chain = Chain::start(
        r#"
pipelines:
  - name: by_dataset
    trigger: { object: { bucket: landing, pattern: "in/{ds}/*.csv" } }
    load: { table: "{ds}.t", format: CSV }
"#,
    )
    .await;
    chain.write_file("landing", "in/temp/a.csv", "id\n1\n");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let failed: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| matches!(r.status.as_str(), "FAILED" | "REJECTED"))
        .collect();
    assert!(!failed.is_empty(), "{log:?}");
    for row in &failed {
        assert_eq!(row.pipeline.as_deref(), Some("by_dataset"), "{row:?}");
        let error = row.error.as_deref().unwrap_or_default();
        assert!(error.contains("SQLite reserves"), "{row:?}");
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

    // `touch`: a new modification time (set, not waited for), the same content.
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(old_mtime + Duration::from_secs(1))
        .expect("touch");
    drop(f);
    // The behaviour is that nothing happens: there is no event to wait for, so the watcher
    // (every 30 ms) is given ten looks at the touched file before the chain settles.
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
    chain
        .wait_rows("ds.sales", 4, Duration::from_secs(20))
        .await;
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
        chain.accepted(StepName::Load, &body).await;
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
