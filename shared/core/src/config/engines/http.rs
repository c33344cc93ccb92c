//! `engine: http`: a call to an HTTP endpoint (a Cloud Run service, a Cloud Function, any
//! API), with an OIDC ID token for an audience, success by status code, and long-running work
//! followed by polling a status URL.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Engine, Kind, PROCESS_TERMINAL, Problems, RUNNING, lenient, map, opt, say};

/// How long one call may take when `call_timeout` is not set.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `call_timeout` accepted: longer work belongs behind a status URL.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The methods a call may use.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A call to an HTTP endpoint. Every call carries the job id in `Idempotency-Key` and
/// `X-Conveyor-Job-Id`, and, with `audience`, `Authorization: Bearer <ID token>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpJob {
    /// The endpoint (`https://export-abc123-uc.a.run.app/export?date={date}`).
    pub url: String,
    /// `GET`, `POST` (default), `PUT`, `PATCH` or `DELETE`.
    #[serde(default = "post")]
    pub method: String,
    /// Headers of the call (a `{secret:…}` placeholder keeps a key out of the file).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body of the call (sent as `application/json` unless `headers` say otherwise).
    #[serde(default)]
    pub body: Option<String>,
    /// The audience of the OIDC ID token sent as `Authorization: Bearer` (a Cloud Run
    /// service's URL); none: no token. On Google Cloud the token is the function's service
    /// account's, from the metadata server; embedded, `CONVEYOR_HTTP_ID_TOKEN` or none.
    #[serde(default)]
    pub audience: Option<String>,
    /// The status codes that mean success (default: any 2xx).
    #[serde(default, deserialize_with = "lenient::codes")]
    pub success_codes: Vec<u16>,
    /// The endpoint does a call only once per `Idempotency-Key`, so a `POST` or `PATCH` whose
    /// answer was lost (a timeout, a 500) may be sent again. `GET`, `PUT` and `DELETE` are
    /// retried anyway; a `POST` or `PATCH` without this is retried only after a 429 or 503.
    #[serde(default, deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub idempotent: bool,
    /// How long one call may take, connecting, sending and reading the answer (default
    /// `30s`, at most `15m`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub call_timeout: Option<Duration>,
    /// Long-running work: after the call succeeds, the job is followed by reading this status
    /// URL until a field says it ended. None: the call's success is the job's.
    #[serde(default)]
    pub status: Option<HttpStatus>,
}

/// Where and how the state of long-running work is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpStatus {
    /// The status URL, read with `GET` (`https://…/jobs/{job_id}`), with the ID token.
    pub url: String,
    /// The field of the JSON answer that holds the state (dotted: `status.state`; default
    /// `state`).
    #[serde(default = "state_field")]
    pub field: String,
    /// The field's values that mean the work succeeded (default `[SUCCEEDED]`).
    #[serde(default = "succeeded")]
    pub succeeded: Vec<String>,
    /// The field's values that mean it failed (default `[FAILED]`); any other value means it
    /// still runs.
    #[serde(default = "failed")]
    pub failed: Vec<String>,
}

fn post() -> String {
    "POST".to_owned()
}

fn state_field() -> String {
    "state".to_owned()
}

fn succeeded() -> Vec<String> {
    vec!["SUCCEEDED".to_owned()]
}

fn failed() -> Vec<String> {
    vec!["FAILED".to_owned()]
}

impl HttpJob {
    /// How long one call may take.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT)
    }

    /// Whether a call whose answer was lost may be sent again.
    pub fn retry_is_safe(&self) -> bool {
        self.idempotent || !matches!(self.method.to_ascii_uppercase().as_str(), "POST" | "PATCH")
    }

    /// Whether `status` means success.
    pub fn succeeded(&self, status: u16) -> bool {
        if self.success_codes.is_empty() {
            (200..300).contains(&status)
        } else {
            self.success_codes.contains(&status)
        }
    }
}

/// What this engine is called and what its states mean: `SUCCEEDED` once the call (and the
/// status, if any) says so; a status value in `failed` is `FAILED`; any other is `RUNNING`.
const KIND: Kind = Kind {
    name: "http",
    success: "SUCCEEDED",
    non_terminal: &["PENDING", "RUNNING"],
    terminal: PROCESS_TERMINAL,
    running: RUNNING,
};

/// `url` is an http(s) URL, or starts with a placeholder that will be one.
fn url_problem(o: &mut Problems, path: &str, url: &str) {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://") || url.starts_with('{')) {
        say(
            o,
            path,
            format!("{url:?} must be an http:// or https:// URL"),
        );
    }
}

impl Engine for HttpJob {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        url_problem(o, "url", &self.url);
        if !METHODS.contains(&self.method.to_ascii_uppercase().as_str()) {
            say(
                o,
                "method",
                format!("{:?} is not one of {}", self.method, METHODS.join(", ")),
            );
        }
        for code in &self.success_codes {
            if !(100..=599).contains(code) {
                say(o, "success_codes", format!("{code} is not an HTTP status"));
            }
        }
        if let Some(t) = self.call_timeout
            && (t.is_zero() || t > MAX_CALL_TIMEOUT)
        {
            say(
                o,
                "call_timeout",
                "must be more than 0s and at most 15m (longer work: use `status`)",
            );
        }
        if let Some(a) = &self.audience
            && a.trim().is_empty()
        {
            say(
                o,
                "audience",
                "must not be empty (leave it out for no token)",
            );
        }
        if let Some(s) = &self.status {
            url_problem(o, "status.url", &s.url);
            if s.field.trim().is_empty() || s.field.split('.').any(str::is_empty) {
                say(
                    o,
                    "status.field",
                    "must name a field (`state`, `status.state`)",
                );
            }
            if s.succeeded.is_empty() {
                say(o, "status.succeeded", "must name at least one value");
            }
            if let Some(v) = s.succeeded.iter().find(|v| s.failed.contains(v)) {
                say(o, "status.failed", format!("{v:?} is also in `succeeded`"));
            }
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        f("url", &mut self.url);
        map(f, "headers", &mut self.headers);
        opt(f, "body", &mut self.body);
        opt(f, "audience", &mut self.audience);
        if let Some(s) = &mut self.status {
            f("status.url", &mut s.url);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> HttpJob {
        let mut base = serde_json::json!({"url": "https://svc.example.com/run"});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    fn problems(s: &HttpJob) -> Vec<String> {
        let mut out = Problems::new();
        s.problems(&mut out);
        out.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn a_call_posts_by_default_succeeds_on_2xx_and_retries_a_post_only_when_idempotent() {
        let s = spec(serde_json::json!({}));
        assert_eq!(s.method, "POST");
        assert!(s.succeeded(200) && s.succeeded(204) && !s.succeeded(302));
        assert!(!s.retry_is_safe());
        assert!(spec(serde_json::json!({"idempotent": "true"})).retry_is_safe());
        assert!(spec(serde_json::json!({"method": "PUT"})).retry_is_safe());
        let codes = spec(serde_json::json!({"success_codes": [202]}));
        assert!(codes.succeeded(202) && !codes.succeeded(200));
        assert_eq!(s.call_timeout(), DEFAULT_CALL_TIMEOUT);
        let status = spec(serde_json::json!({"status": {"url": "https://svc/jobs/{job_id}"}}));
        let st = status.status.expect("status");
        assert_eq!(
            (st.field.as_str(), st.succeeded, st.failed),
            (
                "state",
                vec!["SUCCEEDED".to_owned()],
                vec!["FAILED".to_owned()]
            )
        );
    }

    #[test]
    fn a_bad_url_method_code_timeout_or_status_is_refused() {
        let bad = spec(serde_json::json!({
            "url": "ftp://x", "method": "FETCH", "success_codes": [700],
            "call_timeout": "1h",
            "status": {"url": "jobs/1", "field": "a..b", "succeeded": [], "failed": []},
        }));
        assert_eq!(
            problems(&bad),
            [
                "url",
                "method",
                "success_codes",
                "call_timeout",
                "status.url",
                "status.field",
                "status.succeeded"
            ]
        );
        assert!(problems(&spec(serde_json::json!({"url": "{base}/run"}))).is_empty());
    }
}
