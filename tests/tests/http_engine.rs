//! `engine: http` on the embedded chain, against a local HTTP server: the call carries the ID
//! token for its audience and the job id, success is by status code, long-running work is
//! followed through its status URL, a call is sent again only where that is safe, and every
//! call has a timeout.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use conveyor_core::engines::Engines;
use conveyor_core::ports::RunLogRow;
use conveyor_gcp::engines::{FixedIdToken, HttpEngine};

/// One call the endpoint received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Answers of the calls to `/export`, in order; the last one sticks (default 202).
    answers: VecDeque<(u16, String)>,
    /// States of the status reads, in order; the last one sticks.
    states: VecDeque<String>,
    /// How long `/export` takes to answer.
    delay: Duration,
}

/// A local endpoint: `/export` (the work) and `/jobs/ID` (its status).
#[derive(Clone)]
struct Endpoint {
    inner: Arc<Mutex<Inner>>,
    url: String,
}

impl Endpoint {
    async fn start(answers: &[(u16, &str)], states: &[&str]) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            answers: answers.iter().map(|(s, b)| (*s, (*b).to_owned())).collect(),
            states: states.iter().map(|s| (*s).to_owned()).collect(),
            ..Inner::default()
        }));
        let app = Router::new().fallback(answer).with_state(inner.clone());
        let url = conveyor_e2e::serve(app).await;
        Self { inner, url }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    fn calls(&self, method: &str, path: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method && c.path.starts_with(path))
            .cloned()
            .collect()
    }
}

fn next<T: Clone>(queue: &mut VecDeque<T>) -> Option<T> {
    if queue.len() > 1 {
        queue.pop_front()
    } else {
        queue.front().cloned()
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (delay, reply) = {
        let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.calls.push(Call {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        if uri.path().starts_with("/jobs/") {
            let state = next(&mut inner.states).unwrap_or_else(|| "RUNNING".to_owned());
            let body = serde_json::json!({"id": uri.path(), "status": {"state": state}});
            (Duration::ZERO, (200, body.to_string()))
        } else {
            let reply = next(&mut inner.answers).unwrap_or((202, String::new()));
            (inner.delay, reply)
        }
    };
    tokio::time::sleep(delay).await;
    (
        StatusCode::from_u16(reply.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.1,
    )
}

/// A pipeline whose batch is `batch` (YAML at the batch's indentation), after a load.
fn pipeline(endpoint: &Endpoint, batch: &str, attempts: u32) -> String {
    format!(
        r#"
pipelines:
  - name: partner_export
    trigger: {{ object: {{ bucket: landing, pattern: "exports/{{date}}/*.csv" }} }}
    load: {{ table: "staging.exports_{{date}}", format: CSV }}
    batch:
      engine: http
{batch}
    poll: {{ interval: 50ms, timeout: 1m, max_attempts: {attempts}, backoff: {{ initial: 100ms, multiplier: 2, max: 1s }} }}
"#
    )
    .replace("$URL", &endpoint.url)
}

/// The chain with `engine: http` on a fixed ID token, one run started by a file.
async fn run(yaml: &str) -> conveyor_e2e::Chain {
    let engines = Engines::new().with(
        "http",
        Arc::new(HttpEngine::new(Arc::new(FixedIdToken::new(Some(
            "test-id-token".to_owned(),
        ))))),
    );
    let chain = conveyor_e2e::Chain::start_with(yaml, Some(engines)).await;
    chain.write_file("landing", "exports/2026-11-20/a.csv", "id,name\n1,ada\n");
    chain
        .settle_when(
            Duration::from_secs(30),
            || true,
            || "the http job did not end".to_owned(),
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !batch_rows(&chain).await.iter().any(|r| {
        matches!(
            r.status.as_str(),
            "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "REJECTED"
        )
    }) {
        assert!(std::time::Instant::now() < deadline, "no end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.settle(Duration::from_secs(30)).await;
    chain
}

/// The batch rows, oldest first.
async fn batch_rows(chain: &conveyor_e2e::Chain) -> Vec<RunLogRow> {
    chain
        .run_log()
        .await
        .into_iter()
        .filter(|r| r.dataproc_job_id.is_some())
        .collect()
}

async fn statuses(chain: &conveyor_e2e::Chain) -> Vec<String> {
    batch_rows(chain)
        .await
        .iter()
        .map(|r| r.status.clone())
        .collect()
}

#[tokio::test]
async fn an_http_job_calls_with_the_id_token_and_job_id_and_follows_its_status_url_to_the_end() {
    let endpoint = Endpoint::start(
        &[(202, r#"{"accepted": true}"#)],
        &["QUEUED", "RUNNING", "DONE"],
    )
    .await;
    let yaml = pipeline(
        &endpoint,
        r#"      url: "$URL/export?date={date}"
      body: '{"table": "{table}", "date": "{date}"}'
      headers: { X-Partner: acme }
      audience: "$URL"
      status: { url: "$URL/jobs/{job_id}", field: status.state, succeeded: [DONE], failed: [ERROR] }"#,
        1,
    );
    let chain = run(&yaml).await;

    let rows = batch_rows(&chain).await;
    let history: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(history, ["SUBMITTED", "RUNNING", "SUCCEEDED"], "{rows:#?}");
    let job_id = rows[0].dataproc_job_id.clone().expect("job id");
    let posts = endpoint.calls("POST", "/export");
    assert_eq!(posts.len(), 1, "called once: {posts:#?}");
    let post = &posts[0];
    assert_eq!(post.path, "/export?date=2026-11-20");
    assert_eq!(post.headers["authorization"], "Bearer test-id-token");
    assert_eq!(post.headers["idempotency-key"], job_id);
    assert_eq!(post.headers["x-conveyor-job-id"], job_id);
    assert_eq!(post.headers["x-partner"], "acme");
    assert_eq!(post.headers["content-type"], "application/json");
    assert_eq!(
        post.body,
        r#"{"table": "staging.exports_2026_11_20", "date": "2026-11-20"}"#
    );
    let reads = endpoint.calls("GET", &format!("/jobs/{job_id}"));
    assert!(reads.len() >= 3, "followed until DONE: {reads:#?}");
    assert!(
        reads
            .iter()
            .all(|r| r.headers["authorization"] == "Bearer test-id-token"
                && r.headers["x-conveyor-job-id"] == job_id
                && !r.headers.contains_key("x-partner")),
        "status reads carry the token and job id, not the call's headers"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_failed_status_fails_the_job_with_what_the_endpoint_said() {
    let endpoint = Endpoint::start(&[(202, "")], &["RUNNING", "ERROR"]).await;
    let yaml = pipeline(
        &endpoint,
        r#"      url: "$URL/export"
      status: { url: "$URL/jobs/{job_id}", field: status.state, succeeded: [DONE], failed: [ERROR] }"#,
        1,
    );
    let chain = run(&yaml).await;
    let rows = batch_rows(&chain).await;
    let failed = rows.last().expect("row");
    assert_eq!(failed.status, "FAILED", "{rows:#?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("`status.state` is ERROR"), "{error}");
    assert!(
        !endpoint.calls("POST", "/export")[0]
            .headers
            .contains_key("authorization"),
        "no audience, no token"
    );
    chain.stop().await;
}

#[tokio::test]
async fn without_a_status_url_the_status_code_decides_and_a_refused_call_fails_with_the_answer() {
    let ok = Endpoint::start(&[(200, "done")], &[]).await;
    let chain = run(&pipeline(
        &ok,
        r#"      url: "$URL/export"
      method: PUT
      success_codes: [200]"#,
        3,
    ))
    .await;
    assert_eq!(statuses(&chain).await, ["SUBMITTED", "SUCCEEDED"]);
    assert_eq!(ok.calls("PUT", "/export").len(), 1);
    chain.stop().await;

    let refused = Endpoint::start(&[(400, r#"{"error": "unknown partner table"}"#)], &[]).await;
    let chain = run(&pipeline(&refused, r#"      url: "$URL/export""#, 3)).await;
    let rows = batch_rows(&chain).await;
    assert_eq!(
        rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["FAILED"],
        "a 400 is final: not sent again, no other attempt"
    );
    let error = rows[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("HTTP 400") && error.contains("unknown partner table"),
        "{error}"
    );
    assert_eq!(refused.calls("POST", "/export").len(), 1);
    chain.stop().await;
}

#[tokio::test]
async fn a_post_is_sent_again_after_a_503_but_not_after_a_500_unless_idempotent() {
    let busy = Endpoint::start(&[(503, "busy"), (200, "")], &[]).await;
    let chain = run(&pipeline(&busy, r#"      url: "$URL/export""#, 1)).await;
    assert_eq!(statuses(&chain).await, ["SUBMITTED", "SUCCEEDED"]);
    let posts = busy.calls("POST", "/export");
    assert_eq!(posts.len(), 2, "the 503, then the call that went through");
    assert_eq!(
        posts[0].headers["idempotency-key"], posts[1].headers["idempotency-key"],
        "sent again under the same key"
    );
    chain.stop().await;

    let broken = Endpoint::start(&[(500, "oops"), (200, "")], &[]).await;
    let chain = run(&pipeline(&broken, r#"      url: "$URL/export""#, 1)).await;
    assert_eq!(statuses(&chain).await, ["FAILED"]);
    assert_eq!(
        broken.calls("POST", "/export").len(),
        1,
        "a POST answered 500 may have acted: not sent again"
    );
    chain.stop().await;

    let idempotent = Endpoint::start(&[(500, "oops"), (200, "")], &[]).await;
    let chain = run(&pipeline(
        &idempotent,
        "      url: \"$URL/export\"\n      idempotent: true",
        1,
    ))
    .await;
    assert_eq!(statuses(&chain).await, ["SUBMITTED", "SUCCEEDED"]);
    assert_eq!(idempotent.calls("POST", "/export").len(), 2);
    chain.stop().await;
}

#[tokio::test]
async fn a_call_that_outlasts_its_timeout_is_cut_off_and_a_post_is_not_sent_again() {
    let slow = Endpoint::start(&[(200, "")], &[]).await;
    slow.delay(Duration::from_secs(3));
    let chain = run(&pipeline(
        &slow,
        "      url: \"$URL/export\"\n      call_timeout: 300ms",
        1,
    ))
    .await;
    let rows = batch_rows(&chain).await;
    assert_eq!(
        rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["FAILED"]
    );
    let error = rows[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("no answer within 300ms") && error.contains("idempotent: true"),
        "{error}"
    );
    assert_eq!(slow.calls("POST", "/export").len(), 1);
    chain.stop().await;
}

/// Two deliveries of one http job's submit at once (two starts of the same run): the submit
/// claim lets one call the endpoint; the other reports the job as submitted and follows it.
#[tokio::test]
async fn two_simultaneous_submits_of_one_http_job_call_the_endpoint_once() {
    let endpoint = Endpoint::start(&[(202, "")], &["RUNNING", "DONE"]).await;
    // The call takes a while: both submits are decided while it is in flight.
    endpoint.delay(Duration::from_millis(300));
    let yaml = r#"
pipelines:
  - name: partner_export
    trigger: { manual: true }
    batch:
      engine: http
      url: "$URL/export"
      status: { url: "$URL/jobs/{job_id}", field: status.state, succeeded: [DONE], failed: [ERROR] }
    poll: { interval: 50ms, timeout: 1m, max_attempts: 1 }
"#
    .replace("$URL", &endpoint.url);
    let engines = Engines::new().with(
        "http",
        Arc::new(HttpEngine::new(Arc::new(FixedIdToken::new(None)))),
    );
    let chain = conveyor_e2e::Chain::start_with(&yaml, Some(engines)).await;
    let body = r#"{"pipeline":"partner_export","key":"k1"}"#;
    tokio::join!(
        chain.accepted(conveyor_core::event::StepName::Submit, body),
        chain.accepted(conveyor_core::event::StepName::Submit, body)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !statuses(&chain).await.iter().any(|s| s == "SUCCEEDED") {
        assert!(
            std::time::Instant::now() < deadline,
            "no success: {:?}",
            statuses(&chain).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.settle(Duration::from_secs(30)).await;
    let posts = endpoint.calls("POST", "/export");
    assert_eq!(posts.len(), 1, "called once: {posts:#?}");
    assert!(
        !endpoint
            .calls(
                "GET",
                &format!("/jobs/{}", posts[0].headers["x-conveyor-job-id"])
            )
            .is_empty(),
        "the job is followed"
    );
    chain.stop().await;
}
