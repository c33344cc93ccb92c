//! Secrets as files under the embedded state directory. Values are never logged nor put in
//! error messages.

use std::path::PathBuf;

use async_trait::async_trait;
use conveyor_core::config::SecretRef;
use conveyor_core::ports::{PortError, SecretStore, SecretValue};

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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PortError::permanent(
                format!("secret {secret}: no file {}", path.display()),
            )),
            Err(e) => Err(PortError::transient(format!(
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
