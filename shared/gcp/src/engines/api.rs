//! What the REST engines share: an authorised JSON client that sorts every answer into the few
//! outcomes an engine acts on, and the small helpers that build their URLs and bodies.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Map, Value};

use super::TokenSource;
use conveyor_core::ports::PortError;

/// How long one API call may take before it counts as a transient failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// An answer of an engine's API that is not an error for every caller.
#[derive(Debug)]
pub(super) enum Reply {
    /// 2xx, with the body (`Null` when empty).
    Ok(Value),
    /// 404: what the caller asked for does not exist (yet, or any more).
    NotFound(String),
    /// 409: what the caller creates exists already (Google's `ALREADY_EXISTS`).
    Conflict(String),
    /// 400 with Google's `FAILED_PRECONDITION`: not possible in the resource's current state.
    Precondition(String),
}

impl Reply {
    /// The body of a 2xx answer; anything else is the error it is.
    pub(super) fn into_value(self) -> Result<Value, PortError> {
        match self {
            Self::Ok(v) => Ok(v),
            Self::NotFound(m) => Err(PortError::NotFound(m)),
            Self::Conflict(m) | Self::Precondition(m) => Err(PortError::Permanent(m)),
        }
    }
}

/// An authorised JSON client of the engines' REST APIs.
#[derive(Clone)]
pub(super) struct Api {
    http: crate::rest::Client,
    token: Arc<dyn TokenSource>,
}

impl Api {
    pub(super) fn new(token: Arc<dyn TokenSource>) -> Result<Self, PortError> {
        // The process's one pool, each call limited to CALL_TIMEOUT.
        let http = crate::http_client().with_timeout(CALL_TIMEOUT);
        Ok(Self { http, token })
    }

    /// Calls `method url` with `body`. Transport failures, 401, 408, 429 and 5xx are
    /// [`PortError::Transient`]; 404, 409 and `FAILED_PRECONDITION` are [`Reply`]s the caller
    /// interprets; every other status is [`PortError::Permanent`] with Google's message. `what`
    /// names the call in messages.
    /// POSTs a create request; `true` when the resource already existed (409, Google's
    /// `ALREADY_EXISTS`): a deterministic id found its earlier self, which is adopted.
    pub(super) async fn create(
        &self,
        url: &str,
        body: &Value,
        what: &str,
    ) -> Result<bool, PortError> {
        match self.call(Method::POST, url, Some(body), what).await? {
            Reply::Ok(_) => Ok(false),
            Reply::Conflict(_) => Ok(true),
            Reply::NotFound(m) | Reply::Precondition(m) => Err(PortError::Permanent(m)),
        }
    }

    pub(super) async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply, PortError> {
        let token = self.token.token().await?;
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PortError::Transient(format!("{what}: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| PortError::Transient(format!("{what}: {e}")))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Reply::Ok(Value::Null));
            }
            return serde_json::from_str(&text)
                .map(Reply::Ok)
                .map_err(|e| PortError::Permanent(format!("{what}: unreadable answer: {e}")));
        }
        let (code, message) = google_error(&text);
        let detail = format!("{what}: HTTP {}: {message}", status.as_u16());
        Ok(match status.as_u16() {
            404 => Reply::NotFound(detail),
            409 => Reply::Conflict(detail),
            400 if code == "FAILED_PRECONDITION" => Reply::Precondition(detail),
            // 401: the token was refused (expired, or revoked in between): a later call
            // gets a fresh one. 403 (permission) and other 4xx need a person: permanent.
            401 | 408 | 429 | 500..=599 => return Err(PortError::Transient(detail)),
            _ => return Err(PortError::Permanent(detail)),
        })
    }
}

/// Google's error status and message (`{"error": {"status", "message"}}`), or the start of
/// whatever else the body says.
fn google_error(body: &str) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) if code.is_empty() => m.to_owned(),
        Some(m) => format!("{code}: {m}"),
        None => body.chars().take(300).collect(),
    };
    (code, message)
}

/// `s` as one URL path segment or query value (RFC 3986 unreserved characters kept).
pub(super) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A base URL without its trailing slashes.
pub(super) fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A JSON object of the fields that are set: `None`, empty strings, empty lists and empty
/// objects are left out, as the REST APIs expect of unset fields.
pub(super) fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut map = Map::new();
    for (k, v) in fields {
        let empty = match &v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            map.insert(k.to_owned(), v);
        }
    }
    Value::Object(map)
}

/// The `state` of an answer (`state`, `status.state`, ...) found by `path`.
pub(super) fn text_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = value;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unset_fields_are_left_out_of_bodies() {
        let v = object([
            ("a", json!("x")),
            ("b", Value::Null),
            ("c", json!([])),
            ("d", json!({})),
            ("e", json!(false)),
            ("f", json!("")),
        ]);
        assert_eq!(v, json!({"a": "x", "e": false}));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("cv-batch_1.x~"), "cv-batch_1.x~");
    }

    #[test]
    fn google_errors_give_their_status_and_message() {
        let (code, message) = google_error(
            r#"{"error":{"code":400,"message":"Job is done","status":"FAILED_PRECONDITION"}}"#,
        );
        assert_eq!(code, "FAILED_PRECONDITION");
        assert_eq!(message, "FAILED_PRECONDITION: Job is done");
        assert_eq!(google_error("<html>oops").1, "<html>oops");
    }
}
