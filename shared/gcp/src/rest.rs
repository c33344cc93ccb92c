//! The HTTP client every Google adapter shares: hyper-util's pooled client over rustls
//! (HTTP/1.1 keep-alive), with a small request builder in the shape the adapters use, its
//! timeouts and proxy, and the one place an answer that is not a success is read and classified
//! ([`ApiError`], [`classify`]).
//!
//! Deviation (issue 13): this replaces reqwest for Google's REST APIs. reqwest runs each
//! request through a redirect policy that parses the URL again and a retry layer that clones
//! the request; on a load event those layers cost about as much CPU as the rest of the event
//! (measured with callgrind: 44k instructions per call more than the same call on
//! hyper-util's client). The adapters need none of them: Google's APIs do not redirect, and a
//! failed call is retried by the delivery (503). Pooling, TLS and proxy matching stay the
//! crates' (hyper-util, hyper-rustls, rustls).
//!
//! # Layout
//! - `rest.rs`: [`Client`], [`RequestBuilder`], [`Response`], the transport [`Error`], the
//!   API error [`ApiError`] and [`classify`], and [`shared`], the process's client.
//! - `rest/proxy.rs`: the connector that honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
//!   `NO_PROXY` (CONNECT tunnels for `https://`, absolute-form requests for `http://`).

mod proxy;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use conveyor_core::ports::PortError;
use futures::{Stream, StreamExt as _};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
        let mut timeout = false;
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            // hyper-util's connect timeout is tokio's `Elapsed`.
            timeout |= s.is::<tokio::time::error::Elapsed>()
                || s.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            source = s.source();
        }
        Self { message, timeout }
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

    /// Whether the call timed out (connecting, or the whole call).
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }

    /// This failure as a port error: every transport failure may pass.
    pub fn into_port(self, what: &str) -> PortError {
        PortError::transient(format!("{what}: {self}")).with_source(self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// What is percent-encoded in one URL path segment or query value: every byte but RFC 3986's
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`), so `/` in an object name stays inside its
/// segment.
pub const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` as one URL path segment or query value (see [`SEGMENT`]).
pub fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// How long a connection may take to open (TCP, and the proxy's tunnel): Google's front ends
/// answer in milliseconds, so a connect that takes seconds is a network that lost the route.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole call may take by default (`CONVEYOR_HTTP_TIMEOUT`): connecting, sending,
/// the answer's head and, when read whole, its body. Below Cloud Run's request timeout, so a
/// stalled backend fails the request (503, redelivered) instead of the instance killing it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Which roots TLS trusts.
    pub roots: Roots,
    /// Bound on opening a connection ([`CONNECT_TIMEOUT`] by default).
    pub connect_timeout: Duration,
    /// Bound on a whole call ([`REQUEST_TIMEOUT`] by default); one request may set its own.
    pub timeout: Duration,
    /// Which proxy calls go through ([`Proxy::FromEnv`] by default).
    pub proxy: Proxy,
}

/// The variables that name a proxy for [`Proxy::FromEnv`], in the order they are read.
pub const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Which proxy a client's calls go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// The one `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` (or their lowercase forms) names
    /// for the destination's scheme, except for the hosts `NO_PROXY` lists (as curl reads
    /// them): none when they are unset.
    FromEnv,
    /// None.
    Off,
    /// These: the proxy URLs (`http://[user:password@]host:port`) and `NO_PROXY`'s list.
    Use {
        /// For `https://` destinations (through a CONNECT tunnel).
        https: Option<String>,
        /// For `http://` destinations (requests in absolute form).
        http: Option<String>,
        /// Hosts, domains and networks reached directly (`NO_PROXY`'s syntax).
        no_proxy: String,
    },
}

impl Default for Options {
    fn default() -> Self {
        Self {
            roots: Roots::CompiledIn,
            connect_timeout: CONNECT_TIMEOUT,
            timeout: REQUEST_TIMEOUT,
            proxy: Proxy::FromEnv,
        }
    }
}

/// A pooled HTTP client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpsConnector<proxy::Connector>, Full<Bytes>>,
    timeout: Option<Duration>,
    /// `Proxy-Authorization` for plain-HTTP requests forwarded to a proxy with credentials.
    forward_auth: Option<std::sync::Arc<proxy::ForwardAuth>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting `roots`, with the default timeouts and the proxy the environment
    /// names. See [`Client::with_options`].
    ///
    /// # Errors
    /// When the system's roots are asked for and none can be read.
    pub fn new(roots: Roots) -> Result<Self, Error> {
        Self::with_options(&Options {
            roots,
            ..Options::default()
        })
    }

    /// A client speaking HTTP/1.1 (keep-alive, pooled) over TLS, and plain HTTP to emulators,
    /// as `options` say. Not HTTP/2: a function makes one call at a time per request, so
    /// multiplexing gains nothing here, and `h2` would add half a megabyte to every binary.
    ///
    /// # Errors
    /// When the system's roots are asked for and none can be read.
    pub fn with_options(options: &Options) -> Result<Self, Error> {
        let mut store = rustls::RootCertStore::empty();
        match options.roots {
            Roots::CompiledIn => {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
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
        Ok(Self::trusting(store, options))
    }

    /// A client trusting Mozilla's roots, compiled in, with the default timeouts and the
    /// proxy the environment names.
    pub fn compiled_in() -> Self {
        let mut store = rustls::RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::trusting(store, &Options::default())
    }

    fn trusting(roots: rustls::RootCertStore, options: &Options) -> Self {
        crate::install_crypto_provider();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let proxies = proxy::Proxies::new(&options.proxy);
        let forward_auth = proxies.as_ref().and_then(proxy::Proxies::forward_auth);
        let connector = proxy::Connector::new(options.connect_timeout, proxies);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self {
            pool,
            timeout: Some(options.timeout),
            forward_auth: forward_auth.map(std::sync::Arc::new),
        }
    }

    /// This client with every call limited to `timeout`: connecting, sending, and reading the
    /// answer (its head, and its whole body when read with `bytes`, `text` or `json`; a
    /// body read as a stream waits at most that long for each piece).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bound on a whole call, when there is one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
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
        if let Some(auth) = &self.client.forward_auth {
            auth.add_to(&uri, &mut self.headers);
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

    /// The body as it arrives. Its whole is not bounded (an object may be large), but each
    /// piece must come within the call's timeout: a stalled body fails instead of hanging.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        let idle = self.deadline.map(|(_, t)| t);
        let frames = http_body_util::BodyStream::new(self.body);
        futures::stream::unfold(Some(frames), move |frames| async move {
            let mut frames = frames?;
            loop {
                let next = match idle {
                    None => frames.next().await,
                    Some(t) => match tokio::time::timeout(t, frames.next()).await {
                        Ok(n) => n,
                        Err(_) => return Some((Err(Error::timed_out(t)), None)),
                    },
                };
                match next {
                    None => return None,
                    Some(Err(e)) => {
                        return Some((Err(Error::new("cannot read the answer", &e)), None));
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), Some(frames)));
                        }
                    }
                }
            }
        })
    }
}

/// An answer of a Google API that is not a success, as Google describes it: the status,
/// Google's status name and reason, its message, and when to try again. Read once, where the
/// answer arrives ([`ApiError::read`]); [`classify`] says what it means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Google's status name (`error.status`: `NOT_FOUND`, `FAILED_PRECONDITION`, ...), when
    /// the answer gives one.
    pub code: Option<String>,
    /// Google's reason: `error.errors[0].reason` of the JSON APIs (`notFound`,
    /// `rateLimitExceeded`, `conditionNotMet`, ...), else the `reason` of the first
    /// `google.rpc.ErrorInfo` detail.
    pub reason: Option<String>,
    /// `error.message`, else the start of the body.
    pub message: String,
    /// `Retry-After`, when the answer sets it (seconds, or an HTTP date).
    pub retry_after: Option<Duration>,
}

/// Google's error body (`{"error": {...}}`), the fields read: no JSON tree.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    details: Vec<ErrorItem>,
}

/// An item of `errors` (the JSON APIs) or of `details` (`google.rpc.ErrorInfo` has a
/// `reason`; other details have none and are skipped).
#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: Option<String>,
}

/// The longest message kept from an answer's body.
const MESSAGE_CHARS: usize = 500;

impl ApiError {
    /// Reads `resp` (its status, `Retry-After`, and its body, within the call's timeout).
    pub async fn read(resp: Response) -> Self {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        match resp.bytes().await {
            Ok(body) => Self::from_body(status, &body, retry_after),
            Err(e) => Self {
                status,
                code: None,
                reason: None,
                message: format!("the answer could not be read: {e}"),
                retry_after,
            },
        }
    }

    /// The error an answer of `status` with `body` describes.
    pub fn from_body(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Self {
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(ErrorEnvelope { error }) => Self {
                status,
                reason: error
                    .errors
                    .into_iter()
                    .chain(error.details)
                    .find_map(|i| i.reason)
                    .filter(|r| !r.is_empty()),
                code: error.status.filter(|c| !c.is_empty()),
                message: error
                    .message
                    .unwrap_or_default()
                    .chars()
                    .take(MESSAGE_CHARS)
                    .collect(),
                retry_after,
            },
            // Not Google's shape (a proxy's page, CDAP's plain text): its start.
            Err(_) => Self {
                status,
                code: None,
                reason: None,
                message: String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(MESSAGE_CHARS)
                    .collect(),
                retry_after,
            },
        }
    }

    /// What the answer means for the caller.
    pub fn class(&self) -> Class {
        classify(self.status, self.code.as_deref(), self.reason.as_deref())
    }

    /// This error as the port error its [`Self::class`] says, `what` (the call) first in its
    /// message, and itself kept as the source.
    pub fn into_port(self, what: &str) -> PortError {
        let message = format!("{what}: {self}");
        let e = match self.class() {
            Class::Transient => PortError::transient(message),
            Class::Permanent => PortError::permanent(message),
            Class::NotFound => PortError::not_found(message),
            Class::Conflict => PortError::conflict(message),
            Class::Precondition => PortError::precondition(message),
        };
        e.with_source(self)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status.as_u16())?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// `Retry-After`: delay-seconds, or an HTTP date (RFC 7231, as RFC 2822 reads it).
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// What an error answer means for the caller: the classes of [`PortError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Trying again later may succeed.
    Transient,
    /// Trying again cannot succeed.
    Permanent,
    /// What was asked for does not exist.
    NotFound,
    /// What is created exists already.
    Conflict,
    /// A condition set on the call does not hold.
    Precondition,
}

/// The class of Google's `reason` alone (also the `errorResult.reason` of a BigQuery job, and
/// of the errors BigQuery puts in a 200 answer), when it decides one.
pub fn classify_reason(reason: &str) -> Option<Class> {
    Some(match reason {
        // BigQuery and the JSON APIs: "retry with exponential backoff".
        "backendError"
        | "internalError"
        | "jobBackendError"
        | "jobInternalError"
        | "rateLimitExceeded"
        | "userRateLimitExceeded"
        | "quotaExceeded"
        | "timeout"
        | "RATE_LIMIT_EXCEEDED" => Class::Transient,
        "notFound" => Class::NotFound,
        "duplicate" | "alreadyExists" => Class::Conflict,
        "conditionNotMet" => Class::Precondition,
        _ => return None,
    })
}

/// The one classification of an error answer, by Google's reason first (the most precise),
/// then Google's status name, then the HTTP status:
///
/// | answer | class |
/// | --- | --- |
/// | reason `backendError`, `internalError`, `jobBackendError`, `jobInternalError`, `rateLimitExceeded`, `userRateLimitExceeded`, `quotaExceeded`, `timeout` (whatever the status: BigQuery sends quota as 403) | transient |
/// | reason `notFound` | not found |
/// | reason `duplicate`, `alreadyExists` | conflict |
/// | reason `conditionNotMet` | precondition |
/// | `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `ABORTED` (a 409 to retry), `CANCELLED`, `UNKNOWN` | transient |
/// | `NOT_FOUND` | not found |
/// | `ALREADY_EXISTS` | conflict |
/// | `FAILED_PRECONDITION` (a 400) | precondition |
/// | `INVALID_ARGUMENT`, `PERMISSION_DENIED`, `OUT_OF_RANGE`, `UNIMPLEMENTED`, `DATA_LOSS` | permanent |
/// | 401 (after one refreshed token was refused too), 408, 429, 499, 500, 502, 503, 504 and other 5xx | transient |
/// | 404, 410 | not found |
/// | 409 | conflict |
/// | 412 | precondition |
/// | 501, and every other status | permanent |
pub fn classify(status: StatusCode, code: Option<&str>, reason: Option<&str>) -> Class {
    if let Some(class) = reason.and_then(classify_reason) {
        return class;
    }
    match code {
        Some(
            "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "RESOURCE_EXHAUSTED" | "INTERNAL" | "ABORTED"
            | "CANCELLED" | "UNKNOWN",
        ) => return Class::Transient,
        Some("NOT_FOUND") => return Class::NotFound,
        Some("ALREADY_EXISTS") => return Class::Conflict,
        Some("FAILED_PRECONDITION") => return Class::Precondition,
        Some(
            "INVALID_ARGUMENT" | "PERMISSION_DENIED" | "OUT_OF_RANGE" | "UNIMPLEMENTED"
            | "DATA_LOSS",
        ) => return Class::Permanent,
        _ => {}
    }
    match status.as_u16() {
        404 | 410 => Class::NotFound,
        409 => Class::Conflict,
        412 => Class::Precondition,
        401 | 408 | 429 | 499 => Class::Transient,
        501 => Class::Permanent,
        500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

static SHARED_OPTIONS: std::sync::OnceLock<Options> = std::sync::OnceLock::new();

/// Sets the timeouts of the process's [`shared`] client (the roots and the proxy always come
/// from the environment). Called once at start-up, before any adapter is built
/// ([`crate::Gcp::connect`] does); without it the defaults apply.
///
/// # Errors
/// When the shared client was already made, with other settings.
pub fn configure(connect_timeout: Duration, timeout: Duration) -> Result<(), Error> {
    let want = Options {
        roots: Roots::from_env(),
        connect_timeout,
        timeout,
        proxy: Proxy::FromEnv,
    };
    let have = SHARED_OPTIONS.get_or_init(|| want.clone());
    if *have == want {
        Ok(())
    } else {
        Err(Error::plain(format!(
            "the shared HTTP client was made already, with timeouts {:?} (connect) and {:?}",
            have.connect_timeout, have.timeout
        )))
    }
}

/// The process's shared client for Google's APIs (one pool, one TLS set-up): the roots
/// [`Roots::from_env`] names, the proxy the environment names, and the timeouts of
/// [`configure`] (else [`CONNECT_TIMEOUT`] and [`REQUEST_TIMEOUT`]).
pub fn shared() -> Client {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let options = SHARED_OPTIONS.get_or_init(|| Options {
                roots: Roots::from_env(),
                ..Options::default()
            });
            Client::with_options(options).unwrap_or_else(|e| {
                // Only the system's store can fail (no readable root): Mozilla's still work.
                tracing::warn!(error = %e, "no system roots; trusting the compiled-in ones");
                let mut store = rustls::RootCertStore::empty();
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                Client::trusting(store, options)
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

    /// One row of the classification table: status, Google's status name, reason, class.
    type Row = (u16, Option<&'static str>, Option<&'static str>, Class);

    #[test]
    fn statuses_and_google_reasons_are_classified_by_one_table() {
        use Class::*;
        let table: &[Row] = &[
            // Google's reasons decide first, whatever the status.
            (403, None, Some("rateLimitExceeded"), Transient),
            (403, None, Some("userRateLimitExceeded"), Transient),
            (403, None, Some("quotaExceeded"), Transient),
            (400, None, Some("backendError"), Transient),
            (500, None, Some("internalError"), Transient),
            (400, None, Some("jobBackendError"), Transient),
            (400, None, Some("timeout"), Transient),
            (400, Some("INVALID_ARGUMENT"), Some("notFound"), NotFound),
            (409, None, Some("duplicate"), Conflict),
            (412, None, Some("conditionNotMet"), Precondition),
            (
                403,
                Some("PERMISSION_DENIED"),
                Some("RATE_LIMIT_EXCEEDED"),
                Transient,
            ),
            // Then Google's status name.
            (503, Some("UNAVAILABLE"), None, Transient),
            (504, Some("DEADLINE_EXCEEDED"), None, Transient),
            (429, Some("RESOURCE_EXHAUSTED"), None, Transient),
            (409, Some("ABORTED"), None, Transient),
            (500, Some("INTERNAL"), None, Transient),
            (404, Some("NOT_FOUND"), None, NotFound),
            (409, Some("ALREADY_EXISTS"), None, Conflict),
            (400, Some("FAILED_PRECONDITION"), None, Precondition),
            (400, Some("INVALID_ARGUMENT"), Some("invalid"), Permanent),
            (
                403,
                Some("PERMISSION_DENIED"),
                Some("SERVICE_DISABLED"),
                Permanent,
            ),
            (501, Some("UNIMPLEMENTED"), None, Permanent),
            // Then the status alone (a proxy's page, CDAP's plain text).
            (401, None, None, Transient),
            (401, Some("UNAUTHENTICATED"), None, Transient),
            (408, None, None, Transient),
            (429, None, None, Transient),
            (499, None, None, Transient),
            (500, None, None, Transient),
            (502, None, None, Transient),
            (503, None, None, Transient),
            (504, None, None, Transient),
            (404, None, None, NotFound),
            (410, None, None, NotFound),
            (409, None, None, Conflict),
            (412, None, None, Precondition),
            (400, None, None, Permanent),
            (403, None, None, Permanent),
            (411, None, None, Permanent),
            (413, None, None, Permanent),
            (501, None, None, Permanent),
        ];
        for &(status, code, reason, want) in table {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(
                classify(status, code, reason),
                want,
                "{status} {code:?} {reason:?}"
            );
        }
    }

    #[test]
    fn google_error_bodies_give_status_name_reason_message_and_retry_after() {
        // The JSON APIs (Cloud Storage, BigQuery): the reason is in `errors`.
        let e = ApiError::from_body(
            StatusCode::FORBIDDEN,
            br#"{"error":{"code":403,"message":"Exceeded rate limits","errors":[{"reason":"rateLimitExceeded","message":"x","domain":"usageLimits"}],"status":"PERMISSION_DENIED"}}"#,
            Some(Duration::from_secs(7)),
        );
        assert_eq!(e.code.as_deref(), Some("PERMISSION_DENIED"));
        assert_eq!(e.reason.as_deref(), Some("rateLimitExceeded"));
        assert_eq!(e.message, "Exceeded rate limits");
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.class(), Class::Transient);
        assert_eq!(
            e.to_string(),
            "HTTP 403 PERMISSION_DENIED (rateLimitExceeded): Exceeded rate limits"
        );
        // The gRPC-shaped APIs (Dataproc, Pub/Sub): the reason is an ErrorInfo detail.
        let e = ApiError::from_body(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"Job is done","status":"FAILED_PRECONDITION","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[]},{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"JOB_DONE","domain":"dataproc.googleapis.com"}]}}"#,
            None,
        );
        assert_eq!(e.reason.as_deref(), Some("JOB_DONE"));
        assert_eq!(e.class(), Class::Precondition);
        // Anything else: the start of the body.
        let e = ApiError::from_body(StatusCode::BAD_GATEWAY, b"<html>oops</html>", None);
        assert_eq!((e.code, e.reason), (None, None));
        assert_eq!(e.message, "<html>oops</html>");
        let long = "x".repeat(2000);
        let e = ApiError::from_body(StatusCode::BAD_REQUEST, long.as_bytes(), None);
        assert_eq!(e.message.len(), MESSAGE_CHARS);
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            None,
            "in the past"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn an_api_error_becomes_the_port_error_of_its_class_and_stays_its_source() {
        let e = ApiError::from_body(
            StatusCode::PRECONDITION_FAILED,
            br#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[{"reason":"conditionNotMet"}]}}"#,
            None,
        );
        let port = e.into_port("delete object");
        assert!(matches!(port, PortError::Precondition(_)), "{port:?}");
        assert!(
            port.to_string()
                .contains("delete object: HTTP 412 (conditionNotMet)"),
            "{port}"
        );
        let source = port
            .origin()
            .and_then(|s| s.downcast_ref::<ApiError>())
            .expect("the API error is kept");
        assert_eq!(source.status, StatusCode::PRECONDITION_FAILED);
        assert!(
            std::error::Error::source(&port).is_none(),
            "said once, in the message"
        );
    }

    /// A server that accepts every connection and never answers (held open until the test
    /// ends).
    async fn stalled() -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        (format!("http://{addr}"), task)
    }

    fn options(connect: Duration, whole: Duration) -> Options {
        Options {
            connect_timeout: connect,
            timeout: whole,
            proxy: Proxy::Off,
            ..Options::default()
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_at_the_calls_timeout() {
        let (base, server) = stalled().await;
        let started = std::time::Instant::now();
        let client = Client::with_options(&options(CONNECT_TIMEOUT, Duration::from_millis(300)))
            .expect("client");
        let e = client
            .post(format!("{base}/v1/x"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect_err("no answer");
        assert!(e.is_timeout(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let port = e.into_port("insert job");
        assert!(port.is_transient(), "{port}");
        server.abort();
    }

    #[tokio::test]
    async fn a_connection_that_never_opens_is_given_up_at_the_connect_timeout() {
        // A listener whose accept queue is full and that never accepts: the kernel drops
        // further SYNs, so a connect hangs until the client gives up.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                // The queue is full: connects now hang, which is what the test needs.
                _ => break,
            }
        }
        let started = std::time::Instant::now();
        let client = Client::with_options(&options(
            Duration::from_millis(300),
            Duration::from_secs(20),
        ))
        .expect("client");
        let e = client
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect_err("never connects");
        assert!(e.is_timeout(), "{e}");
        assert!(e.to_string().contains("connect"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the connect timeout (300 ms), not the call's (20 s): {:?}",
            started.elapsed()
        );
        drop((listener, fillers));
    }

    #[tokio::test]
    async fn a_body_read_as_a_stream_fails_when_a_piece_stalls() {
        let (base, server) = one_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"").await;
        let resp = Client::with_options(&options(CONNECT_TIMEOUT, Duration::from_millis(300)))
            .expect("client")
            .get(format!("{base}/o"))
            .send()
            .await
            .expect("the head comes");
        let mut stream = std::pin::pin!(resp.bytes_stream());
        let first = stream.next().await.expect("a piece").expect("two bytes");
        assert_eq!(&first[..], b"{\"");
        let e = stream
            .next()
            .await
            .expect("an error, not the end")
            .expect_err("the rest never comes");
        assert!(e.is_timeout(), "{e}");
        assert!(
            stream.next().await.is_none(),
            "the stream ends after its error"
        );
        server.abort();
    }

    /// A proxy on 127.0.0.1 that records the head of each request it gets and answers
    /// `answer` (then closes): a CONNECT is recorded with the first byte sent through the
    /// tunnel (a TLS handshake starts with 0x16).
    async fn proxy(
        answer: &'static [u8],
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let mut head = String::from_utf8_lossy(&buf[..read]).into_owned();
                    let _ = sock.write_all(answer).await;
                    if head.starts_with("CONNECT ") {
                        let mut first = [0u8; 1];
                        if sock.read_exact(&mut first).await.is_ok() {
                            head.push_str(&format!("[tunnel: {:#04x}]", first[0]));
                        }
                    }
                    let _ = tx.send(head);
                });
            }
        });
        (format!("http://proxyuser:s3cret@{addr}"), rx)
    }

    /// Whether `head` carries the proxy's credentials (`proxyuser:s3cret`, Basic).
    fn proxy_auth(head: &str) -> bool {
        head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("proxy-authorization")
                    && v.trim() == "Basic cHJveHl1c2VyOnMzY3JldA=="
            })
        })
    }

    #[tokio::test]
    async fn https_calls_go_through_the_proxys_connect_tunnel() {
        let (proxy_url, mut seen) = proxy(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        let client = Client::with_options(&Options {
            proxy: Proxy::Use {
                https: Some(proxy_url),
                http: None,
                no_proxy: String::new(),
            },
            timeout: Duration::from_secs(5),
            ..Options::default()
        })
        .expect("client");
        // The proxy closes the tunnel after the first byte: the call fails, after going
        // through it (nothing here reaches the network).
        let _ = client
            .get("https://storage.googleapis.com/storage/v1/b/x/o")
            .send()
            .await;
        let head = seen.recv().await.expect("the proxy saw a request");
        assert!(
            head.starts_with("CONNECT storage.googleapis.com:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(proxy_auth(&head), "{head}");
        assert!(
            head.ends_with("[tunnel: 0x16]"),
            "TLS inside the tunnel: {head}"
        );
    }

    #[tokio::test]
    async fn plain_http_calls_go_to_the_proxy_in_absolute_form_and_no_proxy_hosts_do_not() {
        let (proxy_url, mut seen) =
            proxy(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        // The direct server is a proxy too, in that it records what it gets: it must get an
        // origin-form request without proxy credentials.
        let (direct, mut direct_seen) =
            proxy(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndirect").await;
        let direct = direct.replace("proxyuser:s3cret@", "");
        let client = Client::with_options(&Options {
            proxy: Proxy::Use {
                https: None,
                http: Some(proxy_url),
                no_proxy: "127.0.0.1".to_owned(),
            },
            timeout: Duration::from_secs(5),
            ..Options::default()
        })
        .expect("client");
        let body = client
            .get("http://emulator.invalid:8085/v1/projects/p/topics/t")
            .send()
            .await
            .expect("through the proxy")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "ok");
        let head = seen.recv().await.expect("the proxy saw the request");
        assert!(
            head.starts_with(
                "GET http://emulator.invalid:8085/v1/projects/p/topics/t HTTP/1.1\r\n"
            ),
            "{head}"
        );
        assert!(proxy_auth(&head), "{head}");
        // NO_PROXY: straight to the server.
        let body = client
            .get(format!("{direct}/x"))
            .send()
            .await
            .expect("direct")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "direct");
        let request = direct_seen
            .recv()
            .await
            .expect("the server saw the request");
        assert!(request.starts_with("GET /x HTTP/1.1\r\n"), "{request}");
        assert!(
            !request.to_ascii_lowercase().contains("proxy-authorization"),
            "{request}"
        );
        assert!(
            seen.try_recv().is_err(),
            "the proxy saw only the first call"
        );
    }
}
