//! The I/O floor of a load event, for `scripts/bench-service.sh FLOOR=1`: a server that does
//! only the network work `conveyor-load` does per event and nothing of its own — read the push
//! request, POST a fixed BigQuery `jobs.insert` body, read the answer, POST a fixed Pub/Sub
//! publish body, read the answer, answer 200 — on the same stack (Tokio on one thread, axum,
//! hyper-util's pooled client, keep-alive). The CPU it spends per event is what the kernel and
//! the HTTP stack cost on the machine at hand; `conveyor-load`'s figure minus this one is
//! Conveyor's own work (parsing, ids, JSON, the step).
//!
//! Environment (as the bench sets it): `PORT`, `CONVEYOR_BIGQUERY_ENDPOINT`,
//! `CONVEYOR_PUBSUB_ENDPOINT`, `CONVEYOR_GCS_ENDPOINT`, `CONVEYOR_PROJECT`,
//! `CONVEYOR_EVENTS_TOPIC`, and `IO_FLOOR_GCS_GET=true` to read an object's metadata first
//! (as `load.check_generation: true` does).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A BigQuery load job as `conveyor-load` inserts one (about the same size).
const INSERT: &str = r#"{"jobReference":{"projectId":"bench","jobId":"cv-load-sales-0123456789ab-a1","location":"US"},"configuration":{"labels":{"conveyor-run":"sales-0123456789ab","conveyor-pipeline":"sales"},"load":{"sourceUris":["gs://landing/sales/2026-11-20/part-000001.csv"],"destinationTable":{"projectId":"bench","datasetId":"analytics","tableId":"sales"},"sourceFormat":"CSV","writeDisposition":"WRITE_APPEND","createDisposition":"CREATE_IF_NEEDED","skipLeadingRows":1,"autodetect":true}}}"#;

/// A `conveyor.table.loaded` publish (about the same size: the event's JSON in base64).
const PUBLISH: &str = r#"{"messages":[{"data":"eyJ0eXBlIjoiY29udmV5b3IudGFibGUubG9hZGVkIiwicnVuX2lkIjoic2FsZXMtMDEyMzQ1Njc4OWFiIiwicGlwZWxpbmUiOiJzYWxlcyIsInN0ZXAiOiJsb2FkIiwiYXR0ZW1wdCI6MSwic3RhdHVzIjoic3VjY2VlZGVkIiwiYXQiOiIyMDI2LTEyLTAxVDAwOjAwOjAwWiIsImRldGFpbCI6eyJqb2JfaWQiOiJjdi1sb2FkLXNhbGVzLTAxMjM0NTY3ODlhYi1hMSIsInRhYmxlIjoiYW5hbHl0aWNzLnNhbGVzIiwicm93cyI6Nn19","attributes":{"ce-id":"0123456789ab","ce-source":"//conveyor/load","ce-specversion":"1.0","ce-type":"conveyor.table.loaded","pipeline":"sales","run_id":"sales-0123456789ab"}}]}"#;

struct Floor {
    client: Client<HttpConnector, Full<Bytes>>,
    /// The calls of one event, in order: a GET without a body, a POST with one.
    calls: Vec<(http::Uri, Option<&'static str>)>,
}

impl Floor {
    async fn call(&self, uri: &http::Uri, body: Option<&'static str>) -> Result<(), String> {
        let req = match body {
            Some(body) => http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes()))),
            None => http::Request::get(uri.clone()).body(Full::default()),
        };
        let mut req = req.map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer ya29.fake"),
        );
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{uri} answered {status}"))
        }
    }
}

async fn event(State(floor): State<Arc<Floor>>, body: Bytes) -> (StatusCode, &'static str) {
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, "empty body");
    }
    for (uri, body) in &floor.calls {
        if let Err(e) = floor.call(uri, *body).await {
            eprintln!("io_floor: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "backend call failed");
        }
    }
    (StatusCode::OK, r#"{"ok":true}"#)
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("io_floor: {name} is not set"))
}

fn uri(s: String) -> Result<http::Uri, String> {
    s.parse().map_err(|e| format!("io_floor: {s:?}: {e}"))
}

async fn serve() -> Result<(), String> {
    let project = var("CONVEYOR_PROJECT")?;
    let topic = var("CONVEYOR_EVENTS_TOPIC")?;
    let mut calls = Vec::with_capacity(3);
    if std::env::var("IO_FLOOR_GCS_GET").as_deref() == Ok("true") {
        let gcs = var("CONVEYOR_GCS_ENDPOINT")?;
        let object = format!("{gcs}/storage/v1/b/landing/o/sales%2F2026-11-20%2Fpart-000001.csv");
        calls.push((uri(object)?, None));
    }
    let bigquery = var("CONVEYOR_BIGQUERY_ENDPOINT")?;
    calls.push((
        uri(format!("{bigquery}/projects/{project}/jobs"))?,
        Some(INSERT),
    ));
    let pubsub = var("CONVEYOR_PUBSUB_ENDPOINT")?;
    let publish = format!("{pubsub}/v1/projects/{project}/topics/{topic}:publish");
    calls.push((uri(publish)?, Some(PUBLISH)));
    let floor = Floor {
        client: Client::builder(TokioExecutor::new()).build_http(),
        calls,
    };
    let port: u16 = var("PORT")?
        .parse()
        .map_err(|e| format!("io_floor: PORT: {e}"))?;
    let app = Router::new()
        .route("/", post(event))
        .with_state(Arc::new(floor));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("io_floor: bind {port}: {e}"))?;
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("io_floor: {e}"))
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("io_floor: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
