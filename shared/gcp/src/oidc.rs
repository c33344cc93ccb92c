//! Verifies Google-signed OIDC identity tokens on the function's own requests, in addition to
//! Cloud Run's IAM: the Pub/Sub push subscriptions and Cloud Scheduler jobs that Terraform
//! creates send a token for a service account it creates, with the service's URL as audience.
//! So a principal with only `run.invoker` can no longer forge events or start batches.
//!
//! A request needs `Authorization: Bearer <JWT>`, signed (RS256) by a key of Google's JWKS
//! (`https://www.googleapis.com/oauth2/v3/certs`, cached for the time its `Cache-Control`
//! allows, refetched at most every 30 s when a token names an unknown key), issued by
//! `https://accounts.google.com`, not expired, for one of the configured audiences, and for a
//! verified email on the allow-list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::HeaderMap;
use conveyor_core::http::{CallerCheck, Denied};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Google's keys for ID tokens.
pub const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// Issuers of Google ID tokens.
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// How soon an unknown key may trigger another fetch of the JWKS.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// The claims Conveyor reads.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

#[derive(Default)]
struct Keys {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    fresh_until: Option<Instant>,
}

/// The OIDC check of a function's callers.
#[derive(Clone)]
pub struct OidcVerifier {
    http: crate::rest::Client,
    jwks_url: String,
    audiences: Vec<String>,
    allowed: Vec<String>,
    keys: Arc<Mutex<Keys>>,
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
    /// signed by a key from `jwks_url`.
    pub fn new(jwks_url: &str, audiences: Vec<String>, allowed: Vec<String>) -> Self {
        Self {
            http: crate::http_client(),
            jwks_url: jwks_url.to_owned(),
            audiences,
            allowed: allowed
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            keys: Arc::default(),
        }
    }

    /// The key `kid`, fetching the JWKS when it is stale or does not have it.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Denied> {
        let mut keys = self.keys.lock().await;
        let now = Instant::now();
        let stale = keys.fresh_until.is_none_or(|t| now >= t);
        let may_refetch = keys.fetched.is_none_or(|t| now - t >= REFETCH_AFTER);
        if (stale || !keys.keys.contains_key(kid)) && (may_refetch || keys.keys.is_empty()) {
            match self.fetch().await {
                Ok((fetched, ttl)) => {
                    keys.keys = fetched;
                    keys.fetched = Some(now);
                    keys.fresh_until = Some(now + ttl);
                }
                Err(e) if keys.keys.is_empty() => return Err(Denied::Unavailable(e)),
                // Keys fetched before still verify tokens signed with them.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh the JWKS; using the cached keys")
                }
            }
        }
        keys.keys
            .get(kid)
            .cloned()
            .ok_or_else(|| Denied::Unauthenticated(format!("unknown signing key {kid:?}")))
    }

    async fn fetch(&self) -> Result<(HashMap<String, DecodingKey>, Duration), String> {
        let resp = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| format!("fetch {}: {e}", self.jwks_url))?;
        if !resp.status().is_success() {
            return Err(format!("fetch {}: HTTP {}", self.jwks_url, resp.status()));
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
        let jwks: Jwks = resp
            .json()
            .await
            .map_err(|e| format!("unreadable JWKS at {}: {e}", self.jwks_url))?;
        let keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter_map(|k| Some((k.kid, DecodingKey::from_rsa_components(&k.n, &k.e).ok()?)))
            .collect();
        Ok((keys, ttl))
    }
}

#[async_trait]
impl CallerCheck for OidcVerifier {
    async fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Denied::Unauthenticated("no bearer token".to_owned()))?;
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
        let data = decode::<Claims>(token, &key, &validation)
            .map_err(|e| Denied::Unauthenticated(format!("token refused: {e}")))?;
        let email = data
            .claims
            .email
            .filter(|_| data.claims.email_verified == Some(true))
            .ok_or_else(|| Denied::Forbidden("the token has no verified email".to_owned()))?;
        if !self.allowed.contains(&email.to_ascii_lowercase()) {
            return Err(Denied::Forbidden(format!(
                "{email} is not an allowed caller"
            )));
        }
        Ok(())
    }
}
