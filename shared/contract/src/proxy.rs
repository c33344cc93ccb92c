//! A recording reverse proxy in front of an emulator: the adapters (or the function binaries)
//! are pointed at it, and it records each request as it came off the wire (headers included:
//! whether `Content-Length` was sent is only visible there), refuses as Google's front end
//! would (see [`crate::record::refusal`]), and forwards the rest unchanged.
//!
//! It runs on a thread of its own with its own runtime, so it keeps answering while the test's
//! runtime is busy or blocked (a test that waits on a script, a current-thread runtime).
//!
//! One emulator difference is bridged here. A Pub/Sub pull that waits (no
//! `returnImmediately`) is held by the emulator until a message arrives, however long, and not
//! cancelled when its client gives up: the next message (one released with
//! `modifyAckDeadline`, say) goes to the abandoned pull and is lost until its ack deadline
//! passes. Pub/Sub itself waits a bounded time and cancels a pull whose connection closes. So
//! the proxy answers a waiting pull as Pub/Sub does, on top of the emulator: it asks the
//! emulator without waiting, again and again, for at most [`PULL_BOUND`], and answers what it
//! gets (nothing, at the bound). The recorded request is the adapter's, as sent.

use std::sync::Arc;
use std::thread::JoinHandle;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::record::{Recorded, Recording, refusal};

/// How long the proxy holds a waiting Pub/Sub pull (less than the adapter's own bound).
const PULL_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// A recording proxy; stopped when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`: where to point the adapters.
    pub url: String,
    recording: Recording,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Upstream {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    recording: Recording,
}

impl Proxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT` of an emulator) playing `apis`, named
    /// `source` in findings. Call it from the test's thread: its requests are the test's.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(upstream: &str, source: &str, apis: &[&str]) -> Self {
        let recording = Recording::new(source, apis, false);
        // Read the documents now, not inside the test's first request.
        let _ = crate::Documents::shared();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            recording: recording.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("proxy to {source}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = axum::Router::new().fallback(forward).with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("proxy thread");
        Self {
            url,
            recording,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every exchange so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recording.requests()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not joined: a connection held open by a client (a keep-alive pool) would keep the
        // graceful shutdown waiting; the thread ends once its connections close.
        let _ = self.thread.take();
    }
}

impl Upstream {
    fn recording_plays(&self, api: &str) -> bool {
        self.recording.apis().iter().any(|a| a == api)
    }
}

/// A waiting pull, answered as Pub/Sub does on top of the emulator: non-waiting pulls until a
/// message comes or [`PULL_BOUND`] passes.
async fn bounded_pull(
    up: &Upstream,
    target: &str,
    headers: &HeaderMap,
    r: &Recorded,
) -> (StatusCode, Bytes) {
    let mut body = r.body.clone().unwrap_or_default();
    body["returnImmediately"] = serde_json::Value::Bool(true);
    let body = Bytes::from(body.to_string());
    let deadline = tokio::time::Instant::now() + PULL_BOUND;
    loop {
        let Ok(uri) = format!("{}{target}", up.base).parse::<http::Uri>() else {
            return (StatusCode::BAD_REQUEST, Bytes::from_static(b"bad target"));
        };
        let mut out = http::Request::new(Full::new(body.clone()));
        *out.method_mut() = http::Method::POST;
        *out.uri_mut() = uri;
        let mut h = headers.clone();
        h.remove(header::TRANSFER_ENCODING);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *out.headers_mut() = h;
        let answered = match up.client.request(out).await {
            Ok(resp) => {
                let status = resp.status();
                resp.into_body()
                    .collect()
                    .await
                    .map(|c| (status, c.to_bytes()))
            }
            Err(e) => {
                let text = format!("the proxy cannot reach {}: {e}", up.base);
                return (StatusCode::BAD_GATEWAY, Bytes::from(text));
            }
        };
        let Ok((status, bytes)) = answered else {
            return (
                StatusCode::BAD_GATEWAY,
                Bytes::from_static(b"lost the answer"),
            );
        };
        let got = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("receivedMessages")
                    .and_then(|m| m.as_array())
                    .map(|m| !m.is_empty())
            })
            .unwrap_or(false);
        if !status.is_success() || got || tokio::time::Instant::now() >= deadline {
            return (status, bytes);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn answer(status: StatusCode, content_type: &'static str, text: String) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn forward(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 256 << 20).await else {
        return answer(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "unreadable body".to_owned(),
        );
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut r = Recorded::request(
        &up.recording,
        parts.method.as_str(),
        &target,
        &parts.headers,
        &bytes,
    );
    if let Some((status, content_type, text)) = refusal(&r, &up.recording.sessions()) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r.answered(status.as_u16(), &headers, text.as_bytes());
        up.recording.push(r);
        return answer(status, content_type, text);
    }
    if parts.method == http::Method::POST
        && r.path().ends_with(":pull")
        && up.recording_plays("pubsub")
        && r.body
            .as_ref()
            .is_some_and(|b| b["returnImmediately"] != true)
    {
        let (status, answer_bytes) = bounded_pull(&up, &target, &parts.headers, &r).await;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.answered(status.as_u16(), &headers, &answer_bytes);
        up.recording.push(r);
        let mut resp = Response::new(Body::from(answer_bytes));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        return resp;
    }
    let Ok(uri) = format!("{}{target}", up.base).parse::<http::Uri>() else {
        return answer(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "bad target".to_owned(),
        );
    };
    let mut out = http::Request::new(Full::new(bytes.clone()));
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = uri;
    let mut headers = parts.headers.clone();
    // The whole body was read: it goes on with its length.
    if headers.remove(header::TRANSFER_ENCODING).is_some() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    *out.headers_mut() = headers;
    let resp = match up.client.request(out).await {
        Ok(r) => r,
        Err(e) => {
            let text = format!("the proxy cannot reach {}: {e}", up.base);
            r.answered(502, &HeaderMap::new(), text.as_bytes());
            up.recording.push(r);
            return answer(StatusCode::BAD_GATEWAY, "text/plain", text);
        }
    };
    let (mut head, body) = resp.into_parts();
    let answer_bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let text = format!("the proxy lost {}'s answer: {e}", up.base);
            r.answered(502, &HeaderMap::new(), text.as_bytes());
            up.recording.push(r);
            return answer(StatusCode::BAD_GATEWAY, "text/plain", text);
        }
    };
    r.answered(head.status.as_u16(), &head.headers, &answer_bytes);
    up.recording.push(r);
    head.headers.remove(header::TRANSFER_ENCODING);
    head.headers.remove(header::CONNECTION);
    Response::from_parts(head, Body::from(answer_bytes))
}
