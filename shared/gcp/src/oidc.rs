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
//! The keys are cached as [`crate::jwks`] says: for the time the JWKS's `Cache-Control`
//! allows, refreshed in a task of its own with a timeout, an unknown key refetching at most
//! every 30 s.

use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderMap;
use conveyor_core::http::{CallerCheck, Denied};
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;

/// Google's keys for ID tokens.
pub const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// What Cloud Run puts in place of the signature of a token it has verified.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// Issuers of Google ID tokens.
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

pub use crate::jwks::JWKS_TIMEOUT;
use crate::jwks::KeySet;

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

/// The OIDC check of a function's callers.
#[derive(Clone)]
pub struct OidcVerifier {
    keys: KeySet,
    audiences: Vec<String>,
    allowed: Vec<String>,
    mode: AuthMode,
}

impl OidcVerifier {
    /// Accepts tokens for one of `audiences` whose verified email is one of `allowed`,
    /// signed by a key from `jwks_url` ([`AuthMode::Verify`]; see [`Self::with_mode`]).
    pub fn new(jwks_url: &str, audiences: Vec<String>, allowed: Vec<String>) -> Self {
        Self {
            keys: KeySet::new(jwks_url),
            audiences,
            allowed: allowed
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            mode: AuthMode::Verify,
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
        self.keys = self.keys.with_fetch_timeout(timeout);
        self
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
        let key = self.keys.key(&kid).await?;
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
