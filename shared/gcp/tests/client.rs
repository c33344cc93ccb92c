//! The Google adapters on the shared client, against local servers that answer as Google's
//! APIs do, and as they fail: every call is bounded by the client's timeouts, a refused token
//! is refreshed and the call sent once more (then it is a failure that may pass, never one
//! that drops the event), and a resumable upload resumes from what Cloud Storage keeps.
//!
//! The test binary sets the shared client's timeouts once (1 s per call, 500 ms to connect),
//! as a service does at start-up from `CONVEYOR_HTTP_TIMEOUT`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use conveyor_core::config::{BatchSpec, SecretRef};
use conveyor_core::engines::Engines;
use conveyor_core::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use conveyor_core::names::{BucketName, JobId, ObjectName, PipelineName, RunId};
use conveyor_core::ports::{
    BatchEngine, ByteStream, EventBus, ObjectStore, PortError, SecretStore, Warehouse,
};
use conveyor_gcp::engines::{CloudEngines as _, Endpoints, StaticToken};
use conveyor_gcp::{
    AdcCredentials, BigQuery, GcpAuth, GcsStore, MetadataToken, PubSubBus, SecretManager,
};

/// The shared client's timeouts for this test binary (the same for every test: it is set once).
fn timeouts() {
    conveyor_gcp::rest::configure(Duration::from_millis(500), Duration::from_secs(1))
        .expect("the shared client's timeouts");
}

/// Serves `app` on a free loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A server that accepts every connection and never answers.
async fn stalled() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    format!("http://{addr}")
}

/// A metadata server handing out tokens `t1`, `t2`, …; the count of tokens given.
async fn metadata() -> (String, Arc<AtomicU32>) {
    let issued = Arc::new(AtomicU32::new(0));
    let counter = issued.clone();
    let app = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            format!(r#"{{"access_token":"t{n}","expires_in":3599,"token_type":"Bearer"}}"#)
        }
    });
    (serve(app).await, issued)
}

/// A Google API that refuses every token but `accepted` with 401 (as Google does an expired
/// one), and answers `ok` to the others; every `Authorization` it saw.
async fn refusing(
    accepted: Option<&'static str>,
    ok: &'static str,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let log = log.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            log.lock().expect("lock").push(auth.clone());
            if accepted.is_some_and(|t| auth == format!("Bearer {t}")) {
                (StatusCode::OK, [("content-type", "application/json")], ok).into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [("content-type", "application/json")],
                    r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
                )
                    .into_response()
            }
        }
    });
    (serve(app).await, seen)
}

fn bucket() -> BucketName {
    BucketName::parse("landing").expect("bucket")
}

fn object() -> ObjectName {
    ObjectName::parse("sales/2026-11-20/a.csv").expect("name")
}

fn event() -> ConveyorEvent {
    ConveyorEvent::new(
        EventType::TableLoaded,
        RunId::derive(&PipelineName::parse("sales").expect("name"), &["a"]),
        None,
        StepName::Load,
        1,
        Status::Succeeded,
        Detail::default(),
    )
}

fn dataproc_batch() -> BatchSpec {
    serde_json::from_value(serde_json::json!({
        "engine": "dataproc_serverless",
        "project": "p",
        "region": "r",
        "runtime_version": "2.2",
        "spark": { "main_class": "x.Main", "jar_file_uris": ["gs://b/x.jar"] },
    }))
    .expect("a Dataproc Serverless batch")
}

fn job_id() -> JobId {
    JobId::derive(
        "batch",
        &RunId::derive(&PipelineName::parse("sales").expect("name"), &["a"]),
        1,
    )
}

const OBJECT: &str = r#"{"bucket":"landing","name":"sales/2026-11-20/a.csv","generation":"7","size":"3","crc32c":"AAAAAA=="}"#;

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_call_sent_once_more() {
    timeouts();
    let (root, issued) = metadata().await;
    let auth = GcpAuth::Metadata(MetadataToken::at(&root));
    let (gcs, seen) = refusing(Some("t2"), OBJECT).await;
    let store = GcsStore::new(&gcs, auth);
    let meta = store
        .head(&bucket(), &object())
        .await
        .expect("the second token is accepted")
        .expect("the object");
    assert_eq!(meta.object.generation, "7");
    assert_eq!(
        *seen.lock().expect("lock"),
        ["Bearer t1", "Bearer t2"],
        "sent once with the refused token, once with a new one"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_token_refused_twice_may_pass_on_every_adapter_and_drops_nothing() {
    timeouts();
    let (root, _) = metadata().await;
    let auth = GcpAuth::Metadata(MetadataToken::at(&root));
    let (api, seen) = refusing(None, "{}").await;
    let store = GcsStore::new(&api, auth.clone());
    let bq = BigQuery::new("p", None, Some(&format!("{api}/bigquery/v2")), &auth);
    let secrets = SecretManager::new(&api, auth.clone());
    let bus = PubSubBus::new("projects/p/topics/events", Some(&api), &auth).expect("bus");
    let engines = Engines::new()
        .with_cloud(Endpoints::all_at(&api), Arc::new(auth.clone()))
        .expect("engines");
    let secret = SecretRef::parse("projects/p/secrets/s").expect("secret");
    let results: Vec<(&str, Result<(), PortError>)> = vec![
        (
            "Cloud Storage",
            store.head(&bucket(), &object()).await.map(drop),
        ),
        ("BigQuery", bq.load_state(&job_id()).await.map(drop)),
        ("Secret Manager", secrets.access(&secret).await.map(drop)),
        ("Pub/Sub", bus.publish(&event()).await),
        (
            "Dataproc",
            engines.state(&dataproc_batch(), &job_id()).await.map(drop),
        ),
    ];
    for (adapter, result) in results {
        match result {
            Err(e) => assert!(
                e.is_transient(),
                "{adapter}: a refused token must be retried by the delivery, not dropped: {e}"
            ),
            Ok(()) => panic!("{adapter}: a refused token succeeded"),
        }
    }
    let tries = seen.lock().expect("lock").len();
    assert_eq!(
        tries, 10,
        "each adapter sent its call twice (five adapters)"
    );
}

#[tokio::test]
async fn every_adapter_gives_up_on_a_stalled_server_within_the_timeout() {
    timeouts();
    let api = stalled().await;
    let auth = GcpAuth::Anonymous;
    let store = GcsStore::new(&api, auth.clone());
    let bq = BigQuery::new("p", None, Some(&format!("{api}/bigquery/v2")), &auth);
    let secrets = SecretManager::new(&api, auth.clone());
    let bus = PubSubBus::new("projects/p/topics/events", Some(&api), &auth).expect("bus");
    let engines = Engines::new()
        .with_cloud(Endpoints::all_at(&api), Arc::new(StaticToken::new("t")))
        .expect("engines");
    let token = MetadataToken::at(&api);
    let secret = SecretRef::parse("projects/p/secrets/s").expect("secret");
    let started = Instant::now();
    let (gcs, bigquery, secret_manager, pubsub, dataproc, metadata) = tokio::join!(
        async { store.head(&bucket(), &object()).await.map(drop) },
        async { bq.load_state(&job_id()).await.map(drop) },
        async { secrets.access(&secret).await.map(drop) },
        async { bus.publish(&event()).await },
        async { engines.state(&dataproc_batch(), &job_id()).await.map(drop) },
        async { token.token().await.map(drop) },
    );
    let elapsed = started.elapsed();
    for (adapter, result) in [
        ("Cloud Storage", gcs),
        ("BigQuery", bigquery),
        ("Secret Manager", secret_manager),
        ("Pub/Sub", pubsub),
        ("Dataproc", dataproc),
        ("the metadata server's token", metadata),
    ] {
        let e = result.expect_err(adapter);
        assert!(e.is_transient(), "{adapter}: {e}");
        assert!(
            e.to_string().contains("no answer within 1s"),
            "{adapter}: {e}"
        );
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn an_object_whose_body_stalls_fails_while_it_is_read() {
    timeouts();
    // The head and a first piece at once, then nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nfirst bytes")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let store = GcsStore::new(&format!("http://{addr}"), GcpAuth::Anonymous);
    let mut body = store.open(&bucket(), &object()).await.expect("opened");
    let started = Instant::now();
    let mut read = Vec::new();
    let e = tokio::io::AsyncReadExt::read_to_end(&mut body, &mut read)
        .await
        .expect_err("the body stalls");
    assert_eq!(read, b"first bytes");
    assert!(e.to_string().contains("no answer within 1s"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn application_default_credentials_send_the_quota_project_and_are_bounded() {
    timeouts();
    // An OAuth token endpoint, as a user's ADC file names it.
    let token_uri = serve(Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            r#"{"access_token":"ya29.user","expires_in":3599,"token_type":"Bearer"}"#,
        )
    }))
    .await;
    let adc = |token_uri: &str| {
        let json = serde_json::json!({
            "type": "authorized_user",
            "client_id": "id",
            "client_secret": "secret",
            "refresh_token": "refresh",
            "quota_project_id": "billing-project",
            "token_uri": format!("{token_uri}/token"),
        });
        let credentials = google_cloud_auth::credentials::user_account::Builder::new(json)
            .build()
            .expect("credentials");
        GcpAuth::Adc(AdcCredentials::from_credentials(credentials))
    };
    let headers: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = headers.clone();
    let gcs = serve(Router::new().fallback(move |h: HeaderMap| {
        let log = log.clone();
        async move {
            log.lock().expect("lock").push(h);
            ([("content-type", "application/json")], OBJECT)
        }
    }))
    .await;
    GcsStore::new(&gcs, adc(&token_uri))
        .head(&bucket(), &object())
        .await
        .expect("authorised")
        .expect("the object");
    let seen = headers.lock().expect("lock")[0].clone();
    assert_eq!(seen["authorization"], "Bearer ya29.user");
    assert_eq!(seen["x-goog-user-project"], "billing-project");
    // A token endpoint that never answers fails the call at the timeout.
    let started = Instant::now();
    let e = GcsStore::new(&gcs, adc(&stalled().await))
        .head(&bucket(), &object())
        .await
        .expect_err("no token");
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// How the fake upload session misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// The first three chunks: keeps 100,000 bytes fewer than it got (308 with a shorter
    /// `Range`), as Cloud Storage may.
    KeepsLess,
    /// The second chunk: keeps half of it and answers 503.
    FailsMidObject,
    /// The last chunk: keeps all of it and answers 503 (the object is complete only once
    /// asked for with its size).
    FailsOnTheLastChunk,
}

/// A Cloud Storage upload session that keeps the bytes it is sent at the offset it kept so far
/// (refusing any other offset with 400, as a wrong `Content-Range` is refused), and records
/// every request's `Content-Range` and `Content-Length`.
#[derive(Clone)]
struct Session {
    fault: Fault,
    kept: Arc<Mutex<Vec<u8>>>,
    chunks: Arc<AtomicU32>,
    sessions: Arc<AtomicU32>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Session {
    fn new(fault: Fault) -> Self {
        Self {
            fault,
            kept: Arc::default(),
            chunks: Arc::default(),
            sessions: Arc::default(),
            requests: Arc::default(),
        }
    }

    fn incomplete(kept: usize) -> Response {
        let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
        if kept > 0 {
            resp.headers_mut().insert(
                "range",
                format!("bytes=0-{}", kept - 1).parse().expect("header"),
            );
        }
        resp
    }

    fn done(kept: &[u8]) -> Response {
        let crc =
            base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(kept).to_be_bytes());
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            format!(
                r#"{{"bucket":"landing","name":"big.bin","generation":"1","size":"{}","crc32c":"{crc}"}}"#,
                kept.len()
            ),
        )
            .into_response()
    }
}

async fn session(
    State(s): State<Session>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if method == Method::POST {
        s.sessions.fetch_add(1, Ordering::SeqCst);
        let host = header("host");
        return (
            StatusCode::OK,
            [("location", format!("http://{host}/session/1"))],
        )
            .into_response();
    }
    assert_eq!(uri.path(), "/session/1");
    let range = header("content-range");
    s.requests
        .lock()
        .expect("lock")
        .push((range.clone(), header("content-length")));
    let spec = range.strip_prefix("bytes ").unwrap_or_default();
    let (span, total) = spec.split_once('/').unwrap_or_default();
    let total: Option<usize> = total.parse().ok();
    let mut kept = s.kept.lock().expect("lock");
    if span == "*" {
        // A status request: complete once the size is known and every byte is kept.
        if !body.is_empty() {
            return (StatusCode::BAD_REQUEST, "a status request has no body").into_response();
        }
        return match total {
            Some(t) if t == kept.len() => Session::done(&kept),
            _ => Session::incomplete(kept.len()),
        };
    }
    let first: usize = span
        .split_once('-')
        .and_then(|(a, _)| a.parse().ok())
        .unwrap_or(usize::MAX);
    if first != kept.len() {
        return (
            StatusCode::BAD_REQUEST,
            format!("chunk at {first}, but {} bytes are kept", kept.len()),
        )
            .into_response();
    }
    let n = s.chunks.fetch_add(1, Ordering::SeqCst) + 1;
    let last = total.is_some_and(|t| t == first + body.len());
    match s.fault {
        Fault::KeepsLess if n <= 3 => {
            let keep = body.len().saturating_sub(100_000);
            kept.extend_from_slice(&body[..keep]);
            return Session::incomplete(kept.len());
        }
        Fault::FailsMidObject if n == 2 => {
            kept.extend_from_slice(&body[..body.len() / 2]);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Fault::FailsOnTheLastChunk if last && n <= 3 => {
            kept.extend_from_slice(&body);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        _ => kept.extend_from_slice(&body),
    }
    if last {
        Session::done(&kept)
    } else {
        Session::incomplete(kept.len())
    }
}

/// Uploads 2.5 chunks (8 MiB each) of known bytes through a session misbehaving as `fault`;
/// the outcome, the bytes the session kept, and the session's record.
async fn upload(fault: Fault) -> (Result<(), PortError>, Vec<u8>, Session, Vec<u8>) {
    timeouts();
    let s = Session::new(fault);
    let base = serve(
        Router::new()
            .fallback(session)
            .layer(DefaultBodyLimit::disable())
            .with_state(s.clone()),
    )
    .await;
    let data: Vec<u8> = (0..20 * 1024 * 1024 + 123)
        .map(|i: usize| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let body: ByteStream = Box::pin(std::io::Cursor::new(data.clone()));
    let name = ObjectName::parse("big.bin").expect("name");
    let result = GcsStore::new(&base, GcpAuth::Anonymous)
        .put(&bucket(), &name, body)
        .await
        .map(drop);
    let kept = s.kept.lock().expect("lock").clone();
    (result, kept, s, data)
}

#[tokio::test]
async fn an_upload_sends_again_what_cloud_storage_did_not_keep() {
    let (result, kept, s, data) = upload(Fault::KeepsLess).await;
    result.expect("the upload completes, its CRC32C checked");
    assert!(
        kept == data,
        "the stored object is the source, byte for byte"
    );
    assert_eq!(s.sessions.load(Ordering::SeqCst), 1, "one session");
    let requests = s.requests.lock().expect("lock").clone();
    assert_eq!(
        requests[1].0,
        format!(
            "bytes {}-{}/*",
            8 * 1024 * 1024 - 100_000,
            2 * 8 * 1024 * 1024 - 100_001
        ),
        "the second chunk starts where the session's Range ended: {requests:?}"
    );
}

#[tokio::test]
async fn an_upload_that_fails_mid_object_resumes_from_what_the_session_keeps() {
    let (result, kept, s, data) = upload(Fault::FailsMidObject).await;
    result.expect("the upload completes, its CRC32C checked");
    assert!(
        kept == data,
        "the stored object is the source, byte for byte"
    );
    assert_eq!(
        s.sessions.load(Ordering::SeqCst),
        1,
        "resumed, not started again"
    );
    let requests = s.requests.lock().expect("lock").clone();
    assert_eq!(
        requests[2],
        ("bytes */*".to_owned(), "0".to_owned()),
        "after the failure the session is asked what it keeps, with no body: {requests:?}"
    );
    let half = 8 * 1024 * 1024 + 4 * 1024 * 1024;
    assert!(
        requests[3].0.starts_with(&format!("bytes {half}-")),
        "then the upload goes on from there: {requests:?}"
    );
}

#[tokio::test]
async fn an_upload_whose_last_chunk_fails_asks_with_its_size_and_completes() {
    let (result, kept, s, data) = upload(Fault::FailsOnTheLastChunk).await;
    result.expect("the upload completes, its CRC32C checked");
    assert!(kept == data);
    let requests = s.requests.lock().expect("lock").clone();
    assert_eq!(
        requests.last().map(|r| r.0.clone()),
        Some(format!("bytes */{}", data.len())),
        "{requests:?}"
    );
    assert_eq!(s.sessions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn answers_are_classified_once_conflicts_and_preconditions_included() {
    timeouts();
    // Cloud Storage refuses `ifGenerationMatch=0` with 412 conditionNotMet when the object
    // exists; a create that races another finds it there.
    let calls: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let log = calls.clone();
    let base = serve(Router::new().fallback(move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            *log.lock()
                .expect("lock")
                .entry(format!("{method} {}", uri.path()))
                .or_default() += 1;
            if method == Method::GET {
                return (StatusCode::NOT_FOUND, r#"{"error":{"code":404,"message":"No such object","errors":[{"reason":"notFound"}]}}"#).into_response();
            }
            (
                StatusCode::PRECONDITION_FAILED,
                r#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[{"reason":"conditionNotMet"}]}}"#,
            )
                .into_response()
        }
    }))
    .await;
    let store = GcsStore::new(&base, GcpAuth::Anonymous);
    let body: ByteStream = Box::pin(std::io::Cursor::new(b"lease".to_vec()));
    assert_eq!(
        store
            .create_new(&bucket(), &object(), body)
            .await
            .expect("a precondition, not an error"),
        None
    );
    // A delete of another generation: nothing deleted.
    assert!(
        !store
            .delete(&bucket(), &object(), Some("41"))
            .await
            .expect("not an error")
    );
}

#[tokio::test]
async fn a_query_asks_bigquery_to_answer_before_the_client_gives_up() {
    timeouts();
    // BigQuery holds `jobs.query` up to `timeoutMs`: longer than the client's timeout, and
    // every slow query would end as a timeout instead of a "not complete yet" to follow.
    let asked: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let log = asked.clone();
    let base = serve(Router::new().fallback(move |body: Bytes| {
        let log = log.clone();
        async move {
            log.lock()
                .expect("lock")
                .push(serde_json::from_slice(&body).unwrap_or_default());
            (
                [("content-type", "application/json")],
                r#"{"jobReference":{"jobId":"j"},"jobComplete":true,"schema":{"fields":[{"name":"f0_"}]},"rows":[{"f":[{"v":"3"}]}]}"#,
            )
        }
    }))
    .await;
    let bq = BigQuery::new(
        "p",
        None,
        Some(&format!("{base}/bigquery/v2")),
        &GcpAuth::Anonymous,
    );
    let table = conveyor_core::names::TableRef::parse("ds.t").expect("table");
    assert_eq!(bq.row_count(&table).await.expect("a count"), 3);
    let wait = asked.lock().expect("lock")[0]["timeoutMs"]
        .as_u64()
        .expect("timeoutMs");
    assert!(
        wait < 1_000,
        "timeoutMs {wait} is not below the client's 1 s"
    );
}
