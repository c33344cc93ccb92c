//! [`Sources`] and [`Source`]: the stage sources a pipeline file names.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ByteStream, Digests, PortError};
use crate::config::StageSource;

/// One object of a stage source, as its listing describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// Unique within the source: the S3 key, the object name, the URL, the file path.
    pub key: String,
    /// The path below the source folder, `/`-separated (`{relative}` in stage templates).
    pub relative: String,
    /// The full path: S3 key, object name, URL path, or the relative path of a local file
    /// (`{path}` in stage templates).
    pub path: String,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// An opaque version tag (S3 or HTTP ETag) that changes when the content does.
    pub etag: Option<String>,
    /// A version id (a Cloud Storage generation).
    pub version: Option<String>,
    /// Last modification.
    pub modified: Option<DateTime<Utc>>,
    /// Digests the source vouches for: the bytes read must match them.
    pub digests: Digests,
}

/// An opened source object.
pub struct Opened {
    /// The bytes.
    pub body: ByteStream,
    /// The size the reply announced (HTTP `Content-Length`), when known.
    pub size: Option<u64>,
    /// Digests the reply vouches for (HTTP `Content-MD5`, `x-goog-hash`), besides the
    /// listing's.
    pub digests: Digests,
}

/// A connected stage source: lists and opens the objects of one configured source.
#[async_trait]
pub trait Source: Send + Sync {
    /// Where it reads, without credentials (`s3://bucket/folder/`): keys the watermark.
    fn uri(&self) -> String;
    /// Every object, all pages of the listing, in key order.
    async fn list(&self) -> Result<Vec<SourceObject>, PortError>;
    /// Opens `object` for reading. A source that can pin what it reads to the listed
    /// version does (S3 `If-Match`), so a change since the listing fails the open.
    async fn open(&self, object: &SourceObject) -> Result<Opened, PortError>;
}

/// Connects the stage sources a pipeline file names: S3, other buckets, web servers, local
/// files.
#[async_trait]
pub trait Sources: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// A client for `source`, with its credentials resolved now.
    async fn connect(&self, source: &StageSource) -> Result<Arc<dyn Source>, PortError>;
}
