//! The stage sources: where the stage step copies data from.
//!
//! # Layout
//! - `local.rs`: a local file or directory.
//! - `bucket.rs`: a folder of another bucket, through the [`ObjectStore`] port (Cloud
//!   Storage in production, a bucket directory in the embedded mode).
//! - `https.rs`: files on web servers, listed in the file or by a manifest URL.
//! - `s3.rs`: a folder of an S3 bucket, through the `object_store` crate.
//! - `secrets.rs`: [`SecretManager`] and [`DirSecrets`], where S3 credentials named by
//!   `secret:` are read.
//!
//! [`Connector`] is the [`Sources`] port: it turns a pipeline's `stage.source` into a
//! [`Source`] whose credentials are resolved at the start of each run.

mod bucket;
mod https;
mod local;
mod s3;
mod secrets;

use std::sync::Arc;

use async_trait::async_trait;

pub use secrets::{DirSecrets, SecretManager};

use crate::config::StageSource;
use crate::ports::{ObjectStore, PortError, SecretStore, Source, Sources};

/// Object names under this folder are Conveyor's own state (the stage watermarks), never
/// data: bucket sources skip them and the load step ignores them.
pub const INTERNAL_PREFIX: &str = "_conveyor/";

/// The [`Sources`] port: connects local paths, S3, other buckets and web servers.
#[derive(Clone)]
pub struct Connector {
    store: Arc<dyn ObjectStore>,
    secrets: Arc<dyn SecretStore>,
    http: reqwest::Client,
}

impl Connector {
    /// A connector reading bucket sources through `store` and `secret:` references through
    /// `secrets`.
    pub fn new(store: Arc<dyn ObjectStore>, secrets: Arc<dyn SecretStore>) -> Self {
        crate::adapters::gcp::install_crypto_provider();
        // A web server that stops sending fails the read instead of holding the run forever;
        // a large download may take as long as it needs.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| crate::adapters::gcp::http_client());
        Self {
            store,
            secrets,
            http,
        }
    }
}

#[async_trait]
impl Sources for Connector {
    async fn connect(&self, source: &StageSource) -> Result<Arc<dyn Source>, PortError> {
        Ok(match source {
            StageSource::Path(p) => Arc::new(local::LocalSource::new(p)),
            StageSource::Gcs(g) => Arc::new(bucket::BucketSource::new(self.store.clone(), g)),
            StageSource::Https(h) => Arc::new(https::HttpsSource::new(self.http.clone(), h)),
            StageSource::S3(s) => {
                let keys = match &s.secret {
                    Some(r) if !s.anonymous => {
                        Some(s3::AwsKeys::parse(r, &self.secrets.access(r).await?)?)
                    }
                    _ => None,
                };
                Arc::new(s3::S3Source::connect(s, keys)?)
            }
        })
    }
}

/// The path below `folder` of `name`, when `name` is inside it.
fn below<'a>(folder: &str, name: &'a str) -> Option<&'a str> {
    if folder.is_empty() {
        return Some(name);
    }
    name.strip_prefix(folder)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_strips_a_folder_at_a_segment_boundary() {
        assert_eq!(below("a/b", "a/b/c/d.avro"), Some("c/d.avro"));
        assert_eq!(below("a/b", "a/bc/d.avro"), None);
        assert_eq!(below("", "x"), Some("x"));
    }
}
