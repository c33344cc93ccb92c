//! What the REST engines share: an authorised JSON client whose every answer is classified by
//! [`crate::rest::classify`] (the one classification of the Google adapters), and the small
//! helpers that build their URLs and bodies.

use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};

use super::TokenSource;
use conveyor_core::ports::PortError;

/// An authorised JSON client of the engines' REST APIs.
#[derive(Clone)]
pub(super) struct Api {
    http: crate::rest::Client,
    token: Arc<dyn TokenSource>,
}

impl Api {
    pub(super) fn new(token: Arc<dyn TokenSource>) -> Result<Self, PortError> {
        // The process's one pool, with its timeouts (`CONVEYOR_HTTP_TIMEOUT`).
        Ok(Self {
            http: crate::http_client(),
            token,
        })
    }

    /// POSTs a create request; `true` when the resource already existed (409, Google's
    /// `ALREADY_EXISTS`): a deterministic id found its earlier self, which is adopted.
    pub(super) async fn create(
        &self,
        url: &str,
        body: &Value,
        what: &str,
    ) -> Result<bool, PortError> {
        match self.call(Method::POST, url, Some(body), what).await {
            Ok(_) => Ok(false),
            Err(PortError::Conflict(_)) => Ok(true),
            Err(e) => Err(final_unless_transient(e)),
        }
    }

    /// Sends a request that stops something (a cancel, a drain): done when it is accepted,
    /// and also when what it stops is gone (404) or ended in between (`FAILED_PRECONDITION`):
    /// nothing is left to stop.
    pub(super) async fn stop(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<(), PortError> {
        match self.call(method, url, body, what).await {
            Ok(_) | Err(PortError::NotFound(_) | PortError::Precondition(_)) => Ok(()),
            Err(e) => Err(final_unless_transient(e)),
        }
    }

    /// Calls `method url` with `body` and returns the answer's JSON (`Null` when empty).
    /// Errors are as [`crate::rest::classify`] says: transport failures, 408, 429 and 5xx are
    /// [`PortError::Transient`], 404 [`PortError::NotFound`], 409 [`PortError::Conflict`],
    /// `FAILED_PRECONDITION` [`PortError::Precondition`], the rest [`PortError::Permanent`]
    /// with Google's message. A 401 gets a new token and the call once more, then is
    /// transient. `what` names the call in messages.
    pub(super) async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, PortError> {
        let mut refreshed = false;
        let response = loop {
            let mut request = self.http.request(method.clone(), url);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = self
                .token
                .authorize(request)
                .await?
                .send()
                .await
                .map_err(|e| e.into_port(what))?;
            let status = response.status();
            if status.is_success() {
                break response;
            }
            if status == http::StatusCode::UNAUTHORIZED && !refreshed {
                tracing::warn!(
                    call = what,
                    "the token was refused (401); sending once more with a new one"
                );
                self.token.refresh().await;
                refreshed = true;
                continue;
            }
            return Err(crate::rest::ApiError::read(response).await.into_port(what));
        };
        let body = response.bytes().await.map_err(|e| e.into_port(what))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| PortError::permanent(format!("{what}: unreadable answer: {e}")))
    }
}

/// `e` as a permanent error unless it may pass: for calls where a missing resource, an existing
/// one or a refused state is not something the caller can act on.
pub(super) fn final_unless_transient(e: PortError) -> PortError {
    match e {
        PortError::NotFound(c) | PortError::Conflict(c) | PortError::Precondition(c) => {
            PortError::Permanent(c)
        }
        other => other,
    }
}

/// `s` as one URL path segment or query value: every byte but RFC 3986's unreserved
/// characters percent-encoded.
pub(super) fn seg(s: &str) -> String {
    crate::rest::segment(s).to_string()
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
}
