//! Where `secret:` references are read: Secret Manager in production, files under the state
//! directory in the embedded mode. Values are never logged nor put in error messages.

use std::path::PathBuf;

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;

use crate::adapters::gcp::{GcpAuth, status_error, transport_error};
use crate::config::SecretRef;
use crate::ports::{PortError, SecretStore, SecretValue};

/// Secret Manager, through its REST API (`versions.access`).
#[derive(Clone)]
pub struct SecretManager {
    http: reqwest::Client,
    base: String,
    auth: GcpAuth,
}

impl SecretManager {
    /// Secret Manager at `base` (`https://secretmanager.googleapis.com`).
    pub fn new(base: &str, auth: GcpAuth) -> Self {
        Self {
            http: crate::adapters::gcp::http_client(),
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
        let req = self.auth.authorize(self.http.get(url)).await?;
        let resp = req.send().await.map_err(|e| transport_error(&what, &e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            return Err(status_error(status, &what, &body));
        }
        let access: Access = resp
            .json()
            .await
            .map_err(|_| PortError::Transient(format!("{what}: unreadable reply")))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(access.payload.data.as_bytes())
            .map_err(|_| PortError::Permanent(format!("{what}: the payload is not base64")))?;
        if let Some(crc) = access.payload.data_crc32c
            && crc != crc32c::crc32c(&data).to_string()
        {
            return Err(PortError::Transient(format!(
                "{what}: the payload does not match its CRC32C"
            )));
        }
        Ok(SecretValue::new(data))
    }
}

/// Secrets as files: `projects/P/secrets/NAME` is the file `DIR/projects/P/secrets/NAME`
/// (a pinned version `V` is `DIR/projects/P/secrets/NAME/versions/V`). The embedded mode
/// reads them from `STATE_DIR/secrets/`.
#[derive(Debug, Clone)]
pub struct DirSecrets {
    dir: PathBuf,
}

impl DirSecrets {
    /// Secrets under `dir` (which need not exist until a secret is read).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl SecretStore for DirSecrets {
    async fn access(&self, secret: &SecretRef) -> Result<SecretValue, PortError> {
        let path = if secret.version() == "latest" {
            self.dir.join(secret.secret())
        } else {
            self.dir.join(secret.version_name())
        };
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(SecretValue::new(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PortError::Permanent(
                format!("secret {secret}: no file {}", path.display()),
            )),
            Err(e) => Err(PortError::Transient(format!(
                "secret {secret}: {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_secret_file_is_read_under_its_resource_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("projects/p/secrets")).unwrap();
        std::fs::write(dir.path().join("projects/p/secrets/s3"), b"{}").unwrap();
        let s = DirSecrets::new(dir.path());
        let r = SecretRef::parse("projects/p/secrets/s3").unwrap();
        assert_eq!(s.access(&r).await.unwrap().expose(), b"{}");
        let missing = SecretRef::parse("projects/p/secrets/nope").unwrap();
        assert!(s.access(&missing).await.is_err());
    }
}
