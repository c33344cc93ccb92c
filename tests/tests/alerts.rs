//! The alerts topic: the log step publishes each event that ends a run in failure (the run's
//! end FAILED or TIMED_OUT, a failed load, a REJECTED request) and each job or run end whose
//! `warn` data-quality checks failed (SUCCEEDED, `CHECK_WARN: …`) to it, and only those: one alert
//! per failed run, not one for the job and one for the run; a failed publish asks for
//! redelivery.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor_core::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use conveyor_core::names::{PipelineName, RunId};
use conveyor_core::ports::{EventBus, PortError, Ports};
use conveyor_core::steps::Context;
use conveyor_embedded::{LocalStore, SqliteWarehouse};
use tower::ServiceExt;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<ConveyorEvent>>,
    down: bool,
}

#[async_trait]
impl EventBus for Recorder {
    async fn publish(&self, e: &ConveyorEvent) -> Result<(), PortError> {
        if self.down {
            return Err(PortError::transient("pubsub unavailable"));
        }
        self.events.lock().expect("events").push(e.clone());
        Ok(())
    }
}

fn event(run: &str, kind: EventType, status: Status, retry: bool) -> ConveyorEvent {
    let p = PipelineName::parse("replicator").expect("pipeline");
    ConveyorEvent::new(
        kind,
        RunId::derive(&p, &[run]),
        Some(p),
        StepName::Poll,
        1,
        status,
        Detail {
            retry_at: retry.then(chrono::Utc::now),
            error: Some("exit status 3".into()),
            ..Detail::default()
        },
    )
}

/// A SUCCEEDED event whose error is `error` (a `warn` check's `CHECK_WARN: …`).
fn warned(run: &str, kind: EventType, error: &str) -> ConveyorEvent {
    let mut e = event(run, kind, Status::Succeeded, false);
    e.detail.error = Some(error.to_owned());
    e
}

async fn post(ctx: &Context, e: &ConveyorEvent) -> StatusCode {
    let router = conveyor_core::http::router(StepName::Log, ctx.clone());
    let req = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(e).expect("json")))
        .expect("request");
    router.oneshot(req).await.expect("response").status()
}

fn context(dir: &std::path::Path, alerts: Arc<Recorder>) -> Context {
    let store = LocalStore::new(dir.join("buckets")).expect("store");
    let sqlite = SqliteWarehouse::open(dir.join("warehouse"), Arc::new(store)).expect("db");
    let config = conveyor_core::config::parse_str(
        "pipelines:\n  - name: replicator\n    batch: { engine: local, command: \"true\" }\n",
        "t.yaml",
    )
    .expect("config");
    Context::new(
        Arc::new(config),
        Ports {
            run_log: Arc::new(sqlite),
            bus: Arc::new(Recorder::default()),
            alerts: Some(alerts),
            ..Ports::unwired()
        },
    )
}

#[tokio::test]
async fn only_events_that_end_a_run_in_failure_reach_the_alerts_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = Arc::new(Recorder::default());
    let ctx = context(dir.path(), alerts.clone());
    let cases = [
        (
            event("a", EventType::BatchSubmitted, Status::Submitted, false),
            false,
        ),
        (
            event("a", EventType::BatchFinished, Status::Failed, true),
            false,
        ),
        // A job's end is not the run's end: the run's end follows and alerts.
        (
            event("a", EventType::BatchFinished, Status::Failed, false),
            false,
        ),
        (
            event("a", EventType::RunFinished, Status::Failed, false),
            true,
        ),
        (
            event("b", EventType::BatchFinished, Status::TimedOut, false),
            false,
        ),
        (
            event("b", EventType::RunFinished, Status::TimedOut, false),
            true,
        ),
        // A failed load ends its run.
        (
            event("l", EventType::StepFailed, Status::Failed, false),
            true,
        ),
        (
            event("c", EventType::StepFailed, Status::Rejected, false),
            true,
        ),
        (
            event("d", EventType::BatchFinished, Status::Succeeded, false),
            false,
        ),
        // `warn` data-quality checks that failed: the job (or the run) SUCCEEDED, and alerts.
        (
            warned(
                "w",
                EventType::BatchFinished,
                "CHECK_WARN: check rows: observed 0, expected at least 1",
            ),
            true,
        ),
        (
            warned(
                "w",
                EventType::RunFinished,
                "CHECK_WARN: check fresh: observed 30h old",
            ),
            true,
        ),
        (
            warned("x", EventType::BatchSubmitted, "CHECK_WARN: not an end"),
            false,
        ),
    ];
    for (e, _) in &cases {
        assert_eq!(post(&ctx, e).await, StatusCode::OK);
    }
    let published: Vec<String> = alerts
        .events
        .lock()
        .expect("events")
        .iter()
        .map(|e| e.id())
        .collect();
    let expected: Vec<String> = cases
        .iter()
        .filter(|(_, alert)| *alert)
        .map(|(e, _)| e.id())
        .collect();
    assert_eq!(published, expected);
}

#[tokio::test]
async fn an_alerts_topic_that_is_down_asks_for_redelivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = Arc::new(Recorder {
        down: true,
        ..Recorder::default()
    });
    let ctx = context(dir.path(), alerts);
    let failed = event("e", EventType::RunFinished, Status::TimedOut, false);
    assert_eq!(post(&ctx, &failed).await, StatusCode::SERVICE_UNAVAILABLE);
    let ok = event("f", EventType::BatchFinished, Status::Succeeded, false);
    assert_eq!(
        post(&ctx, &ok).await,
        StatusCode::OK,
        "a success needs no alert"
    );
}

#[tokio::test]
async fn a_failed_run_alerts_once_at_its_end_not_once_per_failed_job_event() {
    // What the chain writes for a run whose only job fails with no attempt left: the job's
    // end, then the run's end (written by submit's after_job).
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = Arc::new(Recorder::default());
    let ctx = context(dir.path(), alerts.clone());
    let job_end = event("g", EventType::BatchFinished, Status::Failed, false);
    let run_end = event("g", EventType::RunFinished, Status::Failed, false);
    for e in [&job_end, &run_end] {
        assert_eq!(post(&ctx, e).await, StatusCode::OK);
    }
    let published = alerts.events.lock().expect("events").clone();
    assert_eq!(
        published.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventType::RunFinished],
        "one alert per failed run, at its end"
    );
}

/// A webhook on port 0 that records what it is sent and answers `status`.
async fn webhook(status: StatusCode) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook/{token}",
        axum::routing::post({
            let seen = seen.clone();
            move |axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("seen").push(body);
                    status
                }
            }
        }),
    );
    (conveyor_e2e::serve(app).await, seen)
}

fn on_failure_context(dir: &std::path::Path, url: &str) -> Context {
    let secrets = dir.join("secrets");
    let secret = secrets.join("projects/p/secrets/chat-hook");
    std::fs::create_dir_all(secret.parent().expect("parent")).expect("dir");
    std::fs::write(&secret, format!("{url}\n")).expect("secret");
    let store = LocalStore::new(dir.join("buckets")).expect("store");
    let sqlite = SqliteWarehouse::open(dir.join("warehouse"), Arc::new(store)).expect("db");
    let config = conveyor_core::config::parse_str(
        r#"
pipelines:
  - name: replicator
    batch: { engine: local, command: "true" }
    on_failure:
      - publish: replicator-failures
      - webhook: { url_secret: projects/p/secrets/chat-hook }
  - name: quiet
    batch: { engine: local, command: "true" }
"#,
        "t.yaml",
    )
    .expect("config");
    Context::new(
        Arc::new(config),
        Ports {
            run_log: Arc::new(sqlite),
            bus: Arc::new(Recorder::default()),
            secrets: Arc::new(conveyor_embedded::DirSecrets::new(secrets)),
            notifier: Some(Arc::new(conveyor_embedded::LocalNotifier::new(
                dir.join("topics"),
            ))),
            ..Ports::unwired()
        },
    )
}

#[tokio::test]
async fn a_failed_run_is_published_to_its_topic_and_posted_to_its_webhook_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, seen) = webhook(StatusCode::OK).await;
    let ctx = on_failure_context(dir.path(), &format!("{base}/hook/s3cr3t"));
    let failed = event("a", EventType::RunFinished, Status::Failed, false);
    let quiet = {
        let p = PipelineName::parse("quiet").expect("pipeline");
        let mut e = failed.clone();
        e.pipeline = Some(p.clone());
        e.run_id = RunId::derive(&p, &["q"]);
        e
    };
    for e in [
        event("a", EventType::BatchFinished, Status::Failed, true),
        event("a", EventType::BatchFinished, Status::Succeeded, false),
        failed.clone(),
        quiet,
    ] {
        assert_eq!(post(&ctx, &e).await, StatusCode::OK);
    }
    let posted = seen.lock().expect("seen").clone();
    assert_eq!(
        posted.len(),
        1,
        "only the run's failed end, only its pipeline: {posted:#?}"
    );
    assert_eq!(posted[0]["pipeline"], "replicator");
    assert_eq!(posted[0]["status"], "FAILED");
    assert_eq!(posted[0]["error"], "exit status 3");
    let text = posted[0]["text"].as_str().expect("text");
    assert!(
        text.contains("exit status 3") && text.contains("replicator"),
        "{text}"
    );
    let topic = std::fs::read_to_string(dir.path().join("topics/replicator-failures.ndjson"))
        .expect("topic");
    let lines: Vec<ConveyorEvent> = topic
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].id(), failed.id());
}

#[tokio::test]
async fn a_webhook_that_is_down_asks_for_redelivery_and_its_url_is_never_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, seen) = webhook(StatusCode::SERVICE_UNAVAILABLE).await;
    let ctx = on_failure_context(dir.path(), &format!("{base}/hook/s3cr3t"));
    let failed = event("a", EventType::RunFinished, Status::Failed, false);
    let router = conveyor_core::http::router(StepName::Log, ctx.clone());
    let req = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&failed).expect("json")))
        .expect("request");
    let resp = router.oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(!String::from_utf8_lossy(&body).contains("s3cr3t"));
    assert_eq!(seen.lock().expect("seen").len(), 1);
    // Nobody listening: refused at once, still without the URL.
    let gone = on_failure_context(dir.path(), "http://127.0.0.1:9/hook/s3cr3t");
    let notifier = gone.ports.notifier.clone().expect("notifier");
    let e = notifier
        .post("http://127.0.0.1:9/hook/s3cr3t", &serde_json::json!({}))
        .await
        .expect_err("nobody listens");
    assert!(e.is_transient());
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
}
