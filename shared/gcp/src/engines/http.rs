//! `engine: http`: a call to an HTTP endpoint, with an OIDC ID token for an audience.
//!
//! - submit: the call (`method url`, `headers`, `body`), with `Idempotency-Key` and
//!   `X-Conveyor-Job-Id` set to the job id and, with `audience`, `Authorization: Bearer` an
//!   ID token from [`IdTokens`]; every call is bounded by `call_timeout`. A status in
//!   `success_codes` (default 2xx) submits the job; 429 and 503 may pass (sent again under the
//!   same job id); a transport failure, a timeout, 408 or another 5xx may pass only when
//!   sending again is safe (`GET`, `PUT`, `DELETE`, or `idempotent: true`); anything else
//!   fails the job, with the status and the start of the answer. A job id this process already
//!   called successfully is adopted, not called again.
//! - state: without `status`, the job ended when the call succeeded (submit returns only
//!   then): `SUCCEEDED`. With `status`, `GET status.url` (same token, same job id headers)
//!   and the value of `status.field` in its JSON: in `succeeded` → `SUCCEEDED`, in `failed` →
//!   `FAILED`, else `RUNNING`. A 404 is a job not found yet.
//! - cancel: nothing to cancel (the endpoint has no cancel call Conveyor knows).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::Method;
use serde_json::Value;

use conveyor_core::config::{BatchSpec, HttpJob};
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Bytes of an answer kept in an error message.
const MAX_ANSWER_IN_ERROR: usize = 500;
/// An ID token is used for this long (Google's last an hour).
const ID_TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// Where OIDC ID tokens for an audience come from.
#[async_trait]
pub trait IdTokens: Send + Sync {
    /// An ID token for `audience`, or `None` to call without one.
    ///
    /// # Errors
    /// [`PortError::Transient`] when the token service cannot be reached now.
    async fn id_token(&self, audience: &str) -> Result<Option<String>, PortError>;
}

/// A fixed token, or none: the embedded mode (`CONVEYOR_HTTP_ID_TOKEN`) and tests.
#[derive(Clone, Default)]
pub struct FixedIdToken(Option<String>);

impl FixedIdToken {
    /// Always `token` (`None`: calls go without a token).
    pub fn new(token: Option<String>) -> Self {
        Self(token)
    }

    /// `CONVEYOR_HTTP_ID_TOKEN` when set and not empty, else none.
    pub fn from_env() -> Self {
        Self(
            std::env::var("CONVEYOR_HTTP_ID_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
        )
    }
}

impl std::fmt::Debug for FixedIdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A token is a secret: never in logs.
        f.write_str(if self.0.is_some() {
            "FixedIdToken(<redacted>)"
        } else {
            "FixedIdToken(none)"
        })
    }
}

#[async_trait]
impl IdTokens for FixedIdToken {
    async fn id_token(&self, _audience: &str) -> Result<Option<String>, PortError> {
        Ok(self.0.clone())
    }
}

/// The service account's ID tokens from the metadata server (Cloud Run), one per audience,
/// kept for 50 minutes.
#[derive(Clone, Debug)]
pub struct MetadataIdTokens {
    url: String,
    cached: Arc<tokio::sync::Mutex<HashMap<String, (String, Instant)>>>,
}

impl MetadataIdTokens {
    /// The metadata server at `GCE_METADATA_HOST` (`host:port`), else
    /// `metadata.google.internal`.
    pub fn from_env() -> Self {
        Self::at(&crate::auth::metadata_root())
    }

    /// The metadata server at `root` (`http://host:port`).
    pub fn at(root: &str) -> Self {
        Self {
            url: format!(
                "{}/computeMetadata/v1/instance/service-accounts/default/identity",
                root.trim_end_matches('/')
            ),
            cached: Arc::default(),
        }
    }
}

#[async_trait]
impl IdTokens for MetadataIdTokens {
    async fn id_token(&self, audience: &str) -> Result<Option<String>, PortError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, at)) = cached.get(audience)
            && at.elapsed() < ID_TOKEN_LIFETIME
        {
            return Ok(Some(token.clone()));
        }
        let what = format!("ID token for {audience} from the metadata server");
        let resp = crate::http_client()
            .get(&self.url)
            .query(&[("audience", audience), ("format", "full")])
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| e.into_port(&what))?;
        if !resp.status().is_success() {
            let e = crate::rest::ApiError::read(resp).await;
            return Err(PortError::transient(format!("cannot get an {what}: {e}")).with_source(e));
        }
        let token = resp
            .text()
            .await
            .map_err(|e| e.into_port(&what))?
            .trim()
            .to_owned();
        cached.insert(audience.to_owned(), (token.clone(), Instant::now()));
        Ok(Some(token))
    }
}

/// Calls to HTTP endpoints.
#[derive(Clone)]
pub struct HttpEngine {
    tokens: Arc<dyn IdTokens>,
    /// Job ids whose call succeeded in this process: a second submit adopts them.
    called: Arc<Mutex<HashSet<String>>>,
}

impl HttpEngine {
    /// An engine whose ID tokens come from `tokens`.
    pub fn new(tokens: Arc<dyn IdTokens>) -> Self {
        Self {
            tokens,
            called: Arc::default(),
        }
    }

    /// One call: `method url` with the job id headers, the token, `headers` and `body`.
    async fn call(
        &self,
        spec: &HttpJob,
        method: Method,
        url: &str,
        job_id: &JobId,
        extra: Option<(&BTreeMap<String, String>, Option<&String>)>,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let mut req = crate::http_client()
            .request(method, url)
            .timeout(spec.call_timeout())
            .header("Idempotency-Key", job_id.as_str())
            .header("X-Conveyor-Job-Id", job_id.as_str());
        if let Some(audience) = &spec.audience
            && let Some(token) = self
                .tokens
                .id_token(audience)
                .await
                .map_err(CallError::Token)?
        {
            req = req.bearer_auth(token);
        }
        if let Some((headers, body)) = extra {
            let typed = headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"));
            if let Some(body) = body {
                if !typed {
                    req = req.header("Content-Type", "application/json");
                }
                req = req.body(body.clone().into_bytes());
            }
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.send().await.map_err(CallError::Transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(CallError::Transport)?;
        Ok((status, body.to_vec()))
    }
}

/// Why a call got no status.
enum CallError {
    Token(PortError),
    Transport(crate::rest::Error),
}

fn spec_of(spec: &BatchSpec) -> Result<&HttpJob, PortError> {
    match spec {
        BatchSpec::Http(s) => Ok(s),
        other => Err(PortError::permanent(format!(
            "the http engine cannot run a {} batch",
            other.engine()
        ))),
    }
}

/// The part of `spec` that reads its job's state, rendered with `vars` and the job id: the
/// status URL and the audience. The poll step rebuilds a request without secrets, so the
/// call's own URL, headers and body (which may hold one) are left out.
fn status_spec(
    spec: &HttpJob,
    job_id: &JobId,
    mut vars: BTreeMap<String, String>,
) -> Result<BatchSpec, PortError> {
    let mut only = spec.clone();
    only.headers.clear();
    only.body = None;
    only.url = spec
        .status
        .as_ref()
        .map(|s| s.url.clone())
        .unwrap_or_default();
    vars.insert("job_id".to_owned(), job_id.as_str().to_owned());
    BatchSpec::Http(only)
        .rendered(&vars)
        .map_err(|e| PortError::permanent(format!("the job's status cannot be read: {e}")))
}

/// The start of an answer, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(MAX_ANSWER_IN_ERROR).collect();
    if text.chars().count() > MAX_ANSWER_IN_ERROR {
        s.push('…');
    }
    s
}

/// The value at a dotted `field` of a JSON answer, as text (numbers and booleans too).
fn field_at(value: &Value, field: &str) -> Option<String> {
    let mut v = value;
    for key in field.split('.') {
        v = v.get(key)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

/// A URL without its query, for messages (a query may hold a key).
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[async_trait]
impl BatchEngine for HttpEngine {
    /// A call this process made: adopted. Another process's call is known by the submit
    /// claim's `.done` mark only (an endpoint cannot be asked whether it was called).
    async fn adopt(&self, req: &BatchRequest) -> Result<Option<Submitted>, PortError> {
        let called = self
            .called
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(req.job_id.as_str());
        Ok(called.then(|| Submitted {
            job_id: req.job_id.clone(),
            adopted: true,
        }))
    }

    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        let adopted = Submitted {
            job_id: req.job_id.clone(),
            adopted: true,
        };
        if self
            .called
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(req.job_id.as_str())
        {
            return Ok(adopted);
        }
        let method = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| PortError::permanent(format!("{:?} is not a method", spec.method)))?;
        let what = format!("{} {}", spec.method.to_ascii_uppercase(), shown(&spec.url));
        let safe = spec.retry_is_safe();
        let (status, body) = match self
            .call(
                spec,
                method,
                &spec.url,
                &req.job_id,
                Some((&spec.headers, spec.body.as_ref())),
            )
            .await
        {
            Ok(answer) => answer,
            Err(CallError::Token(e)) => return Err(e),
            Err(CallError::Transport(e)) if safe => return Err(e.into_port(&what)),
            Err(CallError::Transport(e)) => {
                return Err(PortError::permanent(format!(
                    "{what}: {e}; not sent again: the endpoint may have acted on it (set \
                     `idempotent: true` if it does a call once per Idempotency-Key)"
                )));
            }
        };
        if spec.succeeded(status) {
            self.called
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(req.job_id.as_str().to_owned());
            return Ok(Submitted {
                job_id: req.job_id.clone(),
                adopted: false,
            });
        }
        let message = format!("{what}: HTTP {status}: {}", excerpt(&body));
        let transient = matches!(status, 429 | 503)
            || (safe && (status == 408 || (500..600).contains(&status)));
        Err(if transient {
            PortError::transient(message)
        } else {
            PortError::permanent(message)
        })
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let rendered = status_spec(spec_of(spec)?, job_id, BTreeMap::new())?;
        self.status_of(&rendered, job_id).await
    }

    async fn follow(&self, req: &BatchRequest) -> Result<JobState, PortError> {
        let rendered = status_spec(spec_of(&req.spec)?, &req.job_id, req.vars.clone())?;
        self.status_of(&rendered, &req.job_id).await
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        spec_of(spec)?;
        tracing::warn!(
            job_id = %job_id,
            "an http job has no cancel call: the endpoint's work is left as it is"
        );
        Ok(())
    }
}

impl HttpEngine {
    /// The state of a (rendered) spec's job: its status URL's, or SUCCEEDED without one.
    async fn status_of(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let s = spec_of(spec)?;
        let Some(status) = &s.status else {
            return Ok(JobState {
                state: "SUCCEEDED".to_owned(),
                terminal: true,
                error: None,
                log: None,
            });
        };
        let what = format!("GET {}", shown(&status.url));
        let (code, body) = match self.call(s, Method::GET, &status.url, job_id, None).await {
            Ok(answer) => answer,
            Err(CallError::Token(e)) => return Err(e),
            Err(CallError::Transport(e)) => return Err(e.into_port(&what)),
        };
        if code == 404 {
            return Err(PortError::not_found(format!("{what}: HTTP 404")));
        }
        if !(200..300).contains(&code) {
            let message = format!("{what}: HTTP {code}: {}", excerpt(&body));
            return Err(if code == 408 || code == 429 || code >= 500 {
                PortError::transient(message)
            } else {
                PortError::permanent(message)
            });
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| {
            PortError::permanent(format!(
                "{what}: the answer is not JSON ({e}): {}",
                excerpt(&body)
            ))
        })?;
        let value = field_at(&answer, &status.field).ok_or_else(|| {
            PortError::permanent(format!(
                "{what}: the answer has no `{}`: {}",
                status.field,
                excerpt(&body)
            ))
        })?;
        let (state, error) = if status.succeeded.contains(&value) {
            ("SUCCEEDED", None)
        } else if status.failed.contains(&value) {
            (
                "FAILED",
                Some(format!(
                    "{what}: `{}` is {value}: {}",
                    status.field,
                    excerpt(&body)
                )),
            )
        } else {
            ("RUNNING", None)
        };
        Ok(JobState {
            state: state.to_owned(),
            terminal: spec.is_terminal(state),
            error,
            log: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    use super::*;
    use serde_json::json;

    /// A metadata server that answers an ID token naming its audience and a count, and
    /// refuses requests without `Metadata-Flavor: Google` or `audience`, as the real one does.
    async fn metadata() -> (String, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            get(
                move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok())
                        != Some("Google")
                    {
                        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor".to_owned());
                    }
                    let Some(audience) = q.get("audience") else {
                        return (StatusCode::BAD_REQUEST, "no audience".to_owned());
                    };
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    (StatusCode::OK, format!("jwt-{audience}-{n}\n"))
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), calls)
    }

    #[tokio::test]
    async fn an_id_token_comes_from_the_metadata_server_once_per_audience() {
        let (root, calls) = metadata().await;
        let tokens = MetadataIdTokens::at(&root);
        let a = "https://export-abc-uc.a.run.app";
        assert_eq!(
            tokens.id_token(a).await.expect("token").as_deref(),
            Some("jwt-https://export-abc-uc.a.run.app-1")
        );
        assert_eq!(
            tokens.id_token(a).await.expect("token").as_deref(),
            Some("jwt-https://export-abc-uc.a.run.app-1"),
            "kept"
        );
        assert_eq!(
            tokens
                .id_token("https://other")
                .await
                .expect("token")
                .as_deref(),
            Some("jwt-https://other-2")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(format!("{:?}", FixedIdToken::new(Some("s3cret".into()))).contains("redacted"));
        let down = MetadataIdTokens::at("http://127.0.0.1:1");
        assert!(down.id_token(a).await.expect_err("down").is_transient());
    }

    #[test]
    fn a_status_field_is_read_by_its_dotted_path_as_text() {
        let v = json!({"status": {"state": "DONE", "done": true, "step": 3}});
        assert_eq!(field_at(&v, "status.state").as_deref(), Some("DONE"));
        assert_eq!(field_at(&v, "status.done").as_deref(), Some("true"));
        assert_eq!(field_at(&v, "status.step").as_deref(), Some("3"));
        assert_eq!(field_at(&v, "status.missing"), None);
        assert_eq!(field_at(&v, "status"), None);
        assert_eq!(shown("https://x/run?key=s3cret"), "https://x/run");
        assert_eq!(
            excerpt(&[b'a'; 600]).chars().count(),
            MAX_ANSWER_IN_ERROR + 1
        );
    }
}
