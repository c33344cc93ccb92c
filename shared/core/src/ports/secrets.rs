//! [`SecretStore`]: Secret Manager, or files under the embedded state directory.

use async_trait::async_trait;

use super::PortError;
use crate::config::SecretRef;

/// A secret's value. Its `Debug` does not show it.
#[derive(Clone)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps a value.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The value.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Secrets: Secret Manager, or files under the embedded state directory.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The value of `secret`.
    async fn access(&self, secret: &SecretRef) -> Result<SecretValue, PortError>;
}
