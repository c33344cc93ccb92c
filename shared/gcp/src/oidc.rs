//! Checks the OIDC identity token of every call to a function, in addition to Cloud Run's
//! IAM: the Pub/Sub push subscriptions and Cloud Scheduler jobs that Terraform creates send a
//! token for a service account it creates, with the service's URL as audience. So a principal
//! with only `run.invoker` can no longer forge events or start batches.
//!
//! Two modes, [`AuthMode`]:
//! - [`AuthMode::CloudRun`]: the service requires authentication, so Cloud Run's front end
//!   has verified the token's signature already and forwards it with the signature replaced by
//!   `SIGNATURE_REMOVED_BY_GOOGLE` (Cloud Run verifies `X-Serverless-Authorization` when
//!   present, else `Authorization`). Such a token has its claims checked; a token that still
//!   carries a signature was not verified in front and is verified here, as below.
//! - [`AuthMode::Verify`] (the default): nothing in front verified the token (AWS Lambda, a
//!   service deployed with `--allow-unauthenticated`): every token must carry an RS256
//!   signature by a key of Google's JWKS (`https://www.googleapis.com/oauth2/v3/certs`). A
//!   token whose signature was removed is refused.
//!
//! Either way the claims must say: issued by `https://accounts.google.com`, not expired, for
//! one of the configured audiences, for a verified email on the allow-list.
//!
//! The keys are cached for the time the JWKS's `Cache-Control` allows. A refresh runs in a
//! task of its own with a timeout; no lock is held while it runs, and callers whose key is in
//! the cache are served from it meanwhile (a slow or stalled key server blocks no valid
//! caller). Only a token naming a key the cache does not have waits for the refresh, at most
//! its timeout; a token naming an unknown key triggers a refetch at most every 30 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::HeaderMap;
use conveyor_core::http::{CallerCheck, Denied};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Google's keys for ID tokens.
pub const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// What Cloud Run puts in place of the signature of a token it has verified.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// Issuers of Google ID tokens.
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// How soon an unknown key may trigger another fetch of the JWKS.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// The longest a JWKS fetch may take, connecting included (the whole call: connect, answer,
/// body). A refresh past it fails and the cached keys stay in use.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// How far a token's times may be off the clock (as jsonwebtoken's default).
const LEEWAY_SECS: i64 = 60;

/// Who verified the token's signature before the function sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Nothing did: the function verifies every signature (`CONVEYOR_AUTH_MODE=verify`).
    #[default]
    Verify,
    /// Cloud Run did, because the service requires authentication
    /// (`CONVEYOR_AUTH_MODE=cloud-run`, set by Terraform): a token whose signature Cloud Run
    /// removed has its claims checked only.
    CloudRun,
}

impl AuthMode {
    /// Parses `verify` or `cloud-run`.
    ///
    /// # Errors
    /// Any other word, with the accepted ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "verify" => Ok(Self::Verify),
            "cloud-run" => Ok(Self::CloudRun),
            other => Err(format!(
                "CONVEYOR_AUTH_MODE must be `verify` (the function verifies signatures) or \
                 `cloud-run` (Cloud Run verified them: the service requires authentication), \
                 not {other:?}"
            )),
        }
    }
}

/// The claims Conveyor checks.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Verified>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// `email_verified` is a boolean in Google's ID tokens; some issuers write it as a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Verified {
    Bool(bool),
    Text(String),
}

impl Verified {
    fn is_true(&self) -> bool {
        match self {
            Self::Bool(b) => *b,
            Self::Text(t) => t == "true",
        }
    }
}

/// The key cache. Its lock is never held across an await.
#[derive(Default)]
struct Cache {
    keys: Arc<HashMap<String, DecodingKey>>,
    /// When the last refresh started (successful or not): unknown keys refetch at most every
    /// [`REFETCH_AFTER`].
    attempted: Option<Instant>,
    /// Until when the keys need no refresh: the JWKS's `max-age`, or [`REFETCH_AFTER`] after a
    /// failed refresh.
    fresh_until: Option<Instant>,
    /// The refresh in flight, which every caller that must wait for keys shares.
    refresh: Option<Shared<BoxFuture<'static, Result<(), String>>>>,
}

/// The OIDC check of a function's callers.
#[derive(Clone)]
pub struct OidcVerifier {
    http: crate::rest::Client,
    jwks_url: String,
    audiences: Vec<String>,
    allowed: Vec<String>,
    mode: AuthMode,
    fetch_timeout: Duration,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: String,
    #[serde(default)]
    kty: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
}

impl OidcVerifier {
    /// Accepts tokens for one of `audiences` whose verified email is one of `allowed`,
    /// signed by a key from `jwks_url` ([`AuthMode::Verify`]; see [`Self::with_mode`]).
    pub fn new(jwks_url: &str, audiences: Vec<String>, allowed: Vec<String>) -> Self {
        Self {
            http: crate::http_client(),
            jwks_url: jwks_url.to_owned(),
            audiences,
            allowed: allowed
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            mode: AuthMode::Verify,
            fetch_timeout: JWKS_TIMEOUT,
            cache: Arc::default(),
        }
    }

    /// This verifier in `mode`.
    #[must_use]
    pub fn with_mode(mut self, mode: AuthMode) -> Self {
        self.mode = mode;
        self
    }

    /// This verifier with JWKS fetches limited to `timeout` (default [`JWKS_TIMEOUT`]).
    #[must_use]
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding it cannot leave the cache half-written: every write is one
        // assignment.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key `kid`: from the cache when it has it (a stale cache starts a refresh in the
    /// background), else after the refresh this call starts or joins.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Denied> {
        let (cached, refresh) = {
            let mut cache = self.lock();
            let now = Instant::now();
            let cached = cache.keys.get(kid).cloned();
            let stale = cache.fresh_until.is_none_or(|t| now >= t);
            // An unknown key may be a forgery's: it refetches at most every REFETCH_AFTER.
            let unknown_may_refetch = cached.is_none()
                && (cache.attempted.is_none_or(|t| now - t >= REFETCH_AFTER)
                    || cache.keys.is_empty());
            let refresh = if stale || unknown_may_refetch {
                let running = cache.refresh.clone();
                Some(running.unwrap_or_else(|| {
                    cache.attempted = Some(now);
                    let started = self.start_refresh();
                    cache.refresh = Some(started.clone());
                    started
                }))
            } else {
                cache.refresh.clone()
            };
            (cached, refresh)
        };
        if let Some(key) = cached {
            // The last good keys serve while a refresh runs.
            return Ok(key);
        }
        let Some(refresh) = refresh else {
            return Err(Denied::Unauthenticated(format!(
                "unknown signing key {kid:?}"
            )));
        };
        let outcome = refresh.await;
        let found = self.lock().keys.get(kid).cloned();
        match (found, outcome) {
            (Some(key), _) => Ok(key),
            (None, Ok(())) => Err(Denied::Unauthenticated(format!(
                "unknown signing key {kid:?}"
            ))),
            // The key may be a new one the key server could not tell us about: retry later.
            (None, Err(e)) => Err(Denied::Unavailable(e)),
        }
    }

    /// Starts a refresh in a task of its own (it finishes, and fills the cache, even when the
    /// request that started it is gone), bounded by the fetch timeout.
    fn start_refresh(&self) -> Shared<BoxFuture<'static, Result<(), String>>> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let fetched = this.fetch().await;
            let mut cache = this.lock();
            cache.refresh = None;
            match fetched {
                Ok((keys, ttl)) => {
                    cache.keys = Arc::new(keys);
                    cache.fresh_until = Some(Instant::now() + ttl);
                    Ok(())
                }
                Err(e) => {
                    // Back off: the cached keys serve until the next try.
                    cache.fresh_until = Some(Instant::now() + REFETCH_AFTER);
                    tracing::warn!(error = %e, cached_keys = cache.keys.len(), "cannot refresh the JWKS; the cached keys stay in use");
                    Err(e)
                }
            }
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the JWKS refresh stopped: {e}")))
        }
        .boxed()
        .shared()
    }

    async fn fetch(&self) -> Result<(HashMap<String, DecodingKey>, Duration), String> {
        let what = |e: &dyn std::fmt::Display| format!("fetch {}: {e}", self.jwks_url);
        let resp = self
            .http
            .get(&self.jwks_url)
            .timeout(self.fetch_timeout)
            .send()
            .await
            .map_err(|e| what(&e))?;
        if !resp.status().is_success() {
            return Err(what(&format!("HTTP {}", resp.status())));
        }
        let ttl = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .find_map(|part| part.trim().strip_prefix("max-age="))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        let jwks: Jwks = resp.json().await.map_err(|e| what(&e))?;
        let keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter_map(|k| Some((k.kid, DecodingKey::from_rsa_components(&k.n, &k.e).ok()?)))
            .collect();
        Ok((keys, ttl))
    }

    /// The claims of `token` once its RS256 signature verifies against Google's keys.
    async fn verified_claims(&self, token: &str) -> Result<Claims, Denied> {
        let header = decode_header(token)
            .map_err(|e| Denied::Unauthenticated(format!("malformed token: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(Denied::Unauthenticated(format!(
                "token signed with {:?}, not RS256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| Denied::Unauthenticated("the token names no key".to_owned()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&self.audiences);
        validation.set_issuer(&ISSUERS);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| Denied::Unauthenticated(format!("token refused: {e}")))
    }

    /// Checks the claims every accepted token must have, whoever verified its signature.
    fn check_claims(&self, claims: &Claims) -> Result<(), Denied> {
        let refuse = |why: String| Err(Denied::Unauthenticated(why));
        match claims.iss.as_deref() {
            Some(iss) if ISSUERS.contains(&iss) => {}
            other => return refuse(format!("token issued by {other:?}, not Google")),
        }
        let audiences: Vec<&str> = match &claims.aud {
            Some(Audience::One(a)) => vec![a.as_str()],
            Some(Audience::Many(v)) => v.iter().map(String::as_str).collect(),
            None => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| self.audiences.iter().any(|ours| ours == a))
        {
            return refuse(format!("token for {audiences:?}, not for this function"));
        }
        let now = chrono::Utc::now().timestamp();
        match claims.exp {
            // Seconds since the epoch fit an i64 for any real date.
            #[allow(clippy::cast_possible_truncation)]
            Some(exp) if (exp as i64) + LEEWAY_SECS > now => {}
            Some(_) => return refuse("token expired".to_owned()),
            None => return refuse("token without an expiry".to_owned()),
        }
        #[allow(clippy::cast_possible_truncation)]
        if claims
            .nbf
            .is_some_and(|nbf| (nbf as i64) - LEEWAY_SECS > now)
        {
            return refuse("token not valid yet".to_owned());
        }
        let email = claims
            .email
            .as_deref()
            .filter(|_| {
                claims
                    .email_verified
                    .as_ref()
                    .is_some_and(Verified::is_true)
            })
            .ok_or_else(|| Denied::Forbidden("the token has no verified email".to_owned()))?;
        if !self.allowed.contains(&email.to_ascii_lowercase()) {
            return Err(Denied::Forbidden(format!(
                "{email} is not an allowed caller"
            )));
        }
        Ok(())
    }
}

/// The token of a request: `X-Serverless-Authorization` when present (Cloud Run checks that
/// one first and leaves `Authorization` to the application), else `Authorization`.
fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let header = headers
        .get("x-serverless-authorization")
        .or_else(|| headers.get(axum::http::header::AUTHORIZATION))
        .ok_or_else(|| Denied::Unauthenticated("no bearer token".to_owned()))?;
    header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Denied::Unauthenticated("no bearer token".to_owned()))
}

#[async_trait]
impl CallerCheck for OidcVerifier {
    async fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let token = bearer(headers)?;
        let stripped = token
            .rsplit_once('.')
            .is_some_and(|(_, sig)| sig == SIGNATURE_REMOVED);
        let claims = match (stripped, self.mode) {
            (true, AuthMode::CloudRun) => {
                // Cloud Run verified the signature and removed it: the claims are what is
                // left to check.
                jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
                    .map(|data| data.claims)
                    .map_err(|e| Denied::Unauthenticated(format!("malformed token: {e}")))?
            }
            (true, AuthMode::Verify) => {
                return Err(Denied::Unauthenticated(
                    "the token's signature was removed, and nothing in front of this service \
                     verified it (CONVEYOR_AUTH_MODE=verify)"
                        .to_owned(),
                ));
            }
            (false, _) => self.verified_claims(token).await?,
        };
        self.check_claims(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_reads_verify_and_cloud_run_and_names_them_otherwise() {
        assert_eq!(AuthMode::parse("verify"), Ok(AuthMode::Verify));
        assert_eq!(AuthMode::parse("cloud-run"), Ok(AuthMode::CloudRun));
        let e = AuthMode::parse("cloudrun").unwrap_err();
        assert!(e.contains("`cloud-run`") && e.contains("cloudrun"), "{e}");
    }

    #[test]
    fn the_token_comes_from_x_serverless_authorization_first() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer app.own.token".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "app.own.token");
        h.insert(
            "x-serverless-authorization",
            "Bearer a.b.c".parse().unwrap(),
        );
        assert_eq!(bearer(&h).unwrap(), "a.b.c");
        let mut empty = HeaderMap::new();
        empty.insert("authorization", "Bearer ".parse().unwrap());
        assert!(bearer(&empty).is_err());
    }
}
