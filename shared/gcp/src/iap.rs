//! Who calls a service behind Identity-Aware Proxy: the e-mail of IAP's signed header
//! `x-goog-iap-jwt-assertion`, trusted only once verified — an ES256 signature by a key of
//! IAP's JWKS ([`IAP_JWKS`], cached as [`crate::jwks`] says), issued by [`IAP_ISSUER`], for
//! the configured audience (`/projects/NUMBER/global/backendServices/ID` behind a load
//! balancer, `/projects/NUMBER/apps/PROJECT` on App Engine), not expired and not issued in
//! the future.
//!
//! The plain `x-goog-authenticated-user-email` header IAP also sets is never read: anything
//! that reaches the service without passing IAP (its `run.app` URL, a misrouted load
//! balancer) can write it.

use std::time::Duration;

use axum::http::HeaderMap;
use conveyor_core::http::Denied;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;

use crate::jwks::KeySet;

/// IAP's public keys, as a JWKS.
pub const IAP_JWKS: &str = "https://www.gstatic.com/iap/verify/public_key-jwk";

/// The issuer of IAP's assertions.
pub const IAP_ISSUER: &str = "https://cloud.google.com/iap";

/// The header IAP signs.
pub const ASSERTION_HEADER: &str = "x-goog-iap-jwt-assertion";

/// How far an assertion's times may be off the clock.
const LEEWAY_SECS: u64 = 60;

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    iat: Option<f64>,
}

/// The check of IAP's signed header.
#[derive(Clone)]
pub struct IapVerifier {
    keys: KeySet,
    audience: String,
}

impl std::fmt::Debug for IapVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IapVerifier")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl IapVerifier {
    /// Accepts assertions for `audience` signed by a key of `jwks_url` ([`IAP_JWKS`] in
    /// production; a local JWKS in tests).
    pub fn new(jwks_url: &str, audience: &str) -> Self {
        Self {
            keys: KeySet::new(jwks_url),
            audience: audience.to_owned(),
        }
    }

    /// This verifier with key fetches limited to `timeout` (default
    /// [`crate::oidc::JWKS_TIMEOUT`]).
    #[must_use]
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.keys = self.keys.with_fetch_timeout(timeout);
        self
    }

    /// The caller's e-mail, from the verified assertion of `headers`.
    ///
    /// # Errors
    /// [`Denied::Unauthenticated`] when the header is missing or the assertion does not
    /// verify (signature, algorithm, issuer, audience, expiry) or names no e-mail;
    /// [`Denied::Unavailable`] when its key is not cached and IAP's keys cannot be fetched.
    pub async fn email(&self, headers: &HeaderMap) -> Result<String, Denied> {
        let refuse = |why: String| Denied::Unauthenticated(why);
        let token = headers
            .get(ASSERTION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refuse(format!(
                    "no {ASSERTION_HEADER} header: the request did not come through \
                     Identity-Aware Proxy"
                ))
            })?;
        let header =
            decode_header(token).map_err(|e| refuse(format!("malformed IAP assertion: {e}")))?;
        if header.alg != Algorithm::ES256 {
            return Err(refuse(format!(
                "IAP assertion signed with {:?}, not ES256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| refuse("the IAP assertion names no key".to_owned()))?;
        let key = self.keys.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_issuer(&[IAP_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|e| refuse(format!("IAP assertion refused: {e}")))?
            .claims;
        let now = chrono::Utc::now().timestamp();
        // Seconds since the epoch fit an i64 for any real date.
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        if claims
            .iat
            .is_some_and(|iat| iat as i64 > now + LEEWAY_SECS as i64)
        {
            return Err(refuse("IAP assertion issued in the future".to_owned()));
        }
        claims
            .email
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| refuse("the IAP assertion names no e-mail".to_owned()))
    }
}
