//! The Data Lineage adapter against a recording fake: the request Dataplex's
//! `projects.locations:processOpenLineageRunEvent` takes, checked against its discovery
//! document, with a request id that a redelivered event repeats.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::Uri;
use conveyor_contract::{Documents, Recording};
use conveyor_core::ports::{Lineage, RunEvent};
use conveyor_gcp::{DataLineage, GcpAuth};
use serde_json::{Value, json};

fn event(kind: &str) -> RunEvent {
    RunEvent::new(json!({
        "eventType": kind,
        "eventTime": "2026-11-20T06:00:00.000Z",
        "producer": "https://example.invalid/conveyor/releases/0.1.0",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": { "runId": "0b2c8f0e-1234-8abc-9def-0123456789ab" },
        "job": { "namespace": "prod", "name": "sales.load" },
        "inputs": [{ "namespace": "gs://landing", "name": "sales/2026-11-20/a.csv" }],
        "outputs": [{ "namespace": "bigquery", "name": "p.raw.sales_2026_11_20" }],
    }))
}

#[tokio::test]
async fn a_run_event_is_posted_to_process_open_lineage_run_event_with_a_stable_request_id() {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let keep = seen.clone();
    let app = Router::new().fallback(move |uri: Uri, body: String| {
        let keep = keep.clone();
        async move {
            let sent: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            keep.lock().expect("lock").push((uri.to_string(), sent));
            axum::Json(json!({
                "process": "projects/p/locations/us/processes/x",
                "run": "projects/p/locations/us/processes/x/runs/y",
                "lineageEvents": ["projects/p/locations/us/processes/x/runs/y/lineageEvents/z"],
            }))
        }
    });
    let recording = Recording::new("datalineage fake", &["datalineage"], true);
    let app = conveyor_contract::record::layer(app, &recording);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let lineage = DataLineage::new(&base, "p", "us", GcpAuth::Anonymous);
    assert_eq!(lineage.tables().namespace, "bigquery");
    assert_eq!(lineage.tables().project.as_deref(), Some("p"));
    for e in [event("START"), event("START"), event("COMPLETE")] {
        lineage.emit(&e).await.expect("emit");
    }

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    let path = |u: &str| u.split('?').next().unwrap_or("").to_owned();
    let request_id = |u: &str| u.split("requestId=").nth(1).unwrap_or("").to_owned();
    for (uri, body) in &seen {
        assert_eq!(
            path(uri),
            "/v1/projects/p/locations/us:processOpenLineageRunEvent"
        );
        assert_eq!(request_id(uri).len(), 36, "{uri}");
        assert_eq!(body["run"]["runId"], "0b2c8f0e-1234-8abc-9def-0123456789ab");
    }
    assert_eq!(seen[0].1, *event("START").json(), "the event is the body");
    assert_eq!(
        request_id(&seen[0].0),
        request_id(&seen[1].0),
        "a redelivery repeats the id"
    );
    assert_ne!(
        request_id(&seen[0].0),
        request_id(&seen[2].0),
        "another event has its own"
    );

    // The requests as the discovery document of datalineage.v1 allows them.
    match Documents::shared() {
        Ok(docs) => {
            let (findings, kinds) = conveyor_contract::check_all(docs, &recording.requests());
            assert!(findings.is_empty(), "{findings:#?}");
            assert!(
                kinds.contains("datalineage.projects.locations.processOpenLineageRunEvent"),
                "{kinds:?}"
            );
        }
        Err(e) => panic!("the discovery documents are needed here: {e}"),
    }
}
