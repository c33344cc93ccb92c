//! Membership of Google groups through the Cloud Identity Groups API (cloudidentity.v1), for
//! the console's `group:` operators.
//!
//! A check is `groups.lookup` (the group's e-mail to its resource name), then
//! `groups.memberships.checkTransitiveMembership` (members of nested groups count). That
//! method needs a Cloud Identity Premium or Google Workspace Enterprise account and answers
//! 403 otherwise; after a 403 the client uses `groups.memberships.lookup` instead, which
//! finds **direct** members only, for the rest of the process's life. Either way the caller's
//! service account must be allowed to see the group's members (the group's "who can view
//! members" setting, or the Groups Reader admin role), which is Cloud Identity's, not IAM's.
//!
//! Answers are cached for a few minutes (a removed member keeps access that long); every call
//! has a timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use conveyor_core::ports::PortError;
use http::StatusCode;
use serde::Deserialize;

use crate::GcpAuth;

/// The API's endpoint.
pub const CLOUD_IDENTITY: &str = "https://cloudidentity.googleapis.com";

/// How long an answer is kept by default.
pub const MEMBERSHIP_TTL: Duration = Duration::from_secs(5 * 60);

/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Kept answers: `(group, member)` → the answer and when it was had.
type Answers = HashMap<(String, String), (bool, Instant)>;

/// The Groups API client with its cache. Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct CloudIdentity {
    http: crate::rest::Client,
    base: String,
    auth: GcpAuth,
    ttl: Duration,
    timeout: Duration,
    answers: Arc<Mutex<Answers>>,
    /// Group e-mail → resource name (`groups/ID`) and when it was had.
    names: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    /// Whether `checkTransitiveMembership` may be used (false after a 403).
    transitive: Arc<AtomicBool>,
}

impl std::fmt::Debug for CloudIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudIdentity")
            .field("base", &self.base)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transitive {
    #[serde(default)]
    has_membership: bool,
}

impl CloudIdentity {
    /// The API at `base` ([`CLOUD_IDENTITY`]; a fake in tests), called with `auth`.
    pub fn new(base: &str, auth: GcpAuth) -> Self {
        Self {
            http: crate::http_client(),
            base: base.trim_end_matches('/').to_owned(),
            auth,
            ttl: MEMBERSHIP_TTL,
            timeout: CALL_TIMEOUT,
            answers: Arc::default(),
            names: Arc::default(),
            transitive: Arc::new(AtomicBool::new(true)),
        }
    }

    /// This client keeping answers for `ttl` (default [`MEMBERSHIP_TTL`]).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// This client with each call limited to `timeout` (default [`CALL_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether `email` is a member of the group `group` (transitively where the account
    /// allows, else directly: see the module's text).
    ///
    /// # Errors
    /// Transient when the API cannot be reached or answers 5xx/429; permanent when it refuses
    /// the caller (403 on the lookups) or does not know the group.
    pub async fn is_member(&self, group: &str, email: &str) -> Result<bool, PortError> {
        let key = (group.to_ascii_lowercase(), email.to_ascii_lowercase());
        if let Some((answer, at)) = lock(&self.answers).get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(*answer);
        }
        let name = self.group_name(&key.0).await?;
        let answer = self.check(&name, &key.1).await?;
        lock(&self.answers).insert(key, (answer, Instant::now()));
        Ok(answer)
    }

    /// `groups/ID` of the group `group`.
    async fn group_name(&self, group: &str) -> Result<String, PortError> {
        if let Some((name, at)) = lock(&self.names).get(group)
            && at.elapsed() < self.ttl
        {
            return Ok(name.clone());
        }
        let what = format!("look up the Google group {group}");
        let (status, body) = self
            .get(
                &format!("{}/v1/groups:lookup", self.base),
                &[("groupKey.id", group)],
                &what,
            )
            .await?;
        if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN {
            // The API answers 403 for a group it will not show as for one that does not exist.
            return Err(PortError::permanent(format!(
                "{what}: HTTP {status}: no such group, or the console's service account may not \
                 see it"
            )));
        }
        let name = serde_json::from_slice::<Named>(&body)
            .ok()
            .and_then(|n| n.name)
            .filter(|n| n.starts_with("groups/"))
            .ok_or_else(|| {
                PortError::transient(format!("{what}: an answer without a group name"))
            })?;
        lock(&self.names).insert(group.to_owned(), (name.clone(), Instant::now()));
        Ok(name)
    }

    /// Whether `email` is a member of the group `name`.
    async fn check(&self, name: &str, email: &str) -> Result<bool, PortError> {
        if self.transitive.load(Ordering::Relaxed) {
            let what = format!("check whether {email} is a member of {name} (transitively)");
            let query = format!("member_key_id == '{}'", email.replace('\'', ""));
            let (status, body) = self
                .get(
                    &format!(
                        "{}/v1/{name}/memberships:checkTransitiveMembership",
                        self.base
                    ),
                    &[("query", &query)],
                    &what,
                )
                .await?;
            if status != StatusCode::FORBIDDEN {
                return serde_json::from_slice::<Transitive>(&body)
                    .map(|t| t.has_membership)
                    .map_err(|e| PortError::transient(format!("{what}: {e}")));
            }
            // Not a premium account: direct membership from now on.
            self.transitive.store(false, Ordering::Relaxed);
            tracing::warn!(
                group = %name,
                "checkTransitiveMembership refused (403: it needs Cloud Identity Premium or Workspace Enterprise); checking direct membership (memberships.lookup) from now on: members of nested groups are not operators"
            );
        }
        let what = format!("look up {email}'s membership of {name}");
        let (status, _) = self
            .get(
                &format!("{}/v1/{name}/memberships:lookup", self.base),
                &[("memberKey.id", email)],
                &what,
            )
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::FORBIDDEN => Err(PortError::permanent(format!(
                "{what}: HTTP 403: the console's service account may not see the group's members"
            ))),
            _ => Ok(true),
        }
    }

    /// `GET url?query` with the credentials and the timeout: the status and body of a success,
    /// a 403 or a 404; any other answer is the error [`crate::rest`] classifies it as.
    async fn get(
        &self,
        url: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<(StatusCode, bytes::Bytes), PortError> {
        let req = self
            .auth
            .authorize(self.http.get(url).query(query).timeout(self.timeout))
            .await?;
        let resp = req.send().await.map_err(|e| e.into_port(what))?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND
        {
            let body = resp.bytes().await.map_err(|e| e.into_port(what))?;
            return Ok((status, body));
        }
        Err(crate::rest::ApiError::read(resp).await.into_port(what))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every write is one insert: a panic cannot leave an entry half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
