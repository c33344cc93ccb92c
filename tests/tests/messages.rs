//! Pub/Sub messages into rows (`trigger.topic`): on the embedded chain (SQLite tables, the
//! load router's `/messages/<pipeline>`), and through the function binaries against the
//! Pub/Sub emulator (a real push subscription) and bqemulator.
//!
//! Without the Pub/Sub emulator the emulator test skips loudly; under `CI=true` it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use conveyor_core::event::StepName;
use conveyor_core::names::TableRef;
use conveyor_core::ports::{PortError, RowBatch, RowSink};
use conveyor_core::steps::Context;
use conveyor_e2e::{Chain, Emulators, ok};
use serde_json::{Value, json};
use tower::ServiceExt;

const PIPELINE: &str = r#"
pipelines:
  - name: app_issues
    trigger: { topic: mobile-app-issues }
    load:
      table: ops.machine_issues
      format: NDJSON
      schema:
        - { name: machine, type: STRING, mode: REQUIRED }
        - { name: severity, type: INT64 }
        - { name: reported_at, type: TIMESTAMP, mode: REQUIRED }
        - { name: detail, type: JSON }
"#;

fn envelope(message_id: &str, data: &[u8]) -> String {
    json!({
        "subscription": "projects/test/subscriptions/app-issues",
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": message_id,
            "publishTime": "2026-11-20T08:30:00.123Z",
            "attributes": {"app": "mine-mobile"},
        },
    })
    .to_string()
}

async fn post(ctx: &Context, path: &str, body: String) -> (StatusCode, Value) {
    let router = conveyor_core::http::router(StepName::Load, ctx.clone());
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = router.oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const PATH: &str = "/messages/app_issues";

#[tokio::test]
async fn messages_become_rows_once_and_bad_ones_are_quarantined_and_recorded() {
    let chain = Chain::start(PIPELINE).await;
    let ok = br#"{"machine": "drill-7", "severity": 3, "reported_at": "2026-11-20T08:29:00Z", "detail": {"code": "E42"}}"#;
    let (status, body) = post(&chain.ctx, PATH, envelope("1001", ok)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(chain.rows("ops.machine_issues").await, 1);

    // Pub/Sub delivers at least once: the same message again adds nothing.
    for _ in 0..3 {
        let (status, _) = post(&chain.ctx, PATH, envelope("1001", ok)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        chain.rows("ops.machine_issues").await,
        1,
        "a redelivery adds no row"
    );

    // An array: each valid object is a row, the invalid ones are quarantined.
    let mixed = br#"[
        {"machine": "truck-2", "reported_at": "2026-11-20T09:00:00Z"},
        {"severity": 1, "reported_at": "2026-11-20T09:01:00Z"},
        {"machine": "loader-1", "severity": "high", "reported_at": "2026-11-20T09:02:00Z"},
        {"machine": "drill-9", "reported_at": "2026-11-20 09:03:00"}
    ]"#;
    let (status, body) = post(&chain.ctx, PATH, envelope("1002", mixed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["summary"]
            .as_str()
            .unwrap_or("")
            .contains("2 quarantined"),
        "{body}"
    );
    assert_eq!(
        post(&chain.ctx, PATH, envelope("1002", mixed)).await.0,
        StatusCode::OK
    );
    assert_eq!(chain.rows("ops.machine_issues").await, 3);
    assert_eq!(chain.rows("ops.machine_issues_rejected").await, 2);

    // Not JSON at all: acknowledged, quarantined whole, never redelivered.
    let (status, _) = post(&chain.ctx, PATH, envelope("1003", b"machine=drill-7")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chain.rows("ops.machine_issues_rejected").await, 3);

    chain.settle(Duration::from_secs(10)).await;
    let log = chain.run_log().await;
    let rejected: Vec<_> = log
        .iter()
        .filter(|r| r.status == "REJECTED" && r.pipeline.as_deref() == Some("app_issues"))
        .collect();
    assert_eq!(
        rejected.len(),
        2,
        "one REJECTED row per bad message: {rejected:#?}"
    );
    assert!(
        rejected.iter().any(|r| r.error.as_deref().is_some_and(|e| e
            .contains("2 object(s) quarantined in ops.machine_issues_rejected; first: object 1: missing REQUIRED field \"machine\""))),
        "{rejected:#?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.error.as_deref().is_some_and(|e| e.contains("not JSON"))),
        "{rejected:#?}"
    );
    assert!(
        rejected
            .iter()
            .all(|r| r.table_name.as_deref() == Some("machine_issues"))
    );

    // What the quarantine keeps: the message id, the object's index, the reason and the data.
    let db = rusqlite::Connection::open(chain.dir.path().join("state/warehouse/ops.sqlite"))
        .expect("open");
    let mut stmt = db
        .prepare("SELECT message_id, object_index, reason, data FROM machine_issues_rejected ORDER BY message_id, object_index")
        .expect("query");
    let kept: Vec<(String, Option<i64>, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(kept.len(), 3);
    assert_eq!((kept[0].0.as_str(), kept[0].1), ("1002", Some(1)));
    assert_eq!(kept[1].1, Some(2));
    assert!(
        kept[1].2.contains("field \"severity\": expected INT64"),
        "{kept:?}"
    );
    assert!(
        kept[1].3.contains("loader-1"),
        "the object is kept: {kept:?}"
    );
    assert_eq!((kept[2].0.as_str(), kept[2].1), ("1003", None));
    assert_eq!(
        kept[2].3, "machine=drill-7",
        "a message that is not JSON is kept as text"
    );
    chain.stop().await;
}

#[tokio::test]
async fn requests_that_are_not_messages_of_a_message_pipeline_are_refused() {
    let chain = Chain::start(&format!(
        "{PIPELINE}  - name: files\n    trigger: {{ object: {{ bucket: landing, pattern: \"*.csv\" }} }}\n    load: {{ table: ops.files, format: CSV }}\n"
    ))
    .await;
    // A push for an unknown pipeline: acknowledged (200) so Pub/Sub stops, and recorded.
    let (status, body) = post(&chain.ctx, "/messages/nope", envelope("1", b"{}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    // A pipeline that takes files, not messages.
    let (status, body) = post(&chain.ctx, "/messages/files", envelope("2", b"{}")).await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("rejected"))
    );
    // Not a push envelope (a direct call): 400 with the reason.
    let (status, body) = post(&chain.ctx, PATH, r#"{"machine":"x"}"#.to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("push envelope"),
        "{body}"
    );
    chain.settle(Duration::from_secs(10)).await;
    let rejected = chain
        .run_log()
        .await
        .into_iter()
        .filter(|r| r.status == "REJECTED")
        .count();
    assert_eq!(rejected, 3, "each refusal is recorded");
    chain.stop().await;
}

/// A row sink whose backend is down.
struct Down;

#[async_trait]
impl RowSink for Down {
    async fn insert_rows(&self, _: &RowBatch) -> Result<bool, PortError> {
        Err(PortError::transient("connection refused"))
    }
}

#[tokio::test]
async fn a_backend_outage_asks_for_redelivery() {
    let chain = Chain::start(PIPELINE).await;
    let mut ctx = chain.ctx.clone();
    ctx.ports.rows = Arc::new(Down);
    let good = br#"{"machine": "drill-7", "reported_at": "2026-11-20T08:29:00Z"}"#;
    let (status, _) = post(&ctx, PATH, envelope("2001", good)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = post(&ctx, PATH, envelope("2002", b"not json")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a bad message is not lost either: its quarantine could not be written"
    );
    // The backend is back: the redelivery writes the row.
    let (status, _) = post(&chain.ctx, PATH, envelope("2001", good)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        chain
            .ctx
            .ports
            .warehouse
            .row_count(&TableRef::parse("ops.machine_issues").expect("table"))
            .await
            .expect("rows"),
        1
    );
    chain.stop().await;
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_push_subscription_delivers_messages_into_bigquery_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start"],
        "the message emulator test",
    ) else {
        return;
    };
    let http = reqwest::Client::new();
    let ps = emu.pubsub_project();
    for topic in ["conveyor-events", "mobile-app-issues", "conveyor-alerts"] {
        emu.topic(topic).await;
    }
    for ds in ["ops", "conveyor"] {
        emu.dataset(ds).await;
    }
    let config = dir.path().join("conveyor.yaml");
    std::fs::write(&config, format!("environment: emulators\n{PIPELINE}")).expect("config");
    let mut functions = Vec::new();
    for step in ["load", "log"] {
        let log = dir.path().join(format!("{step}.log"));
        let extra = [("CONVEYOR_ALERTS_TOPIC", "conveyor-alerts")];
        functions.push(emu.function(step, &config, &extra, &log).await);
    }
    let urls: Vec<&str> = functions.iter().map(|f| f.url.as_str()).collect();
    // What a Slack or e-mail integration would subscribe to.
    emu.subscription("alerts-pull", "conveyor-alerts", json!({}))
        .await;
    emu.push_subscription(
        "app-issues-to-load",
        "mobile-app-issues",
        &format!("{}/messages/app_issues", urls[0]),
    )
    .await;
    emu.push_subscription("to-log", "conveyor-events", &format!("{}/", urls[1]))
        .await;
    let publish = async |data: &[u8]| -> String {
        let resp = ok(
            http.post(format!("{ps}/topics/mobile-app-issues:publish"))
                .json(&json!({"messages": [{"data": base64::engine::general_purpose::STANDARD.encode(data)}]}))
                .send()
                .await,
            "publish",
        )
        .await;
        resp["messageIds"][0]
            .as_str()
            .expect("message id")
            .to_owned()
    };
    let first = br#"{"machine": "drill-7", "severity": 3, "reported_at": "2026-11-20T08:29:00Z", "detail": "{\"code\": \"E42\"}"}"#;
    let first_id = publish(first).await;
    publish(br#"[{"machine": "truck-2", "reported_at": "2026-11-20T09:00:00Z"}, {"machine": "loader-1", "reported_at": "never"}]"#).await;
    publish(b"\xff\xfe not json").await;
    wait_for(
        "the rows and the quarantine",
        Duration::from_secs(60),
        async || {
            emu.count("ops.machine_issues").await.unwrap_or(0) == 2
                && emu.count("ops.machine_issues_rejected").await.unwrap_or(0) == 2
        },
    )
    .await;
    // Every REJECTED row, duplicates included: the emulator's insertAll keeps what BigQuery's
    // insertId would drop, so duplicates are counted, and must all be copies of two events.
    let rejected = async || -> Vec<String> {
        emu.query("SELECT event_id FROM `test.conveyor.run_log` WHERE status = 'REJECTED' AND pipeline = 'app_issues'",
        )
        .await
        .iter()
        .map(|r| r[0].as_str().unwrap_or_default().to_owned())
        .collect()
    };
    wait_for(
        "two REJECTED run-log events",
        Duration::from_secs(60),
        async || {
            rejected()
                .await
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= 2
        },
    )
    .await;
    let mut alerted = std::collections::BTreeSet::new();
    wait_for(
        "the alerts topic to hold both rejections",
        Duration::from_secs(30),
        async || {
            let pulled = ok(
                http.post(format!("{ps}/subscriptions/alerts-pull:pull"))
                    .json(&json!({"maxMessages": 10}))
                    .send()
                    .await,
                "pull alerts",
            )
            .await;
            for m in pulled["receivedMessages"].as_array().into_iter().flatten() {
                let a = &m["message"]["attributes"];
                assert_eq!(a["ce-type"], "dev.conveyor.step.failed", "{m}");
                assert_eq!(a["ce-conveyorstatus"], "REJECTED", "{m}");
                assert_eq!(a["ce-conveyorpipeline"], "app_issues", "{m}");
                alerted.insert(a["ce-id"].as_str().unwrap_or_default().to_owned());
            }
            alerted.len() == 2
        },
    )
    .await;
    let rows = emu
        .query("SELECT machine, severity FROM `test.ops.machine_issues` ORDER BY machine")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![json!("drill-7"), json!("3")],
            vec![json!("truck-2"), Value::Null]
        ]
    );
    // By now both alerts were published, so both rejections were recorded: one event each.
    let ids = rejected().await;
    let events: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        events.len(),
        2,
        "one REJECTED event per bad message ({} rows): {ids:?}",
        ids.len()
    );
    assert_eq!(
        events,
        alerted.iter().collect(),
        "the run log and the alerts agree"
    );

    // A redelivery of a message already written (an acknowledgement lost on the way).
    for _ in 0..2 {
        let resp = http
            .post(format!("{}/messages/app_issues", urls[0]))
            .header("content-type", "application/json")
            .body(envelope(&first_id, first))
            .send()
            .await
            .expect("redeliver");
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(
        emu.count("ops.machine_issues").await.unwrap_or(0),
        2,
        "nothing added twice"
    );

    // BigQuery down: the function answers 503, Pub/Sub redelivers until it is back.
    emu.script("stop-bq");
    let down = http
        .post(format!("{}/messages/app_issues", urls[0]))
        .header("content-type", "application/json")
        .body(envelope(
            "direct-1",
            br#"{"machine": "x", "reported_at": "2026-11-20T10:00:00Z"}"#,
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(down.status().as_u16(), 503);
    // The load function's log counts Pub/Sub's pushes (the emulator pushes as `Java/...`).
    let load_log = dir.path().join("load.log");
    let lines = |needles: &[&str]| {
        std::fs::read_to_string(&load_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    };
    let refused_before = lines(&["Java/", "asking for redelivery"]);
    let handled_before = lines(&["Java/", "handled"]);
    publish(br#"{"machine": "shovel-3", "reported_at": "2026-11-20T10:00:00Z"}"#).await;
    // Evidence of redelivery: the pushed message was refused with 503 twice (its first
    // delivery and at least one redelivery) while BigQuery was down.
    wait_for(
        "a redelivery into the outage",
        Duration::from_secs(60),
        async || lines(&["Java/", "asking for redelivery"]) >= refused_before + 2,
    )
    .await;
    emu.script("start-bq");
    // Then a redelivery succeeded (answered 200, so acknowledged: no further one can come).
    wait_for(
        "the redelivered message to be handled",
        Duration::from_secs(60),
        async || lines(&["Java/", "handled"]) > handled_before,
    )
    .await;
    assert_eq!(emu.count("ops.machine_issues").await.unwrap_or(0), 3);
}
