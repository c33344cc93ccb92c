//! The BigQuery adapter against a local server that answers as BigQuery's REST API does:
//! jobs are inserted first under their deterministic id, and a 409 (the id is taken) means
//! "adopt the existing job" — one call when BigQuery answers DONE at once, no look-up first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use conveyor_core::config::{BatchSpec, CreateDisposition, SchemaSpec, SqlJob, WriteDisposition};
use conveyor_core::event::ObjectRef;
use conveyor_core::format::Format;
use conveyor_core::names::{JobId, PipelineName, RunId, TableRef};
use conveyor_core::ports::{BatchEngine, BatchRequest, LoadJob, LoadState, PortError, Warehouse};
use conveyor_gcp::{BigQuery, GcpAuth, SqlEngine};
use serde_json::{Value, json};

/// What the fake answers to an insert, and every call it saw.
#[derive(Clone)]
struct Fake {
    insert: Arc<Mutex<(u16, Value)>>,
    get: Arc<Mutex<(u16, String)>>,
    calls: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn handle(
    State(f): State<Fake>,
    method: Method,
    uri: Uri,
    body: String,
) -> impl IntoResponse {
    f.calls
        .lock()
        .expect("lock")
        .push(format!("{method} {}", uri.path()));
    f.bodies
        .lock()
        .expect("lock")
        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
    let (status, body) = if method == Method::POST && uri.path().ends_with("/jobs") {
        let (s, v) = f.insert.lock().expect("lock").clone();
        (s, v.to_string())
    } else {
        f.get.lock().expect("lock").clone()
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body,
    )
}

async fn start(insert: (u16, Value), get: (u16, &str)) -> (Fake, BigQuery) {
    let fake = Fake {
        insert: Arc::new(Mutex::new(insert)),
        get: Arc::new(Mutex::new((get.0, get.1.to_owned()))),
        calls: Arc::default(),
        bodies: Arc::default(),
    };
    let url = serve(Router::new().fallback(handle).with_state(fake.clone())).await;
    let bq = BigQuery::new("p", None, Some(&url), &GcpAuth::Anonymous);
    (fake, bq)
}

/// Serves `app` on a free loopback port; the BigQuery API's base URL on it.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/bigquery/v2",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn done(rows: u64) -> Value {
    json!({
        "jobReference": {"projectId": "p", "jobId": "x"},
        "status": {"state": "DONE"},
        "statistics": {"load": {"outputRows": rows.to_string()}},
    })
}

fn load_job() -> LoadJob {
    let run = RunId::derive(&PipelineName::parse("sales").expect("name"), &["x"]);
    LoadJob {
        job_id: JobId::derive("load", &run, 1),
        sources: vec![ObjectRef {
            bucket: "landing".parse().expect("bucket"),
            name: "a.csv".parse().expect("name"),
            generation: "1".into(),
            size: None,
        }],
        table: TableRef::parse("ds.t").expect("table"),
        format: Format::Csv,
        write: WriteDisposition::WriteAppend,
        create: CreateDisposition::CreateIfNeeded,
        schema: SchemaSpec::Autodetect,
        partition: None,
        clustering: Vec::new(),
        skip_leading_rows: 1,
        max_bad_records: 0,
        allow_quoted_newlines: false,
        schema_update_options: Vec::new(),
    }
}

fn calls(f: &Fake) -> Vec<String> {
    f.calls.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_load_that_bigquery_finishes_at_once_is_one_insert_and_no_look_up() {
    let (fake, bq) = start((200, done(6)), (500, "{}")).await;
    let status = bq
        .load(&load_job(), Duration::from_secs(5))
        .await
        .expect("load");
    assert_eq!(status.state, LoadState::Done { rows: 6 });
    assert!(!status.adopted);
    assert_eq!(calls(&fake), ["POST /bigquery/v2/projects/p/jobs"]);
}

#[tokio::test]
async fn an_insert_answered_409_adopts_the_existing_job() {
    let conflict = json!({"error": {"code": 409, "message": "Already Exists: Job p:x", "errors": [{"reason": "duplicate"}]}});
    let (fake, bq) = start((409, conflict), (200, &done(7).to_string())).await;
    let status = bq
        .load(&load_job(), Duration::from_secs(5))
        .await
        .expect("load");
    assert_eq!(status.state, LoadState::Done { rows: 7 });
    assert!(status.adopted, "the existing job is adopted, not run again");
    let seen = calls(&fake);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("POST") && seen[1].starts_with("GET"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_job_still_running_after_the_wait_is_handed_over_not_waited_for() {
    let running = json!({"jobReference": {"jobId": "x"}, "status": {"state": "RUNNING"}});
    let (_fake, bq) = start((200, running.clone()), (200, &running.to_string())).await;
    let began = std::time::Instant::now();
    let status = bq
        .load(&load_job(), Duration::from_millis(300))
        .await
        .expect("load");
    assert_eq!(status.state, LoadState::Running);
    assert!(began.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_404_without_an_errors_body_is_not_found_not_transient() {
    let (_fake, bq) = start((500, json!({})), (404, "Not Found")).await;
    let err = bq
        .load_state(&load_job().job_id)
        .await
        .expect_err("no such job");
    assert!(matches!(err, PortError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_sql_job_is_inserted_under_its_id_and_a_409_adopts_it() {
    let conflict = json!({"error": {"code": 409, "message": "Already Exists"}});
    let (fake, bq) = start(
        (409, conflict),
        (200, r#"{"status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "message": "Syntax error"}}}"#),
    )
    .await;
    let engine = SqlEngine::new(bq);
    let run = RunId::derive(&PipelineName::parse("orders").expect("name"), &["x"]);
    let spec = BatchSpec::Sql(SqlJob {
        query: "SELECT DISTINCT * FROM staging.orders_{date}".into(),
        destination: Some("analytics.orders".into()),
        write_disposition: Some(WriteDisposition::WriteTruncate),
        create_disposition: CreateDisposition::CreateIfNeeded,
    });
    let req = BatchRequest {
        job_id: JobId::derive("dedupe", &run, 1),
        run_id: run,
        attempt: 1,
        spec: spec.clone(),
        vars: BTreeMap::from([("date".into(), "2026_11_20".into())]),
        job: "dedupe".into(),
        row: BTreeMap::new(),
    };
    let submitted = engine.submit(&req).await.expect("submit");
    assert!(submitted.adopted);
    let state = engine.state(&spec, &req.job_id).await.expect("state");
    assert!(state.terminal);
    assert_eq!(
        state.state, "FAILED",
        "DONE with an errorResult is no success"
    );
    assert!(state.error.is_some_and(|e| e.contains("Syntax error")));
    assert_eq!(calls(&fake)[0], "POST /bigquery/v2/projects/p/jobs");
    let insert = fake.bodies.lock().expect("lock")[0].clone();
    assert_eq!(insert["jobReference"]["jobId"], req.job_id.as_str());
    let q = &insert["configuration"]["query"];
    assert_eq!(
        q["query"],
        "SELECT DISTINCT * FROM staging.orders_2026_11_20"
    );
    assert_eq!(q["useLegacySql"], false);
    assert_eq!(q["destinationTable"]["datasetId"], "analytics");
    assert_eq!(q["destinationTable"]["tableId"], "orders");
    assert_eq!(q["destinationTable"]["projectId"], "p");
    assert_eq!(q["writeDisposition"], "WRITE_TRUNCATE");
    assert_eq!(q["createDisposition"], "CREATE_IF_NEEDED");

    // A value that is not table-safe never reaches SQL.
    let mut bad = req.clone();
    bad.vars
        .insert("date".into(), "x'; DROP TABLE t; --".into());
    let err = engine.submit(&bad).await.expect_err("refused");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("not table-safe"), "{err}");
}

/// A server with BigQuery's contract for job ids: the first insert of an id creates the job,
/// every later one answers 409; a created job is DONE.
#[derive(Clone, Default)]
struct Jobs {
    created: Arc<Mutex<Vec<String>>>,
    conflicts: Arc<Mutex<usize>>,
}

async fn jobs_api(State(j): State<Jobs>, method: Method, body: String) -> impl IntoResponse {
    let done = json!({
        "jobReference": {"projectId": "p", "jobId": "x"},
        "status": {"state": "DONE"},
        "statistics": {"load": {"outputRows": "3"}},
    });
    if method == Method::POST {
        let id = serde_json::from_str::<Value>(&body).ok().and_then(|b| {
            b.pointer("/jobReference/jobId")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let Some(id) = id else {
            return (StatusCode::BAD_REQUEST, "no job id".to_owned());
        };
        // Let the other concurrent inserts arrive before this one is answered.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut created = j.created.lock().expect("lock");
        if created.contains(&id) {
            *j.conflicts.lock().expect("lock") += 1;
            let conflict =
                json!({"error": {"code": 409, "message": format!("Already Exists: Job p:{id}")}});
            return (StatusCode::CONFLICT, conflict.to_string());
        }
        created.push(id);
    }
    (StatusCode::OK, done.to_string())
}

#[tokio::test]
async fn four_concurrent_deliveries_of_one_load_create_one_job() {
    let jobs = Jobs::default();
    let url = serve(Router::new().fallback(jobs_api).with_state(jobs.clone())).await;
    let bq = Arc::new(BigQuery::new("p", None, Some(&url), &GcpAuth::Anonymous));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let bq = bq.clone();
        tasks.push(tokio::spawn(async move {
            bq.load(&load_job(), Duration::from_secs(5)).await
        }));
    }
    let mut adopted = 0;
    for t in tasks {
        let status = t.await.expect("task").expect("load");
        assert_eq!(status.state, LoadState::Done { rows: 3 });
        adopted += usize::from(status.adopted);
    }
    assert_eq!(
        *jobs.created.lock().expect("lock"),
        vec![load_job().job_id.to_string()],
        "one job is created, under the deterministic id"
    );
    assert_eq!(*jobs.conflicts.lock().expect("lock"), 3);
    assert_eq!(adopted, 3, "the other three deliveries adopt it");
}
