//! Secret Manager: where `secret:` references are read in production. Values are never logged
//! nor put in error messages.

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;

use conveyor_core::config::SecretRef;
use conveyor_core::ports::{PortError, SecretStore, SecretValue};

use crate::GcpAuth;

/// Secret Manager, through its REST API (`versions.access`).
#[derive(Clone)]
pub struct SecretManager {
    http: crate::rest::Client,
    base: String,
    auth: GcpAuth,
}

impl SecretManager {
    /// Secret Manager at `base` (`https://secretmanager.googleapis.com`).
    pub fn new(base: &str, auth: GcpAuth) -> Self {
        Self {
            http: crate::http_client(),
            base: base.trim_end_matches('/').to_owned(),
            auth,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Access {
    payload: Payload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    data: String,
    #[serde(default)]
    data_crc32c: Option<String>,
}

#[async_trait]
impl SecretStore for SecretManager {
    async fn access(&self, secret: &SecretRef) -> Result<SecretValue, PortError> {
        let what = format!("access secret {secret}");
        let url = format!("{}/v1/{}:access", self.base, secret.version_name());
        let resp = self.auth.send(&what, || self.http.get(&url)).await?;
        let access: Access = resp
            .json()
            .await
            .map_err(|_| PortError::transient(format!("{what}: unreadable reply")))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(access.payload.data.as_bytes())
            .map_err(|_| PortError::permanent(format!("{what}: the payload is not base64")))?;
        if let Some(crc) = access.payload.data_crc32c
            && crc != crc32c::crc32c(&data).to_string()
        {
            return Err(PortError::transient(format!(
                "{what}: the payload does not match its CRC32C"
            )));
        }
        Ok(SecretValue::new(data))
    }
}
