//! Files on web servers as a stage source: a list of URLs, or a manifest URL listing them.

use std::collections::BTreeSet;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, ETAG, HeaderMap, LAST_MODIFIED};

use conveyor_core::config::redact_url;
use conveyor_core::names::short_hash;
use conveyor_core::ports::{Digests, Opened, PortError, Source, SourceObject};

/// A manifest larger than this is refused: it is a list of URLs, not data.
const MANIFEST_LIMIT: usize = 16 * 1024 * 1024;

/// HEAD requests in flight while listing.
const HEADS_AT_ONCE: usize = 8;

pub(super) struct HttpsSource {
    http: reqwest::Client,
    urls: Vec<String>,
    manifest: Option<String>,
}

impl HttpsSource {
    pub(super) fn new(http: reqwest::Client, spec: &conveyor_core::config::HttpsSource) -> Self {
        Self {
            http,
            urls: spec.urls.clone(),
            manifest: spec.manifest.clone(),
        }
    }

    async fn manifest_urls(&self, manifest: &str) -> Result<Vec<String>, PortError> {
        let shown = redact_url(manifest);
        let base = reqwest::Url::parse(manifest)
            .map_err(|e| PortError::permanent(format!("manifest {shown}: {e}")))?;
        let resp = self.http.get(base.clone()).send().await.map_err(|e| {
            PortError::transient(format!("GET manifest {shown}: {}", e.without_url()))
        })?;
        let resp = check_status(resp, &format!("GET manifest {shown}"))?;
        let body = resp.bytes().await.map_err(|e| {
            PortError::transient(format!("read manifest {shown}: {}", e.without_url()))
        })?;
        if body.len() > MANIFEST_LIMIT {
            return Err(PortError::permanent(format!(
                "manifest {shown} is larger than {MANIFEST_LIMIT} bytes"
            )));
        }
        let text = String::from_utf8_lossy(&body);
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let url = base.join(line).map_err(|e| {
                PortError::permanent(format!("manifest {shown}, line {}: {e}", i + 1))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(PortError::permanent(format!(
                    "manifest {shown}, line {}: not an http(s) URL",
                    i + 1
                )));
            }
            out.push(url.to_string());
        }
        Ok(out)
    }

    async fn describe(&self, url: String) -> SourceObject {
        let mut object = SourceObject {
            key: key_of(&url),
            relative: String::new(),
            path: String::new(),
            size: None,
            etag: None,
            version: None,
            modified: None,
            digests: Digests::default(),
        };
        if let Ok(parsed) = reqwest::Url::parse(&url) {
            object.path = percent_decode(parsed.path().trim_start_matches('/'));
            object.relative = object.path.rsplit('/').next().unwrap_or("").to_owned();
        }
        // A server that refuses HEAD still serves GET: the object is then listed without
        // metadata, which makes it count as changed.
        if let Ok(resp) = self.http.head(&url).send().await
            && resp.status().is_success()
        {
            let h = resp.headers();
            object.size = header(h, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
            object.etag = header(h, ETAG.as_str()).map(str::to_owned);
            object.modified = header(h, LAST_MODIFIED.as_str())
                .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
                .map(|t| t.with_timezone(&Utc));
            object.digests = digests_of(h);
        }
        object
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The digests a reply vouches for: `Content-MD5`, and Cloud Storage's `x-goog-hash`.
fn digests_of(h: &HeaderMap) -> Digests {
    let b64 = base64::engine::general_purpose::STANDARD;
    let md5_hex = |v: &str| {
        b64.decode(v.trim())
            .ok()
            .filter(|b| b.len() == 16)
            .map(hex::encode)
    };
    let mut d = Digests {
        md5: header(h, "content-md5").and_then(md5_hex),
        ..Digests::default()
    };
    for value in h
        .get_all("x-goog-hash")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("crc32c", v)) => d.crc32c = Some(v.trim().to_owned()),
                Some(("md5", v)) => d.md5 = md5_hex(v).or(d.md5.take()),
                _ => {}
            }
        }
    }
    d
}

/// The watermark key of a URL: without credentials or query string (a signature is a
/// credential), plus a hash of the whole URL when something was taken out.
fn key_of(url: &str) -> String {
    let shown = redact_url(url);
    if shown == url {
        url.to_owned()
    } else {
        format!("{}#{}", shown.trim_end_matches("?…"), short_hash(&[url]))
    }
}

/// `s` with its `%XX` escapes decoded (invalid UTF-8 replaced).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn check_status(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, PortError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let msg = format!("{what}: HTTP {status}");
    Err(match status.as_u16() {
        404 | 410 => PortError::not_found(msg),
        408 | 429 | 500..=599 => PortError::transient(msg),
        _ => PortError::permanent(msg),
    })
}

#[async_trait]
impl Source for HttpsSource {
    fn uri(&self) -> String {
        "https".to_owned()
    }

    async fn list(&self) -> Result<Vec<SourceObject>, PortError> {
        let urls = match &self.manifest {
            Some(m) => self.manifest_urls(m).await?,
            None => self.urls.clone(),
        };
        let mut seen = BTreeSet::new();
        let urls: Vec<String> = urls
            .into_iter()
            .filter(|u| seen.insert(u.clone()))
            .collect();
        let mut out: Vec<SourceObject> = futures::stream::iter(urls)
            .map(|u| self.describe(u))
            .buffered(HEADS_AT_ONCE)
            .collect()
            .await;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn open(&self, object: &SourceObject) -> Result<Opened, PortError> {
        // The key is the URL unless credentials were taken out of it; then the listing's URL
        // is needed, which is why it is looked up again.
        let url = if object.key.contains('#') {
            let urls = match &self.manifest {
                Some(m) => self.manifest_urls(m).await?,
                None => self.urls.clone(),
            };
            urls.into_iter()
                .find(|u| key_of(u) == object.key)
                .ok_or_else(|| PortError::not_found(object.key.clone()))?
        } else {
            object.key.clone()
        };
        let shown = redact_url(&url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| PortError::transient(format!("GET {shown}: {}", e.without_url())))?;
        let resp = check_status(resp, &format!("GET {shown}"))?;
        let size = header(resp.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        let digests = digests_of(resp.headers());
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Opened {
            body: Box::pin(tokio_util::io::StreamReader::new(stream)),
            size,
            digests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_are_keyed_without_their_signature() {
        let k = key_of("https://h/a/b.csv?X-Amz-Signature=secret");
        assert!(k.starts_with("https://h/a/b.csv#"), "{k}");
        assert!(!k.contains("secret"));
        assert_eq!(key_of("https://h/a/b.csv"), "https://h/a/b.csv");
    }

    #[test]
    fn reply_headers_give_md5_and_crc32c() {
        let mut h = HeaderMap::new();
        h.insert("x-goog-hash", "crc32c=yZRlqg==".parse().unwrap());
        h.append(
            "x-goog-hash",
            "md5=XrY7u+Ae7tCTyyK7j1rNww==".parse().unwrap(),
        );
        let d = digests_of(&h);
        assert_eq!(d.crc32c.as_deref(), Some("yZRlqg=="));
        assert_eq!(d.md5.as_deref(), Some("5eb63bbbe01eeed093cb22bb8f5acdc3"));
    }

    #[test]
    fn url_paths_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b/c%2Bd.csv"), "a b/c+d.csv");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x%2B"), "x+", "an escape at the very end");
    }
}
