//! Traced logs: each request runs in a `request` span that carries its Cloud Trace context
//! (from `X-Cloud-Trace-Context` or W3C `traceparent`) and its `httpRequest` fields, and in
//! Cloud Logging's JSON every line of the request gets them as the fields Cloud Logging
//! groups by: `logging.googleapis.com/trace`, `logging.googleapis.com/spanId`,
//! `logging.googleapis.com/trace_sampled` and `httpRequest`. The run id, pipeline and step of
//! the step's spans become top-level fields of every line too.
//!
//! tracing-stackdriver writes span fields only nested (`span`, `spans`) and sets the trace
//! field only through OpenTelemetry, a large dependency for one field; [`CloudWriter`] lifts
//! these few fields to the top of each JSON line instead.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, Request, Response};
use serde_json::{Map, Value};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;
use tracing_subscriber::fmt::MakeWriter;

static PROJECT: OnceLock<String> = OnceLock::new();

/// Sets the project that trace ids belong to (`projects/P/traces/ID`), once, at start-up.
pub fn set_project(project: &str) {
    let _ = PROJECT.set(project.to_owned());
}

/// The trace context of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 hex digits.
    pub trace_id: String,
    /// The caller's span id, when given (decimal for `X-Cloud-Trace-Context`, hex for
    /// `traceparent`, as each header writes it).
    pub span_id: Option<String>,
    /// Whether the caller sampled the trace.
    pub sampled: bool,
}

fn hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// The trace context of `headers`: W3C `traceparent` (`00-TRACE-SPAN-FLAGS`), else Google's
/// `X-Cloud-Trace-Context` (`TRACE/SPAN;o=1`). Malformed headers are ignored.
pub fn context(headers: &HeaderMap) -> Option<TraceContext> {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if let [_version, trace, span, flags] = parts.as_slice()
            && hex32(trace)
            && span.len() == 16
            && span.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Some(TraceContext {
                trace_id: trace.to_ascii_lowercase(),
                span_id: Some(span.to_ascii_lowercase()),
                sampled: u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1),
            });
        }
    }
    let cloud = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())?;
    let (ids, options) = cloud.split_once(';').unwrap_or((cloud, ""));
    let (trace, span) = ids.split_once('/').unwrap_or((ids, ""));
    if !hex32(trace) {
        return None;
    }
    Some(TraceContext {
        trace_id: trace.to_ascii_lowercase(),
        span_id: Some(span.to_owned())
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())),
        sampled: options.trim() == "o=1",
    })
}

/// Opens the `request` span of each request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let span = tracing::info_span!(
            "request",
            trace = tracing::field::Empty,
            span_id = tracing::field::Empty,
            trace_sampled = tracing::field::Empty,
            "http_request.request_method" = %req.method(),
            "http_request.request_url" = %req.uri(),
            "http_request.user_agent" = tracing::field::Empty,
            "http_request.remote_ip" = tracing::field::Empty,
            "http_request.protocol" = ?req.version(),
        );
        if span.is_disabled() {
            // Not logged at this level: nothing more to read.
            return span;
        }
        let headers = req.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        if let Some(t) = context(headers) {
            span.record("trace", t.trace_id.as_str());
            if let Some(id) = &t.span_id {
                span.record("span_id", id.as_str());
            }
            span.record("trace_sampled", t.sampled);
        }
        span.record("http_request.user_agent", header("user-agent"));
        span.record(
            "http_request.remote_ip",
            header("x-forwarded-for")
                .split(',')
                .next()
                .unwrap_or("")
                .trim(),
        );
        span
    }
}

/// Logs the end of each request with its status and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEnd;

impl<B> OnResponse<B> for RequestEnd {
    fn on_response(self, resp: &Response<B>, latency: Duration, _span: &Span) {
        tracing::info!(
            "http_request.status" = resp.status().as_u16(),
            "http_request.latency" = %format!("{:.6}s", latency.as_secs_f64()),
            "request finished"
        );
    }
}

/// The tower layer: a `request` span per request with its trace context and `httpRequest`
/// fields, and a `request finished` line with status and latency.
pub fn layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, (), RequestEnd>
{
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(RequestEnd)
}

/// Span fields copied to the top of every line: what Cloud Logging queries filter on.
const LIFTED: [&str; 5] = ["run_id", "pipeline", "step", "attempt", "job_id"];

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Rewrites one Cloud Logging JSON line: the trace context and `httpRequest` fields of its
/// spans, and the [`LIFTED`] ones, become top-level fields. A line that is not a JSON object
/// is returned as it is.
pub fn lift(line: &str, project: Option<&str>) -> String {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let spans: Vec<Map<String, Value>> = map
        .get("spans")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_object().cloned()).collect())
        .unwrap_or_default();
    let mut http = match map.remove("httpRequest") {
        Some(Value::Object(h)) => h,
        _ => Map::new(),
    };
    for span in spans.iter().rev() {
        for (k, v) in span {
            match k.as_str() {
                "trace" => {
                    if let Some(id) = v.as_str() {
                        let full = match project {
                            Some(p) => format!("projects/{p}/traces/{id}"),
                            None => id.to_owned(),
                        };
                        map.entry("logging.googleapis.com/trace")
                            .or_insert(Value::String(full));
                    }
                }
                "span_id" => {
                    map.entry("logging.googleapis.com/spanId")
                        .or_insert_with(|| v.clone());
                }
                "trace_sampled" => {
                    map.entry("logging.googleapis.com/trace_sampled")
                        .or_insert_with(|| v.clone());
                }
                k if k.starts_with("http_request.") => {
                    http.entry(camel(&k["http_request.".len()..]))
                        .or_insert_with(|| v.clone());
                }
                k if LIFTED.contains(&k) => {
                    map.entry(k).or_insert_with(|| v.clone());
                }
                _ => {}
            }
        }
    }
    if !http.is_empty() {
        map.insert("httpRequest".to_owned(), Value::Object(http));
    }
    serde_json::to_string(&Value::Object(map)).unwrap_or_else(|_| line.to_owned())
}

/// A `MakeWriter` for tracing-stackdriver that passes each line through [`lift`].
#[derive(Clone)]
pub struct CloudWriter<M> {
    inner: M,
}

impl<M> CloudWriter<M> {
    /// Wraps `inner` (stdout in production).
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

/// One line being written; lifted and passed on when dropped (the formatter writes a whole
/// event, then drops its writer).
pub struct LineWriter<W: Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineWriter<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let mut out = String::new();
        for line in text.lines() {
            out.push_str(&lift(line, PROJECT.get().map(String::as_str)));
            out.push('\n');
        }
        let _ = self.out.write_all(out.as_bytes());
        let _ = self.out.flush();
    }
}

impl<'a, M> MakeWriter<'a> for CloudWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = LineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            buf: Vec::new(),
            out: self.inner.make_writer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn traceparent_and_the_cloud_header_give_the_trace_id() {
        let tp = context(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]))
        .unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(tp.sampled);
        let cloud = context(&headers(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )]))
        .unwrap();
        assert_eq!(cloud.trace_id, "105445aa7843bc8bf206b12000100000");
        assert_eq!(cloud.span_id.as_deref(), Some("1"));
        assert!(
            context(&headers(&[("traceparent", "garbage")])).is_none(),
            "malformed headers are ignored"
        );
    }

    #[test]
    fn lift_moves_span_fields_to_the_top_and_keeps_a_non_json_line() {
        let line = r#"{"severity":"INFO","message":"x","httpRequest":{"status":200},"spans":[{"name":"request","trace":"abc","http_request.request_method":"POST"},{"name":"load_one","run_id":"r1","pipeline":"p"}]}"#;
        let v: Value = serde_json::from_str(&lift(line, Some("proj"))).unwrap();
        assert_eq!(
            v["logging.googleapis.com/trace"],
            "projects/proj/traces/abc"
        );
        assert_eq!(v["httpRequest"]["requestMethod"], "POST");
        assert_eq!(v["httpRequest"]["status"], 200);
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["pipeline"], "p");
        assert_eq!(lift("plain text", None), "plain text");
    }
}
