//! The Google adapters against local servers that answer as Google's REST APIs do. Every
//! server is behind the contract recorder (`conveyor_contract::record`), which refuses what
//! Google's front end refuses (411 without a length, 400 for a request the API does not accept)
//! and keeps each exchange for the contract check of the test run.
//!
//! BigQuery: jobs are inserted first under their deterministic id, and a 409 (the id is taken)
//! means "adopt the existing job" — one call when BigQuery answers DONE at once, no look-up
//! first; a job in a single-region dataset is read, cancelled and paged where BigQuery ran it.
//! Cloud Storage: an empty object's upload ends with a length. Pub/Sub: a pull waits for the
//! messages that are there. Secret Manager: a secret's payload is read and checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use conveyor_contract::Recording;
use conveyor_core::config::{BatchSpec, CreateDisposition, SchemaSpec, SqlJob, WriteDisposition};
use conveyor_core::event::ObjectRef;
use conveyor_core::format::Format;
use conveyor_core::names::{JobId, PipelineName, RunId, TableRef};
use conveyor_core::ports::{
    BatchEngine, BatchRequest, LoadJob, LoadState, ObjectStore, PortError, Warehouse,
};
use conveyor_gcp::{BigQuery, GcpAuth, GcsStore, PubSubRest, SecretManager, SqlEngine};
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

/// Serves `app` on a free loopback port, behind the contract recorder; the BigQuery API's
/// base URL on it.
async fn serve(app: Router) -> String {
    format!("{}/bigquery/v2", serve_as(app, "bigquery").await.0)
}

/// Serves `app` playing Google's `api` on a free loopback port, behind the contract recorder
/// (call it from the test's thread); its root URL and what it recorded.
async fn serve_as(app: Router, api: &str) -> (String, Recording) {
    let recording = Recording::new(&format!("{api} fake"), &[api], true);
    let app = conveyor_contract::record::layer(app, &recording);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, recording)
}

/// The first attempt of the `sql` job `dedupe` of a run of `orders`, with `vars`.
fn dedupe_request(sql: SqlJob, vars: &[(&str, &str)]) -> (BatchSpec, BatchRequest) {
    let run = RunId::derive(&PipelineName::parse("orders").expect("name"), &["x"]);
    let spec = BatchSpec::Sql(sql);
    let req = BatchRequest {
        job_id: JobId::derive("dedupe", &run, 1),
        run_id: run,
        attempt: 1,
        spec: spec.clone(),
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        job: "dedupe".into(),
        row: BTreeMap::new(),
    };
    (spec, req)
}

/// The BigQuery adapter on a fake of its API (`app`) behind the contract recorder.
async fn recorded_bigquery(app: Router) -> (BigQuery, Recording) {
    let (url, recording) = serve_as(app, "bigquery").await;
    let bq = BigQuery::new(
        "p",
        None,
        Some(&format!("{url}/bigquery/v2")),
        &GcpAuth::Anonymous,
    );
    (bq, recording)
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
    LoadJob::new(
        JobId::derive("load", &run, 1),
        vec![ObjectRef {
            bucket: "landing".parse().expect("bucket"),
            name: "a.csv".parse().expect("name"),
            generation: "1".into(),
            size: None,
        }],
        TableRef::parse("ds.t").expect("table"),
        Format::Csv,
    )
    .with_header_row()
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
    let (spec, req) = dedupe_request(
        SqlJob {
            query: "SELECT DISTINCT * FROM staging.orders_{date}".into(),
            destination: Some("analytics.orders".into()),
            write_disposition: Some(WriteDisposition::WriteTruncate),
            create_disposition: CreateDisposition::CreateIfNeeded,
        },
        &[("date", "2026_11_20")],
    );
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

/// BigQuery with a job in a single-region dataset: its jobs, and a query's pages, are found
/// only where BigQuery ran them (`location=asia-southeast1`); elsewhere 404, as BigQuery
/// answers.
async fn single_region(
    State(cancels): State<Arc<Mutex<u32>>>,
    method: Method,
    uri: Uri,
) -> impl IntoResponse {
    const WHERE: &str = "asia-southeast1";
    let path = uri.path().trim_start_matches("/bigquery/v2/projects/p/");
    let located = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "location=asia-southeast1");
    let job = |id: &str, state: &str| {
        json!({
            "jobReference": {"projectId": "p", "jobId": id, "location": WHERE},
            "status": {"state": state},
        })
    };
    let not_found = |what: &str| {
        (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": {"code": 404, "message": format!("Not found: Job p:{what}"), "errors": [{"reason": "notFound"}]}}),
            ),
        )
    };
    let ok = |v: Value| (StatusCode::OK, axum::Json(v));
    match (
        method.as_str(),
        path.split('/').collect::<Vec<_>>().as_slice(),
    ) {
        // Inserted where the dataset is: the answer says so.
        ("POST", ["jobs"]) => ok(job("cv-dedupe-x-a1", "RUNNING")),
        ("GET", ["jobs", id]) if located => ok(job(id, "DONE")),
        ("POST", ["jobs", id, "cancel"]) if located => {
            *cancels.lock().expect("lock") += 1;
            ok(json!({"kind": "bigquery#jobCancelResponse", "job": job(id, "RUNNING")}))
        }
        ("POST", ["queries"]) => ok(json!({
            "jobReference": {"projectId": "p", "jobId": "q1", "location": WHERE},
            "jobComplete": false,
        })),
        ("GET", ["queries", "q1"]) if located => ok(json!({
            "jobReference": {"projectId": "p", "jobId": "q1", "location": WHERE},
            "jobComplete": true,
            "schema": {"fields": [{"name": "f0_", "type": "INTEGER"}]},
            "rows": [{"f": [{"v": "7"}]}],
            "totalRows": "1",
        })),
        (_, [.., id]) => not_found(id),
        _ => not_found("?"),
    }
}

#[tokio::test]
async fn a_job_in_a_single_region_dataset_is_read_cancelled_and_paged_where_bigquery_ran_it() {
    let cancels = Arc::new(Mutex::new(0));
    let url = serve(
        Router::new()
            .fallback(single_region)
            .with_state(cancels.clone()),
    )
    .await;
    // No location configured (`conveyor status`, `conveyor replay`, a function without
    // CONVEYOR_BIGQUERY_LOCATION): BigQuery's answers say where.
    let bq = BigQuery::new("p", None, Some(&url), &GcpAuth::Anonymous);
    let engine = SqlEngine::new(bq.clone());
    let (spec, req) = dedupe_request(
        SqlJob {
            query: "SELECT 1".into(),
            destination: None,
            write_disposition: None,
            create_disposition: CreateDisposition::CreateIfNeeded,
        },
        &[],
    );
    engine.submit(&req).await.expect("submit");
    let state = engine
        .state(&spec, &req.job_id)
        .await
        .expect("the job is found where it ran");
    assert_eq!(state.state, "DONE");
    engine.cancel(&spec, &req.job_id).await.expect("cancel");
    assert_eq!(
        *cancels.lock().expect("lock"),
        1,
        "the cancel reached the job"
    );
    let rows = bq
        .row_count(&TableRef::parse("ds.t").expect("table"))
        .await
        .expect("the query's pages are read where it ran");
    assert_eq!(rows, 7);
}

#[tokio::test]
async fn an_empty_object_ends_its_upload_with_a_length_google_accepts() {
    // A `_SUCCESS` marker, an empty window object: the session's last PUT carries no bytes,
    // `Content-Range: bytes */0`, and (as Google's front end insists) `Content-Length: 0`.
    let session = Arc::new(Mutex::new(String::new()));
    let at = session.clone();
    let app = Router::new().fallback(move |method: Method, uri: Uri, headers: axum::http::HeaderMap| {
        let at = at.clone();
        async move {
            let object = json!({"bucket": "landing", "name": "_SUCCESS", "generation": "1", "size": "0", "crc32c": "AAAAAA==", "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg=="});
            if method == Method::POST {
                let location = format!("{}{}&upload_id=u1", at.lock().expect("lock"), uri);
                return ([("location", location)], axum::Json(json!({}))).into_response();
            }
            assert_eq!(headers.get("content-range").and_then(|v| v.to_str().ok()), Some("bytes */0"));
            axum::Json(object).into_response()
        }
    });
    let (base, recording) = serve_as(app, "storage").await;
    *session.lock().expect("lock") = base.clone();
    let store = GcsStore::new(&base, GcpAuth::Anonymous);
    let meta = store
        .put(
            &"landing".parse().expect("bucket"),
            &"_SUCCESS".parse().expect("name"),
            Box::pin(std::io::Cursor::new(Vec::new())),
        )
        .await
        .expect("the empty object is stored");
    assert_eq!(meta.object.size, Some(0));
    let seen = recording.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].method, "PUT");
    assert_eq!(
        seen[1].headers.get("content-length").map(String::as_str),
        Some("0")
    );
}

#[tokio::test]
async fn a_pull_waits_for_the_messages_that_are_there() {
    // Pub/Sub may answer a pull with `returnImmediately: true` with nothing while messages
    // wait (the field is deprecated); a pull that waits gets them.
    let app = Router::new().fallback(|body: String| async move {
        let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if request["returnImmediately"] == true {
            return axum::Json(json!({}));
        }
        axum::Json(json!({"receivedMessages": [{
            "ackId": "ack-1",
            "message": {"data": "eyJwaXBlbGluZSI6ICJzYWxlcyJ9", "messageId": "11", "publishTime": "2026-11-20T08:00:00Z",
                        "attributes": {"CloudPubSubDeadLetterSourceSubscription": "to-submit"}},
            "deliveryAttempt": 5,
        }]}))
    });
    let (base, recording) = serve_as(app, "pubsub").await;
    let pubsub = PubSubRest::new("p", Some(&base), GcpAuth::Anonymous);
    let pulled = pubsub.pull("conveyor-dead-letter", 10).await.expect("pull");
    assert_eq!(pulled.len(), 1, "the waiting message is pulled");
    assert_eq!(pulled[0].message_id, "11");
    assert_eq!(pulled[0].delivery_attempt, Some(5));
    let sent = recording.requests()[0].body.clone().expect("a JSON body");
    assert!(sent.get("returnImmediately").is_none(), "{sent}");
}

#[tokio::test]
async fn a_secret_is_read_from_its_version_and_checked_against_its_crc32c() {
    let payload = b"aws_access_key_id=AKIA...";
    let crc = crc32c::crc32c(payload).to_string();
    let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload);
    let app = Router::new().fallback(move |uri: Uri| {
        let (crc, data) = (crc.clone(), data.clone());
        async move {
            assert_eq!(
                uri.path(),
                "/v1/projects/p/secrets/s3-creds/versions/latest:access"
            );
            axum::Json(json!({
                "name": "projects/p/secrets/s3-creds/versions/3",
                "payload": {"data": data, "dataCrc32c": crc},
            }))
        }
    });
    let (base, recording) = serve_as(app, "secretmanager").await;
    let secrets = SecretManager::new(&base, GcpAuth::Anonymous);
    let secret =
        conveyor_core::config::SecretRef::parse("projects/p/secrets/s3-creds").expect("secret");
    let value = conveyor_core::ports::SecretStore::access(&secrets, &secret)
        .await
        .expect("access");
    assert_eq!(value.expose(), payload);
    assert_eq!(recording.requests().len(), 1);
}

#[tokio::test]
async fn an_older_run_log_table_is_widened_by_a_patch_of_its_schema() {
    // The table exists (409) with the columns of an older release: the new ones are added
    // with tables.patch, keeping the old ones, and the row is then inserted.
    let patched = Arc::new(Mutex::new(Value::Null));
    let keep = patched.clone();
    let app = Router::new().fallback(move |method: Method, uri: Uri, body: String| {
        let keep = keep.clone();
        async move {
            let path = uri.path().to_owned();
            match method.as_str() {
                "POST" if path.ends_with("/tables") => (
                    StatusCode::CONFLICT,
                    axum::Json(json!({"error": {"code": 409, "message": "Already Exists: Table p:ops.run_log", "errors": [{"reason": "duplicate"}]}})),
                ),
                "GET" => (StatusCode::OK, axum::Json(json!({
                    "tableReference": {"projectId": "p", "datasetId": "ops", "tableId": "run_log"},
                    "schema": {"fields": [
                        {"name": "event_id", "type": "STRING", "mode": "REQUIRED"},
                        {"name": "run_id", "type": "STRING", "mode": "REQUIRED"},
                    ]},
                }))),
                "PATCH" => {
                    let sent: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    *keep.lock().expect("lock") = sent.clone();
                    (StatusCode::OK, axum::Json(json!({
                        "tableReference": {"projectId": "p", "datasetId": "ops", "tableId": "run_log"},
                        "schema": sent["schema"],
                    })))
                }
                _ => (StatusCode::OK, axum::Json(json!({"kind": "bigquery#tableDataInsertAllResponse"}))),
            }
        }
    });
    let (bq, recording) = recorded_bigquery(app).await;
    let row = conveyor_core::ports::RunLogRow {
        event_id: "e1".into(),
        run_id: "r1".into(),
        status: "SUCCEEDED".into(),
        step: "load".into(),
        environment: "prod".into(),
        detail: "{}".into(),
        ..Default::default()
    };
    conveyor_core::ports::RunLog::record(
        &bq,
        &TableRef::parse("ops.run_log").expect("table"),
        &row,
    )
    .await
    .expect("record");
    let sent = patched.lock().expect("lock").clone();
    let names: Vec<&str> = sent["schema"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        &names[..2],
        ["event_id", "run_id"],
        "the old columns stay first"
    );
    assert!(
        names.contains(&"job") && names.contains(&"detail"),
        "{names:?}"
    );
    let methods: Vec<String> = recording
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["POST", "GET", "PATCH", "POST"]);
}

#[tokio::test]
async fn a_load_sends_only_the_settings_bigquery_accepts_and_honours() {
    // Schema update options on a truncated table are refused by BigQuery (400), and
    // maxBadRecords on Parquet is ignored: neither goes out (validate refuses both in a
    // pipeline file; a LoadJob made otherwise is sent as BigQuery would take it).
    let (bq, recording) =
        recorded_bigquery(Router::new().fallback(|| async { axum::Json(done(4)) })).await;
    let job = LoadJob {
        format: Format::Parquet,
        write: WriteDisposition::WriteTruncate,
        max_bad_records: 3,
        csv: conveyor_core::config::CsvOptions::default(),
        schema_update_options: vec![conveyor_core::config::SchemaUpdateOption::AllowFieldAddition],
        ..load_job()
    };
    let status = bq.load(&job, Duration::from_secs(5)).await.expect("load");
    assert_eq!(status.state, LoadState::Done { rows: 4 });
    let sent = recording.requests()[0].body.clone().expect("a JSON body");
    let load = &sent["configuration"]["load"];
    assert_eq!(load["writeDisposition"], "WRITE_TRUNCATE");
    assert!(load.get("schemaUpdateOptions").is_none(), "{load}");
    assert!(load.get("maxBadRecords").is_none(), "{load}");
    // Appending keeps them (and CSV its maxBadRecords).
    let appending = LoadJob {
        format: Format::Csv,
        write: WriteDisposition::WriteAppend,
        ..job
    };
    bq.load(&appending, Duration::from_secs(5))
        .await
        .expect("load");
    let sent = recording.requests()[1].body.clone().expect("a JSON body");
    let load = &sent["configuration"]["load"];
    assert_eq!(load["schemaUpdateOptions"][0], "ALLOW_FIELD_ADDITION");
    assert_eq!(load["maxBadRecords"], 3);
}

/// A fake of the three calls a check's query job makes, each answered in its own shape:
/// `jobs.insert` (`insert`: a DONE job, or a 409), `jobs.get` (the DONE job) and
/// `jobs.getQueryResults` (the result, `observed`). Records `METHOD PATH` of each call.
async fn query_job_fake(
    insert: (u16, Value),
    observed: &str,
) -> (Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<Value>>>, BigQuery) {
    let job = json!({
        "jobReference": {"projectId": "p", "jobId": "cv-orders-check0-x"},
        "status": {"state": "DONE"},
    });
    let results = json!({
        "kind": "bigquery#getQueryResultsResponse",
        "jobReference": {"projectId": "p", "jobId": "cv-orders-check0-x"},
        "jobComplete": true,
        "schema": {"fields": [{"name": "observed", "type": "INTEGER"}]},
        "rows": [{"f": [{"v": observed}]}],
        "totalRows": "1",
    });
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (c, b) = (calls.clone(), bodies.clone());
    let app = Router::new().fallback(move |method: Method, uri: Uri, body: String| {
        let (calls, bodies) = (c.clone(), b.clone());
        let (insert, job, results) = (insert.clone(), job.clone(), results.clone());
        async move {
            calls
                .lock()
                .expect("lock")
                .push(format!("{method} {}", uri.path()));
            let (status, answer) = if method == Method::POST {
                bodies
                    .lock()
                    .expect("lock")
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                insert
            } else if uri.path().contains("/queries/") {
                (200, results)
            } else {
                (200, job)
            };
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(answer),
            )
        }
    });
    let url = serve(app).await;
    let bq = BigQuery::new("p", None, Some(&url), &GcpAuth::Anonymous);
    (calls, bodies, bq)
}

#[tokio::test]
async fn a_check_query_runs_as_a_job_under_its_id_and_a_409_reads_that_jobs_result() {
    let id = JobId::parse("cv-orders-check0-x").expect("id");
    let sql = "SELECT COUNT(*) AS observed FROM `ds.t`";
    let done = json!({
        "jobReference": {"projectId": "p", "jobId": "cv-orders-check0-x"},
        "status": {"state": "DONE"},
    });
    let (calls, bodies, bq) = query_job_fake((200, done), "3").await;
    let rows = bq.select_as(&id, sql, 1).await.expect("rows");
    assert_eq!(rows[0].get("observed").map(String::as_str), Some("3"));
    let seen = calls.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            "POST /bigquery/v2/projects/p/jobs",
            "GET /bigquery/v2/projects/p/queries/cv-orders-check0-x"
        ]
    );
    let bodies = bodies.lock().expect("lock").clone();
    assert_eq!(bodies[0]["jobReference"]["jobId"], "cv-orders-check0-x");
    assert_eq!(bodies[0]["configuration"]["query"]["query"], sql);
    assert_eq!(bodies[0]["configuration"]["query"]["useLegacySql"], false);

    // Run again (its first read was interrupted): the id is taken, the same job's result is read.
    let conflict = json!({"error": {"code": 409, "message": "Already Exists: Job p:x", "errors": [{"reason": "duplicate"}]}});
    let (calls, _, bq) = query_job_fake((409, conflict), "5").await;
    let rows = bq.select_as(&id, sql, 1).await.expect("rows");
    assert_eq!(rows[0].get("observed").map(String::as_str), Some("5"));
    let seen = calls.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[1].ends_with("/jobs/cv-orders-check0-x"), "{seen:?}");
    assert!(seen[2].ends_with("/queries/cv-orders-check0-x"), "{seen:?}");
}

#[tokio::test]
async fn a_check_query_job_that_failed_is_a_permanent_error_with_its_message() {
    let id = JobId::parse("cv-orders-check1-x").expect("id");
    let failed = json!({
        "jobReference": {"projectId": "p", "jobId": "cv-orders-check1-x"},
        "status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "message": "Unrecognized name: nope"}},
    });
    let (_, bq) = start((200, failed), (500, "{}")).await;
    let err = bq
        .select_as(&id, "SELECT nope", 1)
        .await
        .expect_err("failed");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("Unrecognized name: nope"), "{err}");
}

#[tokio::test]
async fn a_csv_load_sends_its_delimiter_quote_null_marker_encoding_and_jagged_rows() {
    let (bq, recording) =
        recorded_bigquery(Router::new().fallback(|| async { axum::Json(done(2)) })).await;
    let job = LoadJob {
        csv: conveyor_core::config::CsvOptions {
            field_delimiter: Some("tab".to_owned()),
            quote: Some(String::new()),
            null_marker: Some("\\N".to_owned()),
            encoding: Some(conveyor_core::config::CsvEncoding::Iso88591),
            allow_jagged_rows: true,
            skip_leading_rows: Some(2),
        },
        ..load_job()
    };
    bq.load(&job, Duration::from_secs(5)).await.expect("load");
    let sent = recording.requests()[0].body.clone().expect("a JSON body");
    let load = &sent["configuration"]["load"];
    assert_eq!(load["fieldDelimiter"], "\\t");
    assert_eq!(load["quote"], "");
    assert_eq!(load["nullMarker"], "\\N");
    assert_eq!(load["encoding"], "ISO-8859-1");
    assert_eq!(load["allowJaggedRows"], true);
    assert_eq!(load["skipLeadingRows"], 2);
    // Unset, BigQuery's defaults apply: nothing is sent (skipLeadingRows unset lets
    // autodetect find a header; 0 would say there is none).
    let plain = LoadJob {
        csv: conveyor_core::config::CsvOptions::default(),
        ..load_job()
    };
    bq.load(&plain, Duration::from_secs(5)).await.expect("load");
    let sent = recording.requests()[1].body.clone().expect("a JSON body");
    let load = &sent["configuration"]["load"];
    for unset in [
        "fieldDelimiter",
        "quote",
        "nullMarker",
        "encoding",
        "allowJaggedRows",
        "skipLeadingRows",
    ] {
        assert!(load.get(unset).is_none(), "{unset}: {load}");
    }
}

#[tokio::test]
async fn a_load_into_one_partition_names_the_table_with_its_decorator() {
    let (bq, recording) =
        recorded_bigquery(Router::new().fallback(|| async { axum::Json(done(1)) })).await;
    let job = LoadJob {
        write: WriteDisposition::WriteTruncate,
        partition: Some(conveyor_core::config::Partition {
            field: None,
            kind: conveyor_core::config::PartitionKind::Day,
            decorator: Some("{date_nodash}".to_owned()),
        }),
        partition_id: Some("20261120".to_owned()),
        schema_update_options: vec![conveyor_core::config::SchemaUpdateOption::AllowFieldAddition],
        ..load_job()
    };
    bq.load(&job, Duration::from_secs(5)).await.expect("load");
    let sent = recording.requests()[0].body.clone().expect("a JSON body");
    let load = &sent["configuration"]["load"];
    assert_eq!(load["destinationTable"]["tableId"], "t$20261120");
    assert_eq!(load["writeDisposition"], "WRITE_TRUNCATE");
    assert_eq!(load["timePartitioning"]["type"], "DAY");
    // BigQuery takes schema update options on a truncate of one partition.
    assert_eq!(load["schemaUpdateOptions"][0], "ALLOW_FIELD_ADDITION");
}

#[tokio::test]
async fn a_load_into_another_projects_dataset_names_that_project() {
    let (bq, recording) =
        recorded_bigquery(Router::new().fallback(|| async { axum::Json(done(1)) })).await;
    let job = LoadJob {
        table: TableRef::parse("other-proj-7.ds.t").expect("table"),
        ..load_job()
    };
    bq.load(&job, Duration::from_secs(5)).await.expect("load");
    let sent = recording.requests()[0].body.clone().expect("a JSON body");
    let table = &sent["configuration"]["load"]["destinationTable"];
    assert_eq!(table["projectId"], "other-proj-7");
    assert_eq!(table["datasetId"], "ds");
    // The job itself runs in the deployment's project.
    let target = &recording.requests()[0].target;
    assert!(target.contains("/projects/p/jobs"), "{target}");
}

#[tokio::test]
async fn a_failed_loads_error_names_the_file_each_detail_is_about() {
    let failed = json!({
        "jobReference": {"projectId": "p", "jobId": "x"},
        "status": {
            "state": "DONE",
            "errorResult": {"reason": "invalid", "message": "Error while reading data, error message: CSV table encountered too many errors"},
            "errors": [
                {"reason": "invalid", "location": "gs://landing/b.csv", "message": "Could not parse 'three' as INT64 for field n (position 0) starting at location 2"},
                {"reason": "invalid", "message": "Error while reading data, error message: CSV table encountered too many errors"}
            ]
        }
    });
    let (bq, _recording) = recorded_bigquery(Router::new().fallback(move || {
        let failed = failed.clone();
        async move { axum::Json(failed) }
    }))
    .await;
    let status = bq
        .load(&load_job(), Duration::from_secs(5))
        .await
        .expect("load");
    match status.state {
        LoadState::Failed { message, transient } => {
            assert!(!transient);
            assert!(
                message.contains("gs://landing/b.csv: Could not parse 'three'"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Issue 26 item 9: the schema a batch's NDJSON files add up to (the core's union of their
/// keys) goes out as an explicit schema, every field NULLABLE, without `autodetect`, and with
/// `ALLOW_FIELD_ADDITION` when appending so BigQuery adds the new columns to the table.
#[tokio::test]
async fn a_batchs_union_schema_is_sent_with_allow_field_addition() {
    let (bq, recording) =
        recorded_bigquery(Router::new().fallback(|| async { axum::Json(done(3)) })).await;
    let column = |name: &str, ty| conveyor_core::format::Column {
        name: name.to_owned(),
        ty,
        nullable: true,
    };
    let source = |name: &str| ObjectRef {
        bucket: "landing".parse().expect("bucket"),
        name: name.parse().expect("name"),
        generation: "1".into(),
        size: None,
    };
    let job = LoadJob {
        format: Format::Ndjson,
        sources: vec![source("ev/d1/a.json"), source("ev/d1/b.json")],
        schema: SchemaSpec::Columns(vec![
            column("id", conveyor_core::format::ColumnType::Int64),
            column("country", conveyor_core::format::ColumnType::String),
        ]),
        schema_update_options: vec![conveyor_core::config::SchemaUpdateOption::AllowFieldAddition],
        csv: conveyor_core::config::CsvOptions::default(),
        ..load_job()
    };
    bq.load(&job, Duration::from_secs(5)).await.expect("load");
    let sent = recording.requests()[0].body.clone().expect("a JSON body");
    let load = &sent["configuration"]["load"];
    assert_eq!(load["sourceFormat"], "NEWLINE_DELIMITED_JSON");
    assert_eq!(
        load["sourceUris"],
        json!(["gs://landing/ev/d1/a.json", "gs://landing/ev/d1/b.json"])
    );
    assert!(load.get("autodetect").is_none(), "{load}");
    assert_eq!(
        load["schema"]["fields"],
        json!([
            {"name": "id", "type": "INT64", "mode": "NULLABLE"},
            {"name": "country", "type": "STRING", "mode": "NULLABLE"},
        ])
    );
    assert_eq!(load["writeDisposition"], "WRITE_APPEND");
    assert_eq!(load["schemaUpdateOptions"], json!(["ALLOW_FIELD_ADDITION"]));
}

/// Issue 26: the existing table's columns are read with `tables.get` (a batch's union schema
/// names them too); a table that does not exist is `None`, and so is one with a nested or
/// repeated column, which a flat schema cannot name.
#[tokio::test]
async fn a_tables_columns_are_read_with_tables_get_and_none_when_missing_or_nested() {
    let (url, recording) = serve_as(
        Router::new().fallback(|uri: Uri| async move {
            let path = uri.path().to_owned();
            if path.ends_with("/tables/missing") {
                return (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"error": {"code": 404, "message": "Not found: Table p:ds.missing", "errors": [{"reason": "notFound"}]}})),
                );
            }
            let fields = if path.ends_with("/tables/nested") {
                json!([{"name": "id", "type": "INTEGER"}, {"name": "tags", "type": "STRING", "mode": "REPEATED"}])
            } else {
                json!([{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}, {"name": "legacy", "type": "STRING"}])
            };
            (
                StatusCode::OK,
                axum::Json(json!({"kind": "bigquery#table", "schema": {"fields": fields}})),
            )
        }),
        "bigquery",
    )
    .await;
    let bq = BigQuery::new(
        "p",
        None,
        Some(&format!("{url}/bigquery/v2")),
        &GcpAuth::Anonymous,
    );
    let table = |t: &str| TableRef::parse(t).expect("table");
    let columns = bq
        .table_columns(&table("ds.t"))
        .await
        .expect("read")
        .expect("a table");
    assert_eq!(
        columns,
        [
            conveyor_core::format::Column {
                name: "id".into(),
                ty: conveyor_core::format::ColumnType::Int64,
                nullable: false,
            },
            conveyor_core::format::Column {
                name: "legacy".into(),
                ty: conveyor_core::format::ColumnType::String,
                nullable: true,
            },
        ]
    );
    assert_eq!(
        bq.table_columns(&table("ds.missing")).await.expect("read"),
        None
    );
    assert_eq!(
        bq.table_columns(&table("ds.nested")).await.expect("read"),
        None
    );
    let paths: Vec<String> = recording
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert_eq!(
        paths[0], "GET /bigquery/v2/projects/p/datasets/ds/tables/t",
        "{paths:?}"
    );
}
