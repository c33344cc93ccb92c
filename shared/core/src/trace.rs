//! Traced requests: each request runs in a `request` span that carries its Cloud Trace
//! context (from `X-Cloud-Trace-Context` or W3C `traceparent`) and its `httpRequest` fields.
//! In Cloud Logging's JSON, `conveyor-service`'s writer lifts them to the fields Cloud Logging
//! groups by (`logging.googleapis.com/trace`, `httpRequest`, ...).

use std::time::Duration;

use axum::http::{HeaderMap, Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

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

tokio::task_local! {
    /// The trace id of the request being handled (set by the functions' HTTP handler), so a
    /// run it starts can record it ([`current_trace_id`]).
    static TRACE_ID: String;
}

/// Runs `f` with `trace_id` as the current request's trace id.
pub async fn with_trace_id<F: std::future::Future>(trace_id: Option<String>, f: F) -> F::Output {
    match trace_id {
        Some(id) => TRACE_ID.scope(id, f).await,
        None => f.await,
    }
}

/// The trace id of the request being handled, when it carried one.
pub fn current_trace_id() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
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
}
