//! Conveyor's stage sources: where the stage step copies data from. Only the stage function
//! and the CLI link this crate (S3 through `object_store`, web servers through `reqwest`).
//!
//! # Layout
//! - `local.rs`: a local file or directory.
//! - `bucket.rs`: a folder of another bucket, through the [`ObjectStore`] port (Cloud
//!   Storage in production, a bucket directory in the embedded mode).
//! - `https.rs`: files on web servers, listed in the file or by a manifest URL.
//! - `s3.rs`: a folder of an S3 bucket, through the `object_store` crate.
//!
//! S3 credentials named by `secret:` are read through the [`SecretStore`] port (Secret Manager
//! in production, files in the embedded mode).
//!
//! [`Connector`] is the [`Sources`] port: it turns a pipeline's `stage.source` into a
//! [`Source`] whose credentials are resolved at the start of each run.

mod bucket;
mod https;
mod local;
mod s3;

use std::sync::Arc;

use async_trait::async_trait;

use conveyor_core::config::StageSource;
use conveyor_core::ports::{ObjectStore, PortError, SecretStore, Source, Sources};

pub use conveyor_core::INTERNAL_PREFIX;

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
        // The aws-lc-rs rustls provider every HTTPS client of the process shares.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // A web server that stops sending fails the read instead of holding the run forever;
        // a large download may take as long as it needs.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
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
