//! A cached set of public keys from a JWKS URL, shared by the checks that verify signed
//! tokens: the functions' OIDC check ([`crate::oidc`], Google's RS256 keys) and the console's
//! IAP check ([`crate::iap`], IAP's ES256 keys).
//!
//! The keys are cached for the time the JWKS's `Cache-Control` allows (an hour without one).
//! A refresh runs in a task of its own with a timeout; no lock is held while it runs, and
//! callers whose key is in the cache are served from it meanwhile (a slow or stalled key
//! server blocks no valid caller). Only a token naming a key the cache does not have waits
//! for the refresh, at most its timeout; a token naming an unknown key triggers a refetch at
//! most every 30 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use conveyor_core::http::Denied;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

/// How soon an unknown key may trigger another fetch of the JWKS.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// The longest a JWKS fetch may take, connecting included (the whole call: connect, answer,
/// body). A refresh past it fails and the cached keys stay in use.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

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

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// One key: RSA (`n`, `e`) or elliptic-curve P-256 (`x`, `y`); other kinds are skipped.
#[derive(Deserialize)]
struct Jwk {
    kid: String,
    #[serde(default)]
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    y: String,
}

impl Jwk {
    fn decoding_key(&self) -> Option<DecodingKey> {
        match (self.kty.as_str(), self.crv.as_str()) {
            ("RSA", _) => DecodingKey::from_rsa_components(&self.n, &self.e).ok(),
            ("EC", "P-256") => DecodingKey::from_ec_components(&self.x, &self.y).ok(),
            _ => None,
        }
    }
}

/// The keys of one JWKS URL, cached (see the module's text). Cheap to clone: clones share
/// the cache.
#[derive(Clone)]
pub(crate) struct KeySet {
    http: crate::rest::Client,
    url: String,
    fetch_timeout: Duration,
    cache: Arc<Mutex<Cache>>,
}

impl KeySet {
    /// The keys at `url`, fetched when first needed.
    pub(crate) fn new(url: &str) -> Self {
        Self {
            http: crate::http_client(),
            url: url.to_owned(),
            fetch_timeout: JWKS_TIMEOUT,
            cache: Arc::default(),
        }
    }

    /// These keys with fetches limited to `timeout` (default [`JWKS_TIMEOUT`]).
    pub(crate) fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
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
    ///
    /// # Errors
    /// [`Denied::Unauthenticated`] for a key the JWKS does not have, [`Denied::Unavailable`]
    /// when the JWKS cannot be fetched and the key is not cached.
    pub(crate) async fn key(&self, kid: &str) -> Result<DecodingKey, Denied> {
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
                    tracing::warn!(error = %e, url = %this.url, cached_keys = cache.keys.len(), "cannot refresh the JWKS; the cached keys stay in use");
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
        let what = |e: &dyn std::fmt::Display| format!("fetch {}: {e}", self.url);
        let resp = self
            .http
            .get(&self.url)
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
            .filter_map(|k| Some((k.kid.clone(), k.decoding_key()?)))
            .collect();
        Ok((keys, ttl))
    }
}
