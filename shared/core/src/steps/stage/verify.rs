//! A reader that checks a copy end to end: it digests the bytes as they stream from the
//! source into the landing bucket, and at the end of the stream compares the size and the
//! digests with what the source vouched for. A mismatch is a read error at the end of the
//! stream, before the store commits the object, so a corrupted copy leaves nothing behind.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tokio::io::{AsyncRead, ReadBuf};

use crate::ports::{ByteStream, Digests};

/// What the bytes must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Expected {
    /// The size.
    pub(super) size: Option<u64>,
    /// The digests.
    pub(super) digests: Digests,
}

impl Expected {
    /// Combines what the listing said with what the reply to the read said; a conflict means
    /// the object changed in between.
    pub(super) fn combine(
        listed_size: Option<u64>,
        listed: &Digests,
        size: Option<u64>,
        read: &Digests,
    ) -> Result<Self, String> {
        fn one(
            a: Option<&String>,
            b: Option<&String>,
            what: &str,
        ) -> Result<Option<String>, String> {
            match (a, b) {
                (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => Err(format!(
                    "the {what} changed between the listing ({a}) and the read ({b}); the next run copies it"
                )),
                (a, b) => Ok(a.or(b).cloned()),
            }
        }
        let size = match (listed_size, size) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "the size changed between the listing ({a} bytes) and the read ({b} bytes); the next run copies it"
                ));
            }
            (a, b) => a.or(b),
        };
        Ok(Self {
            size,
            digests: Digests {
                md5: one(listed.md5.as_ref(), read.md5.as_ref(), "MD5")?,
                crc32c: one(listed.crc32c.as_ref(), read.crc32c.as_ref(), "CRC32C")?,
                sha256: one(listed.sha256.as_ref(), read.sha256.as_ref(), "SHA-256")?,
            },
        })
    }
}

/// What the bytes were: set once the stream has ended and matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Read {
    /// Bytes read.
    pub(super) size: u64,
    /// Their digests: CRC32C always, MD5 and SHA-256 when asked for.
    pub(super) digests: Digests,
}

/// The slot a [`Verifying`] reader fills when its stream ends well.
pub(super) type Outcome = Arc<Mutex<Option<Read>>>;

/// See the module documentation.
pub(super) struct Verifying {
    inner: ByteStream,
    what: String,
    expected: Expected,
    crc: u32,
    md5: Option<Md5>,
    sha256: Option<Sha256>,
    read: u64,
    ended: bool,
    outcome: Outcome,
    progress: Arc<AtomicU64>,
}

impl Verifying {
    /// Wraps `inner` (the bytes of `what`). MD5 and SHA-256 are computed when `expected` has
    /// one or `sha256` asks for it (the watermark then remembers the content's SHA-256);
    /// CRC32C always. Each byte read is added to `progress`.
    pub(super) fn new(
        inner: ByteStream,
        what: &str,
        expected: Expected,
        sha256: bool,
        progress: Arc<AtomicU64>,
    ) -> (Self, Outcome) {
        let outcome: Outcome = Arc::default();
        let reader = Self {
            md5: expected.digests.md5.is_some().then(Md5::new),
            sha256: (sha256 || expected.digests.sha256.is_some()).then(Sha256::new),
            inner,
            what: what.to_owned(),
            expected,
            crc: 0,
            read: 0,
            ended: false,
            outcome: outcome.clone(),
            progress,
        };
        (reader, outcome)
    }

    fn finish(&mut self) -> Result<(), String> {
        let digests = Digests {
            md5: self.md5.take().map(|h| hex::encode(h.finalize())),
            crc32c: Some(base64::engine::general_purpose::STANDARD.encode(self.crc.to_be_bytes())),
            sha256: self.sha256.take().map(|h| hex::encode(h.finalize())),
        };
        if let Some(size) = self.expected.size
            && size != self.read
        {
            return Err(format!(
                "{}: read {} bytes, the source announced {size}",
                self.what, self.read
            ));
        }
        let e = &self.expected.digests;
        for (kind, want, got) in [
            ("MD5", &e.md5, &digests.md5),
            ("CRC32C", &e.crc32c, &digests.crc32c),
            ("SHA-256", &e.sha256, &digests.sha256),
        ] {
            if let (Some(w), Some(g)) = (want, got)
                && !w.eq_ignore_ascii_case(g)
            {
                return Err(format!(
                    "{}: checksum mismatch: the source says {kind} {w}, the bytes read have {g}",
                    self.what
                ));
            }
        }
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(Read {
                size: self.read,
                digests,
            });
        }
        Ok(())
    }
}

impl AsyncRead for Verifying {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match this.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let chunk = &buf.filled()[before..];
                if chunk.is_empty() {
                    this.ended = true;
                    return Poll::Ready(
                        this.finish()
                            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m)),
                    );
                }
                this.crc = crc32c::crc32c_append(this.crc, chunk);
                if let Some(h) = &mut this.md5 {
                    h.update(chunk);
                }
                if let Some(h) = &mut this.sha256 {
                    h.update(chunk);
                }
                this.read += chunk.len() as u64;
                this.progress
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(size) = this.expected.size
                    && this.read > size
                {
                    this.ended = true;
                    // A failed read hands out no bytes.
                    buf.set_filled(before);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{}: more than the {size} bytes the source announced",
                            this.what
                        ),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(
        data: &'static [u8],
        expected: Expected,
    ) -> (std::io::Result<Vec<u8>>, Option<Read>) {
        let (mut r, outcome) = Verifying::new(Box::pin(data), "x", expected, true, Arc::default());
        let mut out = Vec::new();
        let res = r.read_to_end(&mut out).await.map(|_| out);
        let got = outcome.lock().unwrap().clone();
        (res, got)
    }

    #[tokio::test]
    async fn matching_bytes_pass_and_their_digests_are_kept() {
        let expected = Expected {
            size: Some(11),
            digests: Digests {
                md5: Some("5eb63bbbe01eeed093cb22bb8f5acdc3".to_owned()),
                crc32c: Some("yZRlqg==".to_owned()),
                sha256: None,
            },
        };
        let (res, got) = read_all(b"hello world", expected).await;
        assert_eq!(res.unwrap(), b"hello world");
        let got = got.unwrap();
        assert_eq!(got.size, 11);
        assert_eq!(
            got.digests.sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
    }

    #[tokio::test]
    async fn a_flipped_byte_fails_the_read_at_its_end() {
        let expected = Expected {
            size: Some(11),
            digests: Digests {
                md5: Some("5eb63bbbe01eeed093cb22bb8f5acdc3".to_owned()),
                ..Digests::default()
            },
        };
        let (res, got) = read_all(b"hello worle", expected).await;
        let e = res.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert!(got.is_none());
    }

    #[tokio::test]
    async fn a_short_or_long_stream_fails() {
        let short = Expected {
            size: Some(12),
            digests: Digests::default(),
        };
        assert!(read_all(b"hello world", short).await.0.is_err());
        let long = Expected {
            size: Some(5),
            digests: Digests::default(),
        };
        assert!(read_all(b"hello world", long).await.0.is_err());
    }

    #[test]
    fn a_digest_that_changed_between_listing_and_read_is_a_conflict() {
        let listed = Digests {
            md5: Some("aa".to_owned()),
            ..Digests::default()
        };
        let read = Digests {
            md5: Some("bb".to_owned()),
            ..Digests::default()
        };
        assert!(Expected::combine(Some(1), &listed, Some(1), &read).is_err());
        assert!(Expected::combine(Some(1), &listed, Some(2), &Digests::default()).is_err());
        let ok = Expected::combine(None, &listed, Some(3), &Digests::default()).unwrap();
        assert_eq!(ok.size, Some(3));
    }
}
