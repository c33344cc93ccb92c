//! The deployed console's actions: it asks the submit function, which has the batch engines
//! and the permissions to start jobs, over HTTP (`POST URL/rerun`, `POST URL/mark-success`)
//! with the console service account's ID token (audience: the submit function's URL), as
//! `conveyor rerun --remote` does. The operator who confirmed goes along as `by` and is
//! recorded in the run log.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conveyor_console::actions::{Act, ActError, Action};
use conveyor_gcp::engines::IdTokens;
use serde_json::{Value, json};

/// How long an action may take at the submit function: a re-run submits the next job, which
/// may take a while at a batch service (Cloud Run's own limit is longer).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of an answer kept in an error.
const MAX_ANSWER: usize = 500;

/// Re-run and mark-success by the submit function at `url`.
pub struct RemoteSubmit {
    url: String,
    tokens: Arc<dyn IdTokens>,
    http: conveyor_gcp::rest::Client,
    timeout: Duration,
}

impl RemoteSubmit {
    /// Actions at the submit function `url` (its Cloud Run URL, also the ID token's audience),
    /// with tokens from `tokens`.
    pub fn new(url: &str, tokens: Arc<dyn IdTokens>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            tokens,
            http: conveyor_gcp::http_client(),
            timeout: ACTION_TIMEOUT,
        }
    }

    /// `POST {url}{path}` with `body` and the token; the outcome's summary, or why not.
    async fn post(&self, path: &str, body: &Value) -> Result<String, ActError> {
        let token =
            self.tokens.id_token(&self.url).await.map_err(|e| {
                ActError::Failed(format!("no ID token for the submit function: {e}"))
            })?;
        let target = format!("{}{path}", self.url);
        let mut req = self
            .http
            .post(target.as_str())
            .timeout(self.timeout)
            .json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ActError::Failed(format!("POST {target}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ActError::Failed(format!("POST {target}: {e}")))?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        let field = |name: &str| {
            answer
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if status.is_success() {
            return Ok(field("summary").unwrap_or_else(|| "done".to_owned()));
        }
        let said = field("reason").unwrap_or_else(|| text.chars().take(MAX_ANSWER).collect());
        match status.as_u16() {
            // The submit function refused the request itself (the run is open, no such job).
            400 | 409 => Err(ActError::Refused(said)),
            401 | 403 => Err(ActError::Failed(format!(
                "the submit function refused the console's identity (HTTP {status}: {said}): \
                 the console's service account needs run.invoker on it and must be in its \
                 CONVEYOR_AUTH_ALLOWED"
            ))),
            _ => Err(ActError::Failed(format!(
                "the submit function answered HTTP {status}: {said}"
            ))),
        }
    }
}

#[async_trait]
impl Act for RemoteSubmit {
    async fn act(&self, action: &Action, by: &str) -> Result<String, ActError> {
        match action {
            Action::Rerun { run, from } => {
                self.post("/rerun", &json!({"run": run, "from": from, "by": by}))
                    .await
            }
            Action::MarkSuccess { run, job, reason } => {
                let body = json!({"run": run, "job": job, "reason": reason, "by": by});
                self.post("/mark-success", &body).await
            }
        }
    }
}
