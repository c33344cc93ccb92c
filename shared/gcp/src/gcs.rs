//! Cloud Storage through its JSON API.
//!
//! google-cloud-storage covers reads and writes, but its control plane (list, metadata,
//! buckets) is gRPC-only and cannot run against fake-gcs-server, and its resumable uploads
//! break there. The JSON API is small, stable, what fake-gcs-server implements, and lets the
//! adapter stream uploads in fixed-size chunks with an end-to-end CRC32C check.

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{GcpAuth, status_error, transport_error};
use conveyor_core::event::ObjectRef;
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::{ByteStream, ObjectMeta, ObjectPage, ObjectStore, PortError};

/// Upload chunk size: a multiple of 256 KiB, as resumable uploads require. Memory per upload
/// is two chunks, whatever the object's size: the one being sent and the next, read ahead to
/// know which chunk is the last.
pub(crate) const CHUNK: usize = 8 * 1024 * 1024;

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[serde(default)]
    items: Vec<Resource>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// Percent-encodes an object name as one path segment (`/` included).
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Resource {
    fn meta(self) -> Result<ObjectMeta, PortError> {
        let bucket =
            BucketName::parse(&self.bucket).map_err(|e| PortError::Permanent(e.to_string()))?;
        let name =
            ObjectName::parse(&self.name).map_err(|e| PortError::Permanent(e.to_string()))?;
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

    async fn send(
        &self,
        req: crate::rest::RequestBuilder,
        what: &str,
    ) -> Result<crate::rest::Response, PortError> {
        let req = self.auth.authorize(req).await?;
        let resp = req.send().await.map_err(|e| transport_error(what, &e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) || status == 308 {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(status_error(status, what, &body))
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
            encode(name.as_str())
        );
        let mut req = self.http.delete(url);
        if let Some(g) = generation {
            req = req.query(&[("ifGenerationMatch", g)]);
        }
        match self.send(req, "delete object").await {
            Ok(_) => Ok(true),
            Err(PortError::NotFound(_)) => Ok(false),
            Err(PortError::Permanent(m)) if m.contains("HTTP 412") => Ok(false),
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
            encode(name.as_str())
        ) + if if_absent {
            "&ifGenerationMatch=0"
        } else {
            ""
        };
        let resp = self
            .send(
                self.http
                    .post(start)
                    .header("content-type", "application/json")
                    .body("{}"),
                "start upload",
            )
            .await?;
        let session = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| PortError::Permanent("upload session without a Location".to_owned()))?;
        let mut crc = 0u32;
        let mut offset: u64 = 0;
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut next = Vec::with_capacity(CHUNK);
        Self::fill(&mut body, &mut chunk).await?;
        loop {
            Self::fill(&mut body, &mut next).await?;
            let last = next.is_empty();
            crc = crc32c::crc32c_append(crc, &chunk);
            let end = offset + chunk.len() as u64;
            let range = match (last, chunk.is_empty()) {
                (true, true) => format!("bytes */{offset}"),
                (true, false) => format!("bytes {offset}-{}/{end}", end - 1),
                (false, _) => format!("bytes {offset}-{}/*", end - 1),
            };
            let mut req = self
                .http
                .put(&session)
                .header("content-range", range)
                .body(std::mem::take(&mut chunk));
            if last {
                req = req.header("x-goog-hash", format!("crc32c={}", crc32c_b64(crc)));
            }
            let resp = self.send(req, "upload chunk").await?;
            offset = end;
            if last {
                let resource: Resource = resp
                    .json()
                    .await
                    .map_err(|e| PortError::Transient(format!("upload response: {e}")))?;
                let meta = resource.meta()?;
                let expected = crc32c_b64(crc);
                if meta.etag != expected || meta.object.size != Some(offset) {
                    // A corrupted transfer leaves nothing behind.
                    self.remove(bucket, name, None).await?;
                    return Err(PortError::Permanent(format!(
                        "checksum mismatch on gs://{bucket}/{name}: sent {offset} bytes crc32c {expected}, stored {:?} bytes crc32c {}",
                        meta.object.size, meta.etag
                    )));
                }
                return Ok(meta);
            }
            std::mem::swap(&mut chunk, &mut next);
        }
    }

    /// Reads up to one chunk from `body` into `buf`, holding one chunk of memory: reads go into
    /// the spare capacity only (`read_to_end` would double a full buffer to probe for the end).
    async fn fill(body: &mut ByteStream, buf: &mut Vec<u8>) -> Result<(), PortError> {
        buf.clear();
        buf.reserve_exact(CHUNK);
        while buf.len() < CHUNK {
            let n = body
                .read_buf(buf)
                .await
                .map_err(|e| PortError::Transient(format!("read the upload source: {e}")))?;
            if n == 0 {
                break;
            }
        }
        Ok(())
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
            Err(PortError::Permanent(msg)) if msg.contains("HTTP 412") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError> {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}?alt=media",
            self.base,
            encode(name.as_str())
        );
        let resp = self.send(self.http.get(url), "read object").await?;
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}",
            self.base,
            encode(name.as_str())
        );
        match self.send(self.http.get(url), "object metadata").await {
            Ok(resp) => {
                let r: Resource = resp
                    .json()
                    .await
                    .map_err(|e| PortError::Transient(format!("object metadata: {e}")))?;
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

    async fn list_page(
        &self,
        bucket: &BucketName,
        prefix: &str,
        page_token: Option<String>,
    ) -> Result<ObjectPage, PortError> {
        let mut req = self
            .http
            .get(format!("{}/storage/v1/b/{bucket}/o", self.base))
            .query(&[("prefix", prefix), ("maxResults", "1000")]);
        if let Some(t) = &page_token {
            req = req.query(&[("pageToken", t.as_str())]);
        }
        let page: Listing = self
            .send(req, "list objects")
            .await?
            .json()
            .await
            .map_err(|e| PortError::Transient(format!("list objects: {e}")))?;
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
        assert_eq!(encode("a/b c+d.csv"), "a%2Fb%20c%2Bd.csv");
    }

    #[test]
    fn crc32c_matches_the_gcs_test_vector() {
        // GCS documents CRC32C of "hello world" ... computed with the Castagnoli polynomial.
        assert_eq!(crc32c_b64(crc32c::crc32c(b"")), "AAAAAA==");
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[tokio::test]
    async fn a_chunk_is_read_into_one_chunk_of_memory() {
        // Two and a half chunks, in reads of odd sizes: each fill takes exactly one chunk (the
        // last what is left) into a buffer of one chunk's capacity, not a doubled one.
        let data: Vec<u8> = (0..CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        let (rx, mut tx) = tokio::io::simplex(100_003);
        let source = data.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            tx.write_all(&source).await.and(tx.shutdown().await)
        });
        let mut body: ByteStream = Box::pin(rx);
        let mut got = Vec::new();
        for want in [CHUNK, CHUNK, CHUNK / 2, 0] {
            let mut buf = Vec::new();
            GcsStore::fill(&mut body, &mut buf).await.unwrap();
            assert_eq!(buf.len(), want);
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
    }
}
