//! The recorder every fake and proxy shares: each exchange is kept for the test's own
//! assertions and, when `CONVEYOR_CONTRACT_DIR` is set (`scripts/test.sh` sets it), appended
//! as a JSON line to a file there, named after the process, for `contract-check`.
//!
//! [`layer`] puts the recorder in front of an axum fake and makes the fake refuse as Google's
//! front end does: 411 for a POST, PUT or PATCH without `Content-Length`, and 400 (Google's
//! error body) for a request the API refuses: an unknown field or query parameter, a value of
//! the wrong type or outside its enum, a missing required field, a refused combination.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Documents;

/// Bodies larger than this are recorded by length only (upload chunks).
const MAX_RECORDED_BODY: usize = 1 << 20;

/// One exchange a fake or proxy saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// The test that made it (`binary::test_name`).
    pub test: String,
    /// Who saw it (`engines fake`, `proxy to fake-gcs-server`).
    pub source: String,
    /// The APIs the server plays (`bigquery`, `storage`, `pubsub`, `dataproc`, `dataflow`,
    /// `secretmanager`, `cdap`); empty: any.
    pub apis: Vec<String>,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query, as sent.
    pub target: String,
    /// The headers, names in lower case (`authorization` redacted).
    pub headers: BTreeMap<String, String>,
    /// The body's length in bytes.
    pub body_len: usize,
    /// The body, when it is JSON.
    pub body: Option<Value>,
    /// The answer's status.
    pub status: u16,
    /// The answer's body, when it is JSON.
    pub response: Option<Value>,
    /// The answer's `Location` header (a resumable upload's session).
    pub location: Option<String>,
    /// Whether the answer came from a fake of ours (checked against the response schema),
    /// not from an emulator.
    pub fake: bool,
}

impl Recorded {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query's pairs, decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        self.target
            .split_once('?')
            .map(|(_, q)| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A request as a fake receives it (no answer yet).
    pub fn request(
        recording: &Recording,
        method: &str,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| {
                let value = if *k == http::header::AUTHORIZATION {
                    "(redacted)".to_owned()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (k.as_str().to_owned(), value)
            })
            .collect();
        let json = body.len() <= MAX_RECORDED_BODY
            && headers
                .get("content-type")
                .is_some_and(|t| t.contains("json"));
        Self {
            test: recording.test.clone(),
            source: recording.source.clone(),
            apis: recording.apis.clone(),
            method: method.to_owned(),
            target: target.to_owned(),
            headers,
            body_len: body.len(),
            body: json.then(|| serde_json::from_slice(body).ok()).flatten(),
            status: 0,
            response: None,
            location: None,
            fake: recording.fake,
        }
    }

    /// Adds the answer.
    pub fn answered(&mut self, status: u16, headers: &HeaderMap, body: &[u8]) {
        self.status = status;
        self.response = serde_json::from_slice(body).ok();
        self.location = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
}

/// The name of the running test: the test binary's name and the test thread's.
pub fn current_test() -> String {
    let binary = std::env::args()
        .next()
        .map(|a| {
            let stem = std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Cargo names test binaries `name-HASH`.
            match stem.rsplit_once('-') {
                Some((name, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    name.to_owned()
                }
                _ => stem,
            }
        })
        .unwrap_or_default();
    let thread = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("(unnamed thread)")
        .to_owned();
    format!("{binary}::{thread}")
}

/// What one fake or proxy has recorded; cheap to clone.
#[derive(Clone, Debug)]
pub struct Recording {
    seen: Arc<Mutex<Vec<Recorded>>>,
    /// Resumable upload sessions opened through this server (their targets).
    sessions: Arc<Mutex<Vec<String>>>,
    test: String,
    source: String,
    apis: Vec<String>,
    fake: bool,
    /// Whether exchanges go to `CONVEYOR_CONTRACT_DIR` too (not a self-test's planted ones).
    sink: bool,
}

impl Recording {
    /// A recording for a server playing `apis`, made in the running test (call it from the
    /// test's own thread: the test is named after it). `fake`: the answers are ours.
    pub fn new(source: &str, apis: &[&str], fake: bool) -> Self {
        Self {
            seen: Arc::default(),
            sessions: Arc::default(),
            test: current_test(),
            source: source.to_owned(),
            apis: apis.iter().map(|a| (*a).to_owned()).collect(),
            fake,
            sink: true,
        }
    }

    /// This recording, kept in memory only: for requests made wrong on purpose (the
    /// validator's self-test), which the run's contract check must not count.
    #[must_use]
    pub fn in_memory_only(mut self) -> Self {
        self.sink = false;
        self
    }

    /// Keeps `r` (and writes it to `CONVEYOR_CONTRACT_DIR`).
    pub fn push(&self, r: Recorded) {
        if self.sink {
            sink(&r);
        }
        if let Some(location) = &r.location
            && r.query()
                .iter()
                .any(|(k, v)| k == "uploadType" && v == "resumable")
        {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(crate::check::target_of(location));
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(r);
    }

    /// The APIs the server plays.
    pub fn apis(&self) -> &[String] {
        &self.apis
    }

    /// The resumable upload sessions opened so far (their targets).
    pub fn sessions(&self) -> Vec<String> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every exchange so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Appends `r` to this process's file in `CONVEYOR_CONTRACT_DIR`, when set.
fn sink(r: &Recorded) {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let dir = std::env::var_os("CONVEYOR_CONTRACT_DIR")?;
        let _ = std::fs::create_dir_all(&dir);
        let path = std::path::Path::new(&dir).join(format!("records-{}.jsonl", std::process::id()));
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                eprintln!("cannot record requests in {}: {e}", path.display());
                None
            }
        }
    });
    if let Some(f) = file
        && let Ok(line) = serde_json::to_string(r)
    {
        let mut f = f.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(f, "{line}");
    }
}

/// The answer Google's front end gives a POST, PUT or PATCH without a length.
pub fn length_required(method: &str) -> (StatusCode, &'static str, String) {
    (
        StatusCode::LENGTH_REQUIRED,
        "text/html; charset=UTF-8",
        format!(
            "<!DOCTYPE html>\n<html lang=en><title>Error 411 (Length Required)!!1</title>\
             <p><b>411.</b> <ins>That\u{2019}s an error.</ins><p>{method} requests require a \
             <code>Content-length</code> header. <ins>That\u{2019}s all we know.</ins>"
        ),
    )
}

/// Whether a request of `method` with `headers` lacks the length Google's front end wants.
pub fn lacks_length(method: &str, headers: &BTreeMap<String, String>) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
        && !headers.contains_key("content-length")
        && !headers.contains_key("transfer-encoding")
}

/// How Google refuses `r`, if it does: 411 without a length, 400 with its error body for what
/// the API refuses. Checks what the documents allow; without them (not installed here), only
/// the length is checked, after a loud warning.
pub fn refusal(r: &Recorded, sessions: &[String]) -> Option<(StatusCode, &'static str, String)> {
    if lacks_length(&r.method, &r.headers) {
        return Some(length_required(&r.method));
    }
    let docs = match Documents::shared() {
        Ok(d) => d,
        Err(e) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                eprintln!("\n!!!!! the fakes cannot check requests against Google's discovery documents: {e} !!!!!\n");
            });
            return None;
        }
    };
    let refused: Vec<String> = crate::check::check(docs, r, sessions)
        .into_iter()
        .filter(|f| f.refused)
        .map(|f| f.message)
        .collect();
    if refused.is_empty() {
        return None;
    }
    let message = refused.join("; ");
    let body = json!({"error": {
        "code": 400,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": "invalid"}],
        "status": "INVALID_ARGUMENT",
    }});
    Some((
        StatusCode::BAD_REQUEST,
        "application/json",
        body.to_string(),
    ))
}

/// `router` recording every exchange in `recording` and refusing as Google does (see
/// [`refusal`]).
pub fn layer(router: axum::Router, recording: &Recording) -> axum::Router {
    // Read the documents now, not inside the test's first request (they take a moment).
    let _ = Documents::shared();
    router.layer(axum::middleware::from_fn_with_state(
        recording.clone(),
        recorded,
    ))
}

async fn recorded(State(recording): State<Recording>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 256 << 20)
        .await
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut r = Recorded::request(
        &recording,
        parts.method.as_str(),
        &target,
        &parts.headers,
        &bytes,
    );
    if let Some((status, content_type, text)) = refusal(&r, &recording.sessions()) {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        r.answered(status.as_u16(), &headers, text.as_bytes());
        recording.push(r);
        let mut resp = Response::new(Body::from(text));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        return resp;
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (head, body) = resp.into_parts();
    let answer = axum::body::to_bytes(body, 256 << 20)
        .await
        .unwrap_or_default();
    r.answered(head.status.as_u16(), &head.headers, &answer);
    recording.push(r);
    Response::from_parts(head, Body::from(answer))
}
