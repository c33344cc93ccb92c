//! [`ObjectStore`]: buckets of objects (Cloud Storage, or a directory per bucket).

use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use super::PortError;
use crate::event::ObjectRef;
use crate::names::{BucketName, ObjectName};

/// A readable byte stream.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object.
    pub object: ObjectRef,
    /// A content fingerprint: ETag, MD5 or CRC32C (for change detection).
    pub etag: String,
    /// Last update.
    pub updated: DateTime<Utc>,
}

/// Buckets of objects: Cloud Storage, or a directory per bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Writes `body` to `bucket/name`, replacing any object there, and returns its metadata.
    /// The object appears whole or not at all.
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError>;
    /// Opens `bucket/name` for reading.
    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError>;
    /// The object's metadata, or `None` when it does not exist.
    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError>;
    /// Every object whose name starts with `prefix`, in name order.
    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError>;
    /// One page of the objects whose name starts with `prefix` (the first page without a
    /// token), so a large folder is never held whole. The default is one page with everything.
    async fn list_page(
        &self,
        bucket: &BucketName,
        prefix: &str,
        page_token: Option<String>,
    ) -> Result<ObjectPage, PortError> {
        if page_token.is_some() {
            return Ok(ObjectPage::default());
        }
        Ok(ObjectPage {
            objects: self.list(bucket, prefix).await?,
            next: None,
        })
    }
    /// Deletes `bucket/name` when its generation is `generation` (any generation when
    /// `None`). `false` when there was nothing to delete or another generation is live.
    async fn delete(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError>;
    /// Writes `body` to `bucket/name` only if no object exists there, atomically: `None` when
    /// one already did (nothing is written). For markers and leases that two deliveries of
    /// one event may race to create.
    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError>;

    /// Copies generation `generation` of `bucket/from` to `to_bucket/to` (replacing any
    /// object there) and returns the copy's metadata, or `None` when that generation is no
    /// longer live (nothing is copied). Cloud Storage copies server-side (`objects.rewrite`);
    /// the default reads the object and writes it.
    async fn copy(
        &self,
        bucket: &BucketName,
        from: &ObjectName,
        generation: &str,
        to_bucket: &BucketName,
        to: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        match self.head(bucket, from).await? {
            Some(m) if m.object.generation == generation => {}
            _ => return Ok(None),
        }
        let body = match self.open(bucket, from).await {
            Ok(b) => b,
            Err(PortError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.put(to_bucket, to, body).await.map(Some)
    }
}

/// The bytes of a small state object (at most `limit` of them) and the generation they are
/// of, or `None` when it does not exist or went away before it was read: the claims, leases
/// and slots the steps take with [`ObjectStore::create_new`] and give back by generation.
///
/// # Errors
/// When the store cannot be reached, or the read breaks off (transient).
pub async fn read_small(
    store: &dyn ObjectStore,
    bucket: &BucketName,
    name: &ObjectName,
    limit: u64,
) -> Result<Option<(Vec<u8>, String)>, PortError> {
    use tokio::io::AsyncReadExt as _;
    let Some(meta) = store.head(bucket, name).await? else {
        return Ok(None);
    };
    let mut body = match store.open(bucket, name).await {
        Ok(b) => b,
        Err(PortError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    (&mut body)
        .take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| PortError::transient(format!("read gs://{bucket}/{name}: {e}")))?;
    Ok(Some((buf, meta.object.generation)))
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectPage {
    /// The objects of the page.
    pub objects: Vec<ObjectMeta>,
    /// The token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// Digests of an object's bytes. Each is compared only with a digest of the same kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digests {
    /// MD5, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// CRC32C, as Cloud Storage writes it: base64 of the four big-endian bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// SHA-256, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}
