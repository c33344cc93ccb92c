//! One credentials source for every Google client.

use async_trait::async_trait;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder, Credentials, anonymous};

use conveyor_core::ports::PortError;

/// Credentials shared by every client of a service: Application Default Credentials in
/// production (on Cloud Run, the metadata server), or anonymous for emulators.
#[derive(Clone, Debug)]
pub enum GcpAuth {
    /// Application Default Credentials.
    Adc(AccessTokenCredentials),
    /// No credentials: for emulators only.
    Anonymous,
}

impl GcpAuth {
    /// Application Default Credentials.
    ///
    /// # Errors
    /// When no credentials can be found or parsed.
    pub fn application_default() -> Result<Self, PortError> {
        Builder::default()
            .build_access_token_credentials()
            .map(Self::Adc)
            .map_err(|e| {
                PortError::Permanent(format!("cannot load Application Default Credentials: {e}"))
            })
    }

    /// The bearer token for REST calls; `None` when anonymous.
    ///
    /// # Errors
    /// A transient error when the token cannot be fetched (the metadata server is busy).
    pub async fn bearer(&self) -> Result<Option<String>, PortError> {
        match self {
            Self::Adc(c) => c
                .access_token()
                .await
                .map(|t| Some(t.token))
                .map_err(|e| PortError::Transient(format!("cannot get an access token: {e}"))),
            Self::Anonymous => Ok(None),
        }
    }

    /// As `Credentials`, for the google-cloud-* clients.
    pub fn credentials(&self) -> Credentials {
        match self {
            Self::Adc(c) => Credentials::from(c.clone()),
            Self::Anonymous => anonymous::Builder::new().build(),
        }
    }

    /// Adds the `Authorization` header to a request, when there is a token.
    ///
    /// # Errors
    /// When the token cannot be fetched.
    pub async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, PortError> {
        Ok(match self.bearer().await? {
            Some(token) => req.bearer_auth(token),
            None => req,
        })
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
}
