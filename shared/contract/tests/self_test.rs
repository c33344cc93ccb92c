//! The validator, fed requests with planted errors, flags each; the same requests without the
//! error pass. And the table of response fields the adapters read matches Google's schemas.

use std::collections::BTreeMap;

use conveyor_contract::kinds::KINDS;
use conveyor_contract::reads::{READS, missing};
use conveyor_contract::{Documents, Finding, Recorded, check, check_all};
use serde_json::{Value, json};

fn docs() -> &'static Documents {
    Documents::shared().unwrap_or_else(|e| panic!("{e}"))
}

/// A request as an adapter sends it: JSON bodies with their type and length.
fn request(apis: &[&str], method: &str, target: &str, body: Option<Value>) -> Recorded {
    let mut headers = BTreeMap::new();
    let len = body.as_ref().map_or(0, |b| b.to_string().len());
    if body.is_some() {
        headers.insert("content-type".to_owned(), "application/json".to_owned());
    }
    if matches!(method, "POST" | "PUT" | "PATCH") {
        headers.insert("content-length".to_owned(), len.to_string());
    }
    Recorded {
        test: "self_test".to_owned(),
        source: "planted".to_owned(),
        apis: apis.iter().map(|a| (*a).to_owned()).collect(),
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body_len: len,
        body,
        status: 200,
        response: None,
        location: None,
        fake: true,
    }
}

fn findings(r: &Recorded) -> Vec<Finding> {
    check(docs(), r, &[])
}

/// Asserts `r` has exactly one finding, naming `needle`; returns it.
#[track_caller]
fn flagged(r: &Recorded, needle: &str) -> Finding {
    let found = findings(r);
    assert!(
        found.iter().any(|f| f.message.contains(needle)),
        "expected a finding with {needle:?} for {} {}: {found:#?}",
        r.method,
        r.target
    );
    found
        .into_iter()
        .find(|f| f.message.contains(needle))
        .expect("found")
}

#[track_caller]
fn clean(r: &Recorded) {
    let found = findings(r);
    assert!(found.is_empty(), "{} {}: {found:#?}", r.method, r.target);
}

fn load_job(load: Value) -> Value {
    json!({
        "jobReference": {"projectId": "p", "jobId": "cv-load-x-a1", "location": "EU"},
        "configuration": {"load": load},
    })
}

fn csv_load() -> Value {
    json!({
        "sourceUris": ["gs://landing/a.csv"],
        "destinationTable": {"projectId": "p", "datasetId": "ds", "tableId": "t"},
        "sourceFormat": "CSV",
        "writeDisposition": "WRITE_APPEND",
        "createDisposition": "CREATE_IF_NEEDED",
        "maxBadRecords": 2,
        "skipLeadingRows": 1,
        "autodetect": true,
    })
}

const JOBS: &str = "/bigquery/v2/projects/p/jobs";

#[test]
fn a_well_formed_load_job_passes() {
    clean(&request(
        &["bigquery"],
        "POST",
        JOBS,
        Some(load_job(csv_load())),
    ));
}

#[test]
fn an_unknown_field_is_flagged_and_refused() {
    let mut load = csv_load();
    load["sourceUri"] = json!("gs://landing/a.csv");
    let f = flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "unknown field",
    );
    assert!(f.message.contains("configuration.load.sourceUri"), "{f:?}");
    assert!(f.refused);
    assert_eq!(f.method.as_deref(), Some("bigquery.jobs.insert"));
}

#[test]
fn a_value_of_the_wrong_type_is_flagged() {
    let mut load = csv_load();
    load["autodetect"] = json!("true");
    flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "a string where the schema says boolean",
    );
    let mut load = csv_load();
    load["skipLeadingRows"] = json!(1.5);
    flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "not an integer",
    );
}

#[test]
fn a_value_outside_its_enum_is_flagged() {
    // BigQuery lists a field's values in its description, not in an `enum`.
    let mut load = csv_load();
    load["writeDisposition"] = json!("WRITE_SOMETIMES");
    flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "none of the values the field's description lists",
    );
    let mut load = csv_load();
    load["schemaUpdateOptions"] = json!(["ALLOW_FIELD_RENAMING"]);
    flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "schemaUpdateOptions[0]",
    );
    // The newer APIs have enums.
    flagged(
        &request(
            &["dataflow"],
            "PUT",
            "/v1b3/projects/p/locations/r/jobs/j1",
            Some(json!({"requestedState": "JOB_STATE_STOPPING_SOON"})),
        ),
        "not one of the enum's values",
    );
}

#[test]
fn a_post_without_content_length_is_flagged() {
    let mut r = request(
        &["bigquery"],
        "POST",
        "/bigquery/v2/projects/p/jobs/j1/cancel",
        None,
    );
    clean(&r);
    r.headers.remove("content-length");
    let f = flagged(&r, "without Content-Length");
    assert!(f.refused);
    assert_eq!(f.method.as_deref(), Some("bigquery.jobs.cancel"));
}

#[test]
fn an_unknown_or_malformed_query_parameter_is_flagged() {
    clean(&request(
        &["bigquery"],
        "GET",
        "/bigquery/v2/projects/p/jobs/j1?location=EU",
        None,
    ));
    flagged(
        &request(
            &["bigquery"],
            "GET",
            "/bigquery/v2/projects/p/jobs/j1?region=EU",
            None,
        ),
        "unknown query parameter region",
    );
    flagged(
        &request(
            &["bigquery"],
            "GET",
            "/bigquery/v2/projects/p/queries/j1?timeoutMs=soon",
            None,
        ),
        "is not integer",
    );
    flagged(
        &request(
            &["dataflow"],
            "GET",
            "/v1b3/projects/p/locations/r/jobs?name=x&filter=EVERYTHING",
            None,
        ),
        "not one of the enum's values",
    );
}

#[test]
fn an_unknown_path_or_verb_is_flagged() {
    flagged(
        &request(
            &["bigquery"],
            "GET",
            "/bigquery/v2/projects/p/jobz/j1",
            None,
        ),
        "no method of bigquery has this path",
    );
    flagged(
        &request(&["bigquery"], "DELETE", JOBS, None),
        "no DELETE method on this path",
    );
    // `{+topic}` may hold slashes, but only in the form its pattern says.
    flagged(
        &request(
            &["pubsub"],
            "POST",
            "/v1/projects/p/topic/t:publish",
            Some(json!({"messages": []})),
        ),
        "does not match ^projects/[^/]+/topics/[^/]+$",
    );
}

#[test]
fn a_missing_required_field_is_flagged() {
    clean(&request(
        &["pubsub"],
        "POST",
        "/v1/projects/p/subscriptions/s:pull",
        Some(json!({"maxMessages": 10})),
    ));
    flagged(
        &request(
            &["pubsub"],
            "POST",
            "/v1/projects/p/subscriptions/s:pull",
            Some(json!({})),
        ),
        "maxMessages: required, missing",
    );
    let mut load = csv_load();
    load.as_object_mut().expect("object").remove("sourceUris");
    flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "sourceUris: required, missing",
    );
}

#[test]
fn a_json_body_of_another_content_type_is_flagged() {
    let mut r = request(&["bigquery"], "POST", JOBS, Some(load_job(csv_load())));
    r.headers
        .insert("content-type".to_owned(), "text/plain".to_owned());
    flagged(&r, "without Content-Type: application/json");
}

#[test]
fn a_deprecated_field_is_flagged() {
    flagged(
        &request(
            &["pubsub"],
            "POST",
            "/v1/projects/p/subscriptions/s:pull",
            Some(json!({"maxMessages": 10, "returnImmediately": true})),
        ),
        "returnImmediately: deprecated",
    );
}

#[test]
fn schema_update_options_are_refused_without_append_or_a_partition_decorator() {
    let mut load = csv_load();
    load["schemaUpdateOptions"] = json!(["ALLOW_FIELD_ADDITION"]);
    clean(&request(
        &["bigquery"],
        "POST",
        JOBS,
        Some(load_job(load.clone())),
    ));
    load["writeDisposition"] = json!("WRITE_TRUNCATE");
    let f = flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load.clone()))),
        "schemaUpdateOptions",
    );
    assert!(f.refused);
    load["destinationTable"]["tableId"] = json!("t$20261120");
    clean(&request(
        &["bigquery"],
        "POST",
        JOBS,
        Some(load_job(load.clone())),
    ));
    load["writeDisposition"] = json!("WRITE_EMPTY");
    flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "schemaUpdateOptions",
    );
}

#[test]
fn max_bad_records_on_a_columnar_format_is_flagged_as_ignored() {
    let mut load = csv_load();
    load["sourceFormat"] = json!("PARQUET");
    load.as_object_mut()
        .expect("object")
        .remove("skipLeadingRows");
    let f = flagged(
        &request(&["bigquery"], "POST", JOBS, Some(load_job(load))),
        "maxBadRecords: ignored for PARQUET",
    );
    assert!(!f.refused, "BigQuery ignores it rather than refusing");
}

#[test]
fn a_fakes_answer_is_checked_against_the_response_schema() {
    let mut r = request(
        &["dataproc"],
        "GET",
        "/v1/projects/p/locations/us-central1/batches/b1",
        None,
    );
    r.response =
        Some(json!({"name": "projects/p/locations/us-central1/batches/b1", "state": "RUNNING"}));
    clean(&r);
    r.response = Some(json!({"state": "HALF_DONE"}));
    flagged(&r, "not one of the enum's values");
    r.response = Some(json!({"state": "RUNNING", "progress": 0.5}));
    flagged(&r, "a field Google's answer does not have");
    // An emulator's answer is not ours to check.
    r.fake = false;
    clean(&r);
}

#[test]
fn upload_chunks_must_say_which_bytes_they_carry() {
    let start = "/upload/storage/v1/b/landing/o?uploadType=resumable&name=a.csv";
    let mut begin = request(&["storage"], "POST", start, Some(json!({})));
    begin.location = Some("http://127.0.0.1:9/upload/resumable/abc".to_owned());
    let mut chunk = request(&["storage"], "PUT", "/upload/resumable/abc", None);
    chunk.body_len = 10;
    chunk
        .headers
        .insert("content-length".to_owned(), "10".to_owned());
    chunk
        .headers
        .insert("content-range".to_owned(), "bytes 0-9/10".to_owned());
    let (found, kinds) = check_all(docs(), &[begin.clone(), chunk.clone()]);
    assert!(found.is_empty(), "{found:#?}");
    assert!(kinds.contains("storage.objects.insert (resumable upload chunk)"));
    chunk
        .headers
        .insert("content-range".to_owned(), "bytes 0-8/10".to_owned());
    let (found, _) = check_all(docs(), &[begin.clone(), chunk.clone()]);
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("for a body of 10 bytes")),
        "{found:#?}"
    );
    // The empty object's last chunk: no bytes, the total only, and still a length.
    let mut last = request(&["storage"], "PUT", "/upload/resumable/abc", None);
    last.headers
        .insert("content-range".to_owned(), "bytes */0".to_owned());
    let (found, _) = check_all(docs(), &[begin.clone(), last.clone()]);
    assert!(found.is_empty(), "{found:#?}");
    last.headers.remove("content-length");
    let (found, _) = check_all(docs(), &[begin, last]);
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("without Content-Length")),
        "{found:#?}"
    );
}

#[test]
fn cdap_routes_are_checked_against_cdaps_handlers() {
    let runs = "/api/v3/namespaces/default/apps/p/workflows/DataPipelineWorkflow/runs";
    clean(&request(
        &["cdap"],
        "GET",
        &format!("{runs}?limit=100"),
        None,
    ));
    flagged(
        &request(&["cdap"], "GET", &format!("{runs}?max=100"), None),
        "unknown query parameter max",
    );
    flagged(
        &request(&["cdap"], "POST", &format!("{runs}/r1/halt"), None),
        "no CDAP route",
    );
    let start = "/api/v3/namespaces/default/start";
    clean(&request(
        &["cdap"],
        "POST",
        start,
        Some(
            json!([{"appId": "p", "programType": "workflow", "programId": "DataPipelineWorkflow", "runtimeargs": {"a": "b"}}]),
        ),
    ));
    flagged(
        &request(
            &["cdap"],
            "POST",
            start,
            Some(json!([{"appId": "p", "programType": "workflow", "runtimeArgs": {"a": "b"}}])),
        ),
        "unknown field",
    );
    let mut get = request(&["cdap"], "GET", &format!("{runs}/r1"), None);
    get.response = Some(json!({"runid": "r1", "status": "DONE"}));
    flagged(&get, "is not a run status");
}

#[test]
fn a_read_of_a_field_google_does_not_send_is_flagged() {
    assert_eq!(
        missing(docs(), &[("bigquery.jobs.get", "status.phase")]),
        ["bigquery.jobs.get: its answer (Job) has no status.phase"]
    );
    assert_eq!(
        missing(
            docs(),
            &[(
                "pubsub.projects.subscriptions.pull",
                "receivedMessages[].message.body"
            )]
        )
        .len(),
        1
    );
    assert!(missing(docs(), &[("bigquery.jobs.query", "rows[].f[].v")]).is_empty());
}

#[test]
fn every_field_the_adapters_read_is_in_googles_answers() {
    assert_eq!(missing(docs(), READS), Vec::<String>::new());
}

#[test]
fn every_request_kind_is_a_method_of_the_documents_or_a_cdap_route() {
    let ids: Vec<&str> = docs().method_ids().collect();
    for kind in KINDS {
        assert!(
            ids.contains(kind)
                || kind.starts_with("cdap.")
                || kind.ends_with("(resumable upload chunk)"),
            "{kind}"
        );
    }
}

/// Sends raw bytes to `addr` and reads the status line of the answer.
async fn raw(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_recorded_fake_refuses_as_googles_front_end_does() {
    use conveyor_contract::Recording;
    // Planted errors: kept out of the run's contract check.
    let recording = Recording::new("a fake", &["bigquery"], true).in_memory_only();
    let app = conveyor_contract::record::layer(
        axum::Router::new().fallback(|| async { axum::Json(json!({})) }),
        &recording,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cancel = "/bigquery/v2/projects/p/jobs/j1/cancel";
    let status = raw(
        &addr,
        &format!("POST {cancel} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(status.contains(" 411 "), "{status}");
    let status = raw(
        &addr,
        &format!(
            "POST {cancel} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
    let body = r#"{"configuration":{"load":{"sourceUri":"gs://b/a"}}}"#;
    let status = raw(
        &addr,
        &format!(
            "POST {JOBS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    // A combination BigQuery refuses: schema update options on a truncated table.
    let mut load = csv_load();
    load["writeDisposition"] = json!("WRITE_TRUNCATE");
    load["schemaUpdateOptions"] = json!(["ALLOW_FIELD_ADDITION"]);
    let body = load_job(load).to_string();
    let status = raw(
        &addr,
        &format!(
            "POST {JOBS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    let seen = recording.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [411, 200, 400, 400]
    );
    assert_eq!(
        seen[2]
            .response
            .as_ref()
            .map(|r| r["error"]["status"].clone()),
        Some(json!("INVALID_ARGUMENT"))
    );
    assert!(
        seen[0]
            .test
            .ends_with("a_recorded_fake_refuses_as_googles_front_end_does"),
        "{}",
        seen[0].test
    );
}
