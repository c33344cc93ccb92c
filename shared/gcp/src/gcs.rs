//! Cloud Storage through its JSON API.
//!
//! google-cloud-storage covers reads and writes, but its control plane (list, metadata,
//! buckets) is gRPC-only and cannot run against fake-gcs-server, and its resumable uploads
//! break there. The JSON API is small, stable, what fake-gcs-server implements, and lets the
//! adapter stream uploads in fixed-size chunks with an end-to-end CRC32C check.
//!
//! An upload resumes instead of starting over: each chunk's answer says how much of the object
//! Cloud Storage keeps (a 308's `Range`), and what it did not keep is sent again; after a
//! failure that may pass, the session is asked what it keeps (`Content-Range: bytes */…`) and
//! the upload goes on from there. The source is a stream read once, so what is not yet kept
//! (at most a chunk) stays in memory until it is.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use http::StatusCode;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tracing::warn;

use super::GcpAuth;
use crate::rest::segment;
use conveyor_core::event::ObjectRef;
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::{ByteStream, ObjectMeta, ObjectPage, ObjectStore, PortError};

/// Upload chunk size: a multiple of 256 KiB, as resumable uploads require. Memory per upload
/// is about one chunk, whatever the object's size: the bytes Cloud Storage does not keep yet,
/// and one byte read ahead to know which chunk is the last.
pub(crate) const CHUNK: usize = 8 * 1024 * 1024;

/// Failures that may pass, in a row, after which an upload gives up (the delivery retries it).
const RESUMES: u32 = 5;

/// Cloud Storage buckets.
#[derive(Clone)]
pub struct GcsStore {
    http: crate::rest::Client,
    base: String,
    auth: GcpAuth,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    bucket: String,
    name: String,
    #[serde(default)]
    generation: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    md5_hash: Option<String>,
    #[serde(default)]
    crc32c: Option<String>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    updated: Option<DateTime<Utc>>,
}

/// The answer of one `objects.rewrite` call.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rewrite {
    #[serde(default)]
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
    #[serde(default)]
    resource: Option<Resource>,
}

/// The most `objects.rewrite` calls one copy makes (each moves up to about 1 GB across
/// locations) before it gives up and is retried.
const MAX_REWRITE_CALLS: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[serde(default)]
    items: Vec<Resource>,
    #[serde(default)]
    next_page_token: Option<String>,
}

impl Resource {
    fn meta(self) -> Result<ObjectMeta, PortError> {
        let bucket =
            BucketName::parse(&self.bucket).map_err(|e| PortError::permanent(e.to_string()))?;
        let name =
            ObjectName::parse(&self.name).map_err(|e| PortError::permanent(e.to_string()))?;
        // The CRC32C is the content fingerprint: it is what Conveyor itself verifies.
        let etag = self
            .crc32c
            .or(self.md5_hash)
            .or(self.etag)
            .unwrap_or_default();
        Ok(ObjectMeta {
            object: ObjectRef {
                bucket,
                name,
                generation: self.generation,
                size: self.size.parse().ok(),
            },
            etag,
            updated: self.updated.unwrap_or_default(),
        })
    }
}

fn crc32c_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

impl GcsStore {
    /// A store on `base` (`https://storage.googleapis.com`, or fake-gcs-server's address).
    pub fn new(base: &str, auth: GcpAuth) -> Self {
        Self {
            http: super::http_client(),
            base: base.trim_end_matches('/').to_owned(),
            auth,
        }
    }

    /// Deletes the object (the generation `generation` only, when given): `false` when
    /// there was nothing to delete or another generation is live (412).
    async fn remove(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError> {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}",
            self.base,
            segment(name.as_str())
        );
        let build = || {
            let req = self.http.delete(&url);
            match generation {
                Some(g) => req.query(&[("ifGenerationMatch", g)]),
                None => req,
            }
        };
        match self.auth.send("delete object", build).await {
            Ok(_) => Ok(true),
            Err(PortError::NotFound(_) | PortError::Precondition(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Streams `body` into a resumable session; with `if_absent`, only when no object exists.
    async fn upload(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        mut body: ByteStream,
        if_absent: bool,
    ) -> Result<ObjectMeta, PortError> {
        // A resumable session: the object appears only when the last chunk is accepted.
        let start = format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name={}",
            self.base,
            segment(name.as_str())
        ) + if if_absent {
            "&ifGenerationMatch=0"
        } else {
            ""
        };
        let resp = self
            .auth
            .send("start upload", || {
                self.http
                    .post(&start)
                    .header("content-type", "application/json")
                    .body("{}")
            })
            .await?;
        let session = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| PortError::permanent("upload session without a Location"))?;
        drop(resp);
        // CRC32C of every byte read from the source, in order: each is read once.
        let mut crc = 0u32;
        // What the session keeps, and the bytes after it read but not kept yet.
        let mut kept: u64 = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut eof = false;
        let mut failures = 0;
        loop {
            if !eof {
                eof = Self::top_up(&mut body, &mut pending, CHUNK + 1, &mut crc).await?;
            }
            let last = eof && pending.len() <= CHUNK;
            let rest = pending.split_off(pending.len().min(CHUNK));
            let chunk = Bytes::from(std::mem::take(&mut pending));
            let end = kept + chunk.len() as u64;
            let range = match (last, chunk.is_empty()) {
                (true, true) => format!("bytes */{end}"),
                (true, false) => format!("bytes {kept}-{}/{end}", end - 1),
                (false, _) => format!("bytes {kept}-{}/*", end - 1),
            };
            let hash = last.then(|| format!("crc32c={}", crc32c_b64(crc)));
            let sent = self
                .auth
                .send("upload chunk", || {
                    let req = self
                        .http
                        .put(&session)
                        .header("content-range", range.as_str())
                        .body(chunk.clone());
                    match &hash {
                        Some(h) => req.header("x-goog-hash", h.as_str()),
                        None => req,
                    }
                })
                .await;
            let answer = match sent {
                Ok(resp) => Chunk::read(resp).await,
                Err(e) => Err(e),
            };
            let now_kept = match answer.map_err(session_gone) {
                Ok(Chunk::Done(resource)) => {
                    return self.verify(bucket, name, *resource, end, crc).await;
                }
                Ok(Chunk::Incomplete(n)) => {
                    failures = 0;
                    n
                }
                Err(e) if e.is_transient() && failures < RESUMES => {
                    failures += 1;
                    warn!(object = %name, error = %e, failures, "an upload chunk failed; asking the session what it keeps");
                    tokio::time::sleep(Duration::from_millis(100 << failures)).await;
                    // The size is known once the source has ended.
                    let total = if eof {
                        (kept + chunk.len() as u64 + rest.len() as u64).to_string()
                    } else {
                        "*".to_owned()
                    };
                    match self.status(&session, &total).await? {
                        Chunk::Done(resource) => {
                            return self.verify(bucket, name, *resource, end, crc).await;
                        }
                        Chunk::Incomplete(n) => n,
                    }
                }
                Err(e) => return Err(e),
            };
            if now_kept < kept || now_kept > end {
                return Err(PortError::transient(format!(
                    "upload of gs://{bucket}/{name}: the session keeps {now_kept} bytes, but {kept} were kept before and {end} sent"
                )));
            }
            // What the session did not keep is sent again, before the bytes after it.
            let unkept = usize::try_from(now_kept - kept).map_or(&chunk[..0], |k| &chunk[k..]);
            pending = if unkept.is_empty() {
                rest
            } else {
                let mut again = Vec::with_capacity(CHUNK + 1);
                again.extend_from_slice(unkept);
                again.extend_from_slice(&rest);
                again
            };
            kept = now_kept;
        }
    }

    /// The session's state (`PUT` with `Content-Range: bytes */TOTAL`, `*` while the size
    /// is unknown, and no body).
    async fn status(&self, session: &str, total: &str) -> Result<Chunk, PortError> {
        let range = format!("bytes */{total}");
        let resp = self
            .auth
            .send("upload status", || {
                self.http
                    .put(session)
                    .header("content-range", range.as_str())
                    .header(http::header::CONTENT_LENGTH, "0")
            })
            .await
            .map_err(session_gone)?;
        Chunk::read(resp).await
    }

    /// Checks the stored object against what was sent (`size` bytes of CRC32C `crc`); a
    /// corrupted transfer leaves nothing behind.
    async fn verify(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        resource: Resource,
        size: u64,
        crc: u32,
    ) -> Result<ObjectMeta, PortError> {
        let meta = resource.meta()?;
        let expected = crc32c_b64(crc);
        if meta.etag != expected || meta.object.size != Some(size) {
            self.remove(bucket, name, None).await?;
            return Err(PortError::permanent(format!(
                "checksum mismatch on gs://{bucket}/{name}: sent {size} bytes crc32c {expected}, stored {:?} bytes crc32c {}",
                meta.object.size, meta.etag
            )));
        }
        Ok(meta)
    }

    /// Reads from `body` into `buf` until it holds `want` bytes or the source ends (then
    /// `true`), adding what it reads to `crc`. Reads go into the spare capacity only, reserved
    /// to `want` (`read_to_end` would double a full buffer to probe for the end).
    async fn top_up(
        body: &mut ByteStream,
        buf: &mut Vec<u8>,
        want: usize,
        crc: &mut u32,
    ) -> Result<bool, PortError> {
        buf.reserve_exact(want.saturating_sub(buf.len()));
        while buf.len() < want {
            let before = buf.len();
            let n = body
                .read_buf(buf)
                .await
                .map_err(|e| PortError::transient(format!("read the upload source: {e}")))?;
            if n == 0 {
                return Ok(true);
            }
            *crc = crc32c::crc32c_append(*crc, &buf[before..]);
        }
        Ok(false)
    }
}

/// A session that ended (404, 410: expired, or cancelled) cannot be resumed; a new delivery
/// starts a new one.
fn session_gone(e: PortError) -> PortError {
    match e {
        PortError::NotFound(c) => PortError::Transient(c),
        other => other,
    }
}

/// The answer to a chunk or a status request.
enum Chunk {
    /// The object is complete (200, 201).
    Done(Box<Resource>),
    /// 308: the session keeps this many bytes (`Range: bytes=0-N` is N + 1; none is 0).
    Incomplete(u64),
}

impl Chunk {
    async fn read(resp: crate::rest::Response) -> Result<Self, PortError> {
        if resp.status() == StatusCode::PERMANENT_REDIRECT {
            let kept = match resp.headers().get(http::header::RANGE) {
                None => 0,
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|r| r.strip_prefix("bytes=0-"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .map(|last| last + 1)
                    .ok_or_else(|| {
                        PortError::transient(format!("upload chunk: unreadable Range {v:?}"))
                    })?,
            };
            return Ok(Self::Incomplete(kept));
        }
        resp.json::<Resource>()
            .await
            .map(|r| Self::Done(Box::new(r)))
            .map_err(|e| e.into_port("upload response"))
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        self.upload(bucket, name, body, false).await
    }

    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        // `ifGenerationMatch=0` makes the create atomic on Cloud Storage; fake-gcs-server
        // ignores preconditions, so an object already there is also looked for first.
        if self.head(bucket, name).await?.is_some() {
            return Ok(None);
        }
        match self.upload(bucket, name, body, true).await {
            Ok(meta) => Ok(Some(meta)),
            // `ifGenerationMatch=0` failed: the object exists.
            Err(PortError::Precondition(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError> {
        let url = || {
            format!(
                "{}/storage/v1/b/{bucket}/o/{}?alt=media",
                self.base,
                segment(name.as_str())
            )
        };
        let resp = self
            .auth
            .send("read object", || self.http.get(url()))
            .await?;
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        // The URL is made in the closure: once, unless a refused token makes it twice.
        let url = || {
            format!(
                "{}/storage/v1/b/{bucket}/o/{}",
                self.base,
                segment(name.as_str())
            )
        };
        match self
            .auth
            .send("object metadata", || self.http.get(url()))
            .await
        {
            Ok(resp) => {
                let r: Resource = resp
                    .json()
                    .await
                    .map_err(|e| e.into_port("object metadata"))?;
                r.meta().map(Some)
            }
            Err(PortError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(bucket, prefix, token).await?;
            out.extend(page.objects);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.object.name.cmp(&b.object.name));
        Ok(out)
    }

    async fn delete(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError> {
        self.remove(bucket, name, generation).await
    }

    async fn copy(
        &self,
        bucket: &BucketName,
        from: &ObjectName,
        generation: &str,
        to_bucket: &BucketName,
        to: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        // `objects.rewrite` copies server-side; a large object across locations or storage
        // classes takes several calls, each going on from the last one's token.
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}/rewriteTo/b/{to_bucket}/o/{}",
            self.base,
            segment(from.as_str()),
            segment(to.as_str())
        );
        let mut token: Option<String> = None;
        for _ in 0..MAX_REWRITE_CALLS {
            let build = || {
                let mut query = vec![("sourceGeneration", generation)];
                if let Some(t) = &token {
                    query.push(("rewriteToken", t.as_str()));
                }
                self.http
                    .post(&url)
                    .query(&query)
                    .json(&serde_json::json!({}))
            };
            let resp = match self.auth.send("rewrite object", build).await {
                Ok(r) => r,
                Err(PortError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let r: Rewrite = resp
                .json()
                .await
                .map_err(|e| e.into_port("rewrite object"))?;
            match (r.done, r.resource, r.rewrite_token) {
                (true, Some(resource), _) => return resource.meta().map(Some),
                (false, _, Some(t)) => token = Some(t),
                _ => {
                    return Err(PortError::transient(format!(
                        "rewrite of gs://{bucket}/{from}: an answer neither done nor with a token"
                    )));
                }
            }
        }
        Err(PortError::transient(format!(
            "rewrite of gs://{bucket}/{from} was not done after {MAX_REWRITE_CALLS} calls; \
             retried from the start"
        )))
    }

    async fn list_page(
        &self,
        bucket: &BucketName,
        prefix: &str,
        page_token: Option<String>,
    ) -> Result<ObjectPage, PortError> {
        let build = || {
            let req = self
                .http
                .get(format!("{}/storage/v1/b/{bucket}/o", self.base))
                .query(&[("prefix", prefix), ("maxResults", "1000")]);
            match &page_token {
                Some(t) => req.query(&[("pageToken", t.as_str())]),
                None => req,
            }
        };
        let page: Listing = self
            .auth
            .send("list objects", build)
            .await?
            .json()
            .await
            .map_err(|e| PortError::transient(format!("list objects: {e}")))?;
        let objects = page
            .items
            .into_iter()
            .map(|r| r.meta())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ObjectPage {
            objects,
            next: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_encoded_as_one_segment() {
        assert_eq!(segment("a/b c+d.csv").to_string(), "a%2Fb%20c%2Bd.csv");
        assert_eq!(segment("ü~-_.x").to_string(), "%C3%BC~-_.x");
    }

    #[test]
    fn crc32c_matches_the_gcs_test_vector() {
        // GCS documents CRC32C of "hello world" ... computed with the Castagnoli polynomial.
        assert_eq!(crc32c_b64(crc32c::crc32c(b"")), "AAAAAA==");
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[tokio::test]
    async fn a_chunk_is_read_into_one_chunk_of_memory() {
        // Two and a half chunks, in reads of odd sizes: each top-up takes exactly what is
        // asked (the last what is left) into a buffer of that capacity, not a doubled one,
        // and the CRC32C of what was read is the source's.
        let data: Vec<u8> = (0..CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        let (rx, mut tx) = tokio::io::simplex(100_003);
        let source = data.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            tx.write_all(&source).await.and(tx.shutdown().await)
        });
        let mut body: ByteStream = Box::pin(rx);
        let mut got = Vec::new();
        let mut crc = 0;
        for (want, ended) in [(CHUNK, false), (CHUNK, false), (CHUNK / 2, true), (0, true)] {
            let mut buf = Vec::new();
            let eof = GcsStore::top_up(&mut body, &mut buf, CHUNK, &mut crc)
                .await
                .unwrap();
            assert_eq!((buf.len(), eof), (want, ended));
            assert!(
                buf.capacity() <= CHUNK,
                "a chunk of {} bytes held {} bytes of memory",
                buf.len(),
                buf.capacity()
            );
            got.extend_from_slice(&buf);
        }
        writer.await.unwrap().unwrap();
        assert!(got == data, "the chunks put together are the source");
        assert_eq!(crc, crc32c::crc32c(&data));
    }
}
