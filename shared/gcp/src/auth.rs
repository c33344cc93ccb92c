//! One credentials source for every Google client, and the one way an adapter sends an
//! authorised call ([`GcpAuth::send`]): a refused token (401) is refreshed and the call sent
//! once more; any other answer that is not a success is classified by [`crate::rest`].

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::{Builder, CacheableResource, Credentials};
use http::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

use crate::rest::{ApiError, RequestBuilder, Response};
use conveyor_core::ports::PortError;

/// Credentials shared by every client of a service: on Cloud Run, the metadata server's token
/// fetched on the process's one HTTP client; elsewhere Application Default Credentials; or
/// anonymous for emulators.
#[derive(Clone, Debug)]
pub enum GcpAuth {
    /// Application Default Credentials (google-cloud-auth).
    Adc(AdcCredentials),
    /// The service account's token from the metadata server (Cloud Run).
    Metadata(MetadataToken),
    /// No credentials: for emulators only.
    Anonymous,
}

impl GcpAuth {
    /// Application Default Credentials. On Cloud Run (`K_SERVICE` or `CLOUD_RUN_JOB` set)
    /// without `GOOGLE_APPLICATION_CREDENTIALS`, where ADC would ask the metadata server,
    /// the metadata server is asked directly on the process's one HTTP client: the
    /// google-cloud-auth client builds a new HTTP client (and loads the certificate store
    /// again) for every token it fetches.
    ///
    /// # Errors
    /// When no credentials can be found or parsed.
    pub fn application_default() -> Result<Self, PortError> {
        let on_cloud_run =
            std::env::var_os("K_SERVICE").is_some() || std::env::var_os("CLOUD_RUN_JOB").is_some();
        if on_cloud_run && std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none() {
            return Ok(Self::Metadata(MetadataToken::from_env()));
        }
        AdcCredentials::load().map(Self::Adc)
    }

    /// The bearer token for REST calls; `None` when anonymous.
    ///
    /// # Errors
    /// A transient error when the token cannot be fetched (the metadata server is busy).
    pub async fn bearer(&self) -> Result<Option<String>, PortError> {
        match self {
            Self::Adc(c) => c.token().await.map(Some),
            Self::Metadata(m) => m.token().await.map(Some),
            Self::Anonymous => Ok(None),
        }
    }

    /// Adds the credentials' headers to a request: `Authorization`, and on the ADC path the
    /// quota project's `x-goog-user-project` when the credentials name one.
    ///
    /// # Errors
    /// When the token cannot be fetched.
    pub async fn authorize(&self, req: RequestBuilder) -> Result<RequestBuilder, PortError> {
        match self {
            // The header is made once per token, not once per request.
            Self::Metadata(m) => Ok(req.header(http::header::AUTHORIZATION, m.header().await?)),
            Self::Adc(c) => {
                let mut req = req;
                for (name, value) in c.headers().await?.iter() {
                    req = req.header(name.clone(), value.clone());
                }
                Ok(req)
            }
            Self::Anonymous => Ok(req),
        }
    }

    /// Forgets the current token, so the next call gets a new one: after a 401.
    pub async fn refresh(&self) {
        match self {
            Self::Adc(c) => c.refresh(),
            Self::Metadata(m) => m.forget().await,
            Self::Anonymous => {}
        }
    }

    /// Sends the request `build` makes, authorised, and returns the answer when it is a
    /// success (2xx, or Cloud Storage's 308 for an upload's chunk). A 401 (the token expired
    /// or was revoked in between) gets a new token and the request once more (`build` is
    /// called again: nothing is cloned on the way that succeeds). Any other answer becomes
    /// the [`PortError`] [`crate::rest::classify`] says, `what` naming the call; a failure to
    /// reach the server is transient.
    ///
    /// # Errors
    /// As above.
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, PortError> {
        let mut refreshed = false;
        loop {
            let resp = self
                .authorize(build())
                .await?
                .send()
                .await
                .map_err(|e| e.into_port(what))?;
            let status = resp.status();
            if status.is_success() || status == StatusCode::PERMANENT_REDIRECT {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed && !matches!(self, Self::Anonymous)
            {
                tracing::warn!(
                    call = what,
                    "the token was refused (401); sending once more with a new one"
                );
                self.refresh().await;
                refreshed = true;
                continue;
            }
            return Err(ApiError::read(resp).await.into_port(what));
        }
    }
}

#[async_trait]
impl crate::engines::TokenSource for GcpAuth {
    async fn token(&self) -> Result<String, PortError> {
        // Data Fusion and the emulated APIs accept a placeholder when anonymous.
        Ok(self
            .bearer()
            .await?
            .unwrap_or_else(|| "anonymous".to_owned()))
    }

    async fn authorize(&self, req: RequestBuilder) -> Result<RequestBuilder, PortError> {
        match self {
            Self::Anonymous => Ok(req.bearer_auth("anonymous")),
            _ => GcpAuth::authorize(self, req).await,
        }
    }

    async fn refresh(&self) {
        GcpAuth::refresh(self).await;
    }
}

/// Application Default Credentials (google-cloud-auth): the token and the quota project
/// header, each fetch bounded by the shared client's timeout (google-cloud-auth's own HTTP
/// client has none), and loaded again after a 401.
#[derive(Clone, Debug)]
pub struct AdcCredentials {
    credentials: Arc<RwLock<Credentials>>,
    timeout: Duration,
}

impl AdcCredentials {
    /// Loads the credentials ADC finds.
    ///
    /// # Errors
    /// When there are none, or they cannot be parsed.
    pub fn load() -> Result<Self, PortError> {
        Ok(Self {
            credentials: Arc::new(RwLock::new(Self::build()?)),
            timeout: crate::http_client()
                .timeout()
                .unwrap_or(crate::rest::REQUEST_TIMEOUT),
        })
    }

    /// Credentials made another way (google-cloud-auth's builders for a key file or a user's
    /// refresh token), each fetch bounded by the shared client's timeout. After a 401 they are
    /// loaded again from Application Default Credentials.
    pub fn from_credentials(credentials: Credentials) -> Self {
        Self {
            credentials: Arc::new(RwLock::new(credentials)),
            timeout: crate::http_client()
                .timeout()
                .unwrap_or(crate::rest::REQUEST_TIMEOUT),
        }
    }

    fn build() -> Result<Credentials, PortError> {
        Builder::default().build().map_err(|e| {
            PortError::permanent(format!("cannot load Application Default Credentials: {e}"))
        })
    }

    /// The headers a request carries.
    async fn headers(&self) -> Result<http::HeaderMap, PortError> {
        let credentials = self
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let fetched =
            tokio::time::timeout(self.timeout, credentials.headers(http::Extensions::new()))
                .await
                .map_err(|_| {
                    PortError::transient(format!(
                        "cannot get an access token: no answer within {}",
                        humantime::format_duration(self.timeout)
                    ))
                })?
                .map_err(|e| PortError::transient(format!("cannot get an access token: {e}")))?;
        match fetched {
            CacheableResource::New { data, .. } => Ok(data),
            // Only answered to a caller that sent an entity tag; this one sends none.
            CacheableResource::NotModified => Err(PortError::transient(
                "cannot get an access token: the credentials answered `not modified`",
            )),
        }
    }

    /// The bearer token alone.
    async fn token(&self) -> Result<String, PortError> {
        let headers = self.headers().await?;
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .ok_or_else(|| PortError::transient("cannot get an access token: no bearer token"))
    }

    /// Loads the credentials again (the cached token was refused).
    fn refresh(&self) {
        match Self::build() {
            Ok(c) => {
                *self
                    .credentials
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = c;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load Application Default Credentials again")
            }
        }
    }
}

/// The default service account's access token from the metadata server, fetched on the
/// process's one HTTP client when first needed and kept until a minute before it expires.
/// One fetch at a time: concurrent requests wait for it instead of each asking.
#[derive(Clone, Debug)]
pub struct MetadataToken {
    url: String,
    cached: Arc<tokio::sync::Mutex<Option<Cached>>>,
}

/// A token, its `Authorization` header (marked sensitive: never logged) and until when it
/// is used.
#[derive(Debug)]
struct Cached {
    token: String,
    header: http::header::HeaderValue,
    until: Instant,
}

#[derive(Deserialize)]
struct MetadataAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// A token is fetched again when it has less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);

impl MetadataToken {
    /// The metadata server at `GCE_METADATA_HOST` (`host:port`, as google-cloud-auth reads
    /// it), else `metadata.google.internal`.
    pub fn from_env() -> Self {
        Self::at(&metadata_root())
    }

    /// The metadata server at `root` (`http://host:port`).
    pub fn at(root: &str) -> Self {
        Self {
            url: format!(
                "{}/computeMetadata/v1/instance/service-accounts/default/token",
                root.trim_end_matches('/')
            ),
            cached: Arc::default(),
        }
    }

    /// The access token.
    ///
    /// # Errors
    /// A transient error when the metadata server cannot be reached or refuses.
    pub async fn token(&self) -> Result<String, PortError> {
        self.with_current(|c| c.token.clone()).await
    }

    /// `Bearer <token>`, for an `Authorization` header.
    ///
    /// # Errors
    /// A transient error when the metadata server cannot be reached or refuses.
    pub async fn header(&self) -> Result<http::header::HeaderValue, PortError> {
        self.with_current(|c| c.header.clone()).await
    }

    /// Forgets the cached token: the next call fetches one.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// `f` of the current token, fetched first when there is none or it expires soon.
    async fn with_current<T>(&self, f: impl FnOnce(&Cached) -> T) -> Result<T, PortError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() + REFRESH_BEFORE < c.until
        {
            return Ok(f(c));
        }
        let what = "access token from the metadata server";
        // Bounded by the shared client's timeouts. Every failure may pass, as with
        // google-cloud-auth's token source.
        let resp = crate::http_client()
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| e.into_port(what))?;
        if !resp.status().is_success() {
            let e = ApiError::read(resp).await;
            return Err(PortError::transient(format!("cannot get an {what}: {e}")).with_source(e));
        }
        let text = resp.text().await.map_err(|e| e.into_port(what))?;
        let answer: MetadataAnswer = serde_json::from_str(&text).map_err(|e| {
            PortError::transient(format!("cannot get an access token: bad answer: {e}"))
        })?;
        let mut header =
            http::header::HeaderValue::try_from(format!("Bearer {}", answer.access_token))
                .map_err(|_| {
                    PortError::transient(
                        "cannot get an access token: the token is not header text".to_owned(),
                    )
                })?;
        header.set_sensitive(true);
        let c = cached.insert(Cached {
            token: answer.access_token,
            header,
            until: Instant::now() + Duration::from_secs(answer.expires_in),
        });
        Ok(f(c))
    }
}

/// The metadata server's root URL: `GCE_METADATA_HOST` (`host:port`, as google-cloud-auth
/// reads it), else `metadata.google.internal`.
pub(crate) fn metadata_root() -> String {
    let host = std::env::var("GCE_METADATA_HOST")
        .unwrap_or_else(|_| "metadata.google.internal".to_owned());
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    use super::*;

    /// A metadata server that answers tokens `t1`, `t2`, … valid for `expires_in` seconds,
    /// and refuses requests without `Metadata-Flavor: Google` as the real one does.
    async fn metadata(expires_in: u64) -> (String, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(move |headers: HeaderMap| async move {
                if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                    return (StatusCode::FORBIDDEN, "missing Metadata-Flavor".to_owned());
                }
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                (
                    StatusCode::OK,
                    format!(
                        r#"{{"access_token":"t{n}","expires_in":{expires_in},"token_type":"Bearer"}}"#
                    ),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), calls)
    }

    #[tokio::test]
    async fn the_metadata_token_is_fetched_once_and_kept() {
        let (root, calls) = metadata(3599).await;
        let auth = GcpAuth::Metadata(MetadataToken::at(&root));
        assert_eq!(auth.bearer().await.unwrap().as_deref(), Some("t1"));
        assert_eq!(auth.clone().bearer().await.unwrap().as_deref(), Some("t1"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_token_close_to_expiry_is_fetched_again() {
        let (root, calls) = metadata(30).await;
        let token = MetadataToken::at(&root);
        assert_eq!(token.token().await.unwrap(), "t1");
        assert_eq!(token.token().await.unwrap(), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_metadata_server_may_pass() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        match MetadataToken::at(&root).token().await {
            Err(PortError::Transient(m)) => assert!(m.contains("metadata server"), "{m}"),
            other => panic!("expected a transient error, got {other:?}"),
        }
    }
}
