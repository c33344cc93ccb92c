//! The HTTP client every Google adapter shares: hyper-util's pooled client over rustls
//! (HTTP/1.1 keep-alive), with a small request builder in the shape the adapters use.
//!
//! Deviation (issue 13): this replaces reqwest for Google's REST APIs. reqwest runs each
//! request through a redirect policy that parses the URL again and a retry layer that clones
//! the request; on a load event those layers cost about as much CPU as the rest of the event
//! (measured with callgrind: 44k instructions per call more than the same call on
//! hyper-util's client). The adapters need none of them: Google's APIs do not redirect, and a
//! failed call is retried by the delivery (503). Pooling and TLS stay the crates' (hyper-util,
//! hyper-rustls, rustls).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which root certificates a client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Mozilla's, compiled in (`webpki-roots`): nothing read at start-up.
    CompiledIn,
    /// The system's (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the platform's store), read when
    /// the client is built.
    System,
}

impl Roots {
    /// The system's roots when `SSL_CERT_FILE` or `SSL_CERT_DIR` is set (a private CA, a TLS
    /// inspecting proxy), else the compiled-in ones: a function starts without reading
    /// certificate files.
    pub fn from_env() -> Self {
        if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some()
        {
            Self::System
        } else {
            Self::CompiledIn
        }
    }
}

/// A transport failure: the server could not be reached, the connection broke, the TLS
/// handshake failed, or the call took longer than its timeout.
#[derive(Debug)]
pub struct Error {
    message: String,
    timeout: bool,
}

impl Error {
    fn new(what: &str, e: &dyn std::error::Error) -> Self {
        // The chain: hyper-util's "client error (Connect)" says little without its causes.
        let mut message = format!("{what}: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self {
            message,
            timeout: false,
        }
    }

    fn timed_out(after: Duration) -> Self {
        Self {
            message: format!("no answer within {}", humantime::format_duration(after)),
            timeout: true,
        }
    }

    fn plain(message: String) -> Self {
        Self {
            message,
            timeout: false,
        }
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A pooled HTTP client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting `roots`, speaking HTTP/1.1 (keep-alive, pooled) over TLS, and plain
    /// HTTP to emulators. Not HTTP/2: a function makes one call at a time per request, so
    /// multiplexing gains nothing here, and `h2` would add half a megabyte to every binary.
    ///
    /// # Errors
    /// When the system's roots are asked for and none can be read.
    pub fn new(roots: Roots) -> Result<Self, Error> {
        let mut store = rustls::RootCertStore::empty();
        match roots {
            Roots::CompiledIn => return Ok(Self::compiled_in()),
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::plain(format!(
                        "no root certificate could be read from the system ({} errors; SSL_CERT_FILE, SSL_CERT_DIR)",
                        found.errors.len()
                    )));
                }
            }
        }
        Ok(Self::trusting(store))
    }

    /// A client trusting Mozilla's roots, compiled in.
    pub fn compiled_in() -> Self {
        let mut store = rustls::RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::trusting(store)
    }

    fn trusting(roots: rustls::RootCertStore) -> Self {
        crate::install_crypto_provider();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let pool = Pool::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self {
            pool,
            timeout: None,
        }
    }

    /// This client with every call limited to `timeout`: connecting, sending, and reading the
    /// answer (its head, and its whole body when read with `bytes`, `text` or `json`; a
    /// body read as a stream is not limited).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A request of `method` to `url`.
    pub fn request(&self, method: Method, url: impl Into<Target>) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            target: url.into(),
            query: String::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: self.timeout,
            error: None,
        }
    }

    /// A `GET` request.
    pub fn get(&self, url: impl Into<Target>) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A `POST` request.
    pub fn post(&self, url: impl Into<Target>) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A `PUT` request.
    pub fn put(&self, url: impl Into<Target>) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A `DELETE` request.
    pub fn delete(&self, url: impl Into<Target>) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }
}

/// Where a request goes: a URL's text (parsed when sent), or a [`Uri`] parsed once and kept.
#[derive(Debug, Clone)]
pub enum Target {
    /// Parsed when the request is sent.
    Text(String),
    /// Parsed already.
    Uri(Uri),
}

impl From<String> for Target {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<&String> for Target {
    fn from(s: &String) -> Self {
        Self::Text(s.clone())
    }
}

impl From<Uri> for Target {
    fn from(u: Uri) -> Self {
        Self::Uri(u)
    }
}

impl From<&Uri> for Target {
    fn from(u: &Uri) -> Self {
        Self::Uri(u.clone())
    }
}

/// A request being built; [`RequestBuilder::send`] sends it.
pub struct RequestBuilder {
    client: Client,
    method: Method,
    target: Target,
    /// `k=v&…`, form-encoded, appended to the URL.
    query: String,
    headers: HeaderMap,
    body: Bytes,
    timeout: Option<Duration>,
    /// The first thing that could not be added (a header that is not header text, a body
    /// that cannot be JSON): reported by `send`.
    error: Option<Error>,
}

impl RequestBuilder {
    /// Adds a header.
    #[must_use]
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(k), Ok(v)) => {
                self.headers.insert(k, v);
            }
            _ => {
                self.error
                    .get_or_insert_with(|| Error::plain("a header is not header text".to_owned()));
            }
        }
        self
    }

    /// `Authorization: Bearer <token>` (never logged).
    #[must_use]
    pub fn bearer_auth(mut self, token: impl fmt::Display) -> Self {
        match HeaderValue::try_from(format!("Bearer {token}")) {
            Ok(mut v) => {
                v.set_sensitive(true);
                self.headers.insert(AUTHORIZATION, v);
            }
            Err(_) => {
                self.error
                    .get_or_insert_with(|| Error::plain("the token is not header text".to_owned()));
            }
        }
        self
    }

    /// Adds `pairs` to the URL's query, form-encoded.
    #[must_use]
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        let mut form = form_urlencoded::Serializer::new(std::mem::take(&mut self.query));
        form.extend_pairs(pairs);
        self.query = form.finish();
        self
    }

    /// `value` as a JSON body (`Content-Type: application/json`).
    #[must_use]
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = Bytes::from(body);
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Err(e) => {
                self.error
                    .get_or_insert_with(|| Error::plain(format!("the body is not JSON: {e}")));
            }
        }
        self
    }

    /// `body` as the request's body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// This request limited to `timeout` (instead of the client's).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn uri(&mut self) -> Result<Uri, Error> {
        let target = std::mem::replace(&mut self.target, Target::Text(String::new()));
        if self.query.is_empty()
            && let Target::Uri(u) = target
        {
            return Ok(u);
        }
        let mut text = match target {
            Target::Text(t) => t,
            Target::Uri(u) => u.to_string(),
        };
        if !self.query.is_empty() {
            text.push(if text.contains('?') { '&' } else { '?' });
            text.push_str(&self.query);
        }
        text.parse::<Uri>()
            .map_err(|e| Error::plain(format!("{text:?} is not a URL: {e}")))
    }

    /// Sends the request and waits for the answer's head.
    ///
    /// # Errors
    /// When the request cannot be made or sent, or no answer comes (in time).
    pub async fn send(mut self) -> Result<Response, Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let uri = self.uri()?;
        // hyper writes no length for an empty body, and Google's front end answers a POST,
        // PUT or PATCH without one 411 (a cancel, an empty object's last upload chunk).
        if self.body.is_empty() && matches!(self.method, Method::POST | Method::PUT | Method::PATCH)
        {
            self.headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let mut req = http::Request::new(Full::new(std::mem::take(&mut self.body)));
        *req.method_mut() = self.method;
        *req.uri_mut() = uri;
        *req.headers_mut() = self.headers;
        let sent = self.client.pool.request(req);
        let deadline = self.timeout.map(|t| (tokio::time::Instant::now() + t, t));
        let resp = match deadline {
            None => sent.await,
            Some((at, t)) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r,
                Err(_) => return Err(Error::timed_out(t)),
            },
        }
        .map_err(|e| Error::new("HTTP request failed", &e))?;
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            deadline,
        })
    }
}

/// An answer: its status and headers, and its body still to read.
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: hyper::body::Incoming,
    /// When the call must be over, and its timeout: bounds reading the whole body.
    deadline: Option<(tokio::time::Instant, Duration)>,
}

impl Response {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body.
    ///
    /// # Errors
    /// When the connection breaks while it is read, or the call's timeout passes first.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let read = self.body.collect();
        let collected = match self.deadline {
            None => read.await,
            Some((at, t)) => tokio::time::timeout_at(at, read)
                .await
                .map_err(|_| Error::timed_out(t))?,
        };
        collected
            .map(http_body_util::Collected::to_bytes)
            .map_err(|e| Error::new("cannot read the answer", &e))
    }

    /// The whole body as text (invalid UTF-8 replaced).
    ///
    /// # Errors
    /// When the connection breaks while it is read.
    pub async fn text(self) -> Result<String, Error> {
        let body = self.bytes().await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The whole body read as JSON into `T`.
    ///
    /// # Errors
    /// When the body cannot be read or is not a `T`.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let body = self.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| Error::plain(format!("unreadable answer: {e}")))
    }

    /// The body as it arrives.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        http_body_util::BodyStream::new(self.body).filter_map(|frame| async move {
            match frame {
                Ok(f) => f.into_data().ok().map(Ok),
                Err(e) => Some(Err(Error::new("cannot read the answer", &e))),
            }
        })
    }
}

/// The process's shared client for Google's APIs (one pool, one TLS set-up), trusting the
/// roots [`Roots::from_env`] names.
pub fn shared() -> Client {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::new(Roots::from_env()).unwrap_or_else(|e| {
                // Only the system's store can fail (no readable root): Mozilla's still work.
                tracing::warn!(error = %e, "no system roots; trusting the compiled-in ones");
                Client::compiled_in()
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1 that answers one connection with `answer` (then holds it open),
    /// and hands back the request's head it read.
    async fn one_answer(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 8192];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf[read..]).await.expect("read");
                if n == 0 {
                    break;
                }
                read += n;
            }
            sock.write_all(answer).await.expect("write");
            tokio::time::sleep(Duration::from_secs(5)).await;
            String::from_utf8_lossy(&buf[..read]).into_owned()
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn json_answers_are_read_and_empty_ones_pass() {
        let (base, server) =
            one_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}").await;
        let resp = Client::compiled_in()
            .get(format!("{base}/v1/things?fields=a"))
            .query(&[("pageToken", "x y&z")])
            .bearer_auth("t0k")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["ok"], true);
        server.abort();
        let (base, server) = one_answer(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let resp = Client::compiled_in()
            .post(format!("{base}/p"))
            .query(&[("a", "1")])
            .bearer_auth("t0k")
            .json(&serde_json::json!({"k": "v"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        drop(resp);
        server.abort();
        let _ = server.await;
    }

    #[tokio::test]
    async fn the_request_line_and_headers_are_what_was_built() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = sock.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.ends_with(b"{\"k\":\"v\"}") {
                    break;
                }
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        let resp = Client::compiled_in()
            .post(format!("http://{addr}/v1/x?fields=a"))
            .query(&[("pageToken", "x y&z")])
            .bearer_auth("t0k")
            .json(&serde_json::json!({"k": "v"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let request = server.await.expect("server");
        assert!(
            request.starts_with("POST /v1/x?fields=a&pageToken=x+y%26z HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("authorization: bearer t0k\r\n"), "{request}");
        assert!(
            lower.contains("content-type: application/json\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"k\":\"v\"}"), "{request}");
    }

    /// A fake that refuses as Google's front end does (411 without a length), recording what
    /// it receives.
    async fn front_end() -> (String, conveyor_contract::Recording) {
        let recording = conveyor_contract::Recording::new("front end", &[], true);
        let app = conveyor_contract::record::layer(
            axum::Router::new().fallback(|| async { axum::Json(serde_json::json!({})) }),
            &recording,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), recording)
    }

    #[tokio::test]
    async fn body_less_posts_and_puts_carry_a_zero_length_so_google_does_not_answer_411() {
        let (base, recording) = front_end().await;
        let client = Client::compiled_in();
        // A BigQuery cancel, a Dataproc cancel, a Dataflow update: real methods, empty bodies.
        for (method, path) in [
            (Method::POST, "/bigquery/v2/projects/p/jobs/j1/cancel"),
            (Method::POST, "/v1/projects/p/regions/r/jobs/j1:cancel"),
            (Method::PUT, "/v1b3/projects/p/locations/r/jobs/j1"),
        ] {
            let resp = client
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
        }
        let seen = recording.requests();
        assert_eq!(seen.len(), 3);
        for r in &seen {
            assert_eq!(
                r.headers.get("content-length").map(String::as_str),
                Some("0"),
                "{r:?}"
            );
        }
        // A GET carries no body and needs no length.
        client
            .get(format!("{base}/bigquery/v2/projects/p/jobs/j1"))
            .send()
            .await
            .expect("send");
        let get = recording.requests().pop().expect("the GET");
        assert!(!get.headers.contains_key("content-length"), "{get:?}");
    }

    #[tokio::test]
    async fn a_stalled_body_is_cut_off_at_the_calls_timeout() {
        // The head arrives at once; the body promises 100 bytes and sends 2.
        let (base, server) = one_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"").await;
        let started = std::time::Instant::now();
        let resp = Client::compiled_in()
            .with_timeout(Duration::from_millis(300))
            .get(format!("{base}/slow"))
            .send()
            .await
            .expect("the head comes in time");
        let e = resp.bytes().await.expect_err("the body never completes");
        assert!(e.is_timeout(), "{e}");
        assert!(e.to_string().contains("no answer within 300ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(4));
        server.abort();
    }

    #[tokio::test]
    async fn no_listener_is_a_transport_error_that_names_its_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = Client::compiled_in()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect_err("nothing listens");
        assert!(!e.is_timeout());
        let m = e.to_string().to_ascii_lowercase();
        assert!(m.contains("connect"), "{m}");
        assert!(m.contains("refused"), "{m}");
    }

    #[tokio::test]
    async fn what_cannot_be_sent_is_an_error_not_a_panic() {
        let e = Client::compiled_in()
            .get("http://127.0.0.1:1/")
            .header("x-bad", "line\nbreak")
            .send()
            .await
            .expect_err("not header text");
        assert!(e.to_string().contains("header"), "{e}");
        let e = Client::compiled_in()
            .get("not a url")
            .send()
            .await
            .expect_err("not a URL");
        assert!(e.to_string().contains("is not a URL"), "{e}");
    }
}
