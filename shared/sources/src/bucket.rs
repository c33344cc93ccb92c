//! A folder of another bucket as a stage source, through the [`ObjectStore`] port.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;

use super::{INTERNAL_PREFIX, below};
use conveyor_core::config::{GcsSource, folder};
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::{
    Digests, ObjectMeta, ObjectStore, Opened, PortError, Source, SourceObject,
};

/// Every object below a folder of a bucket (Conveyor's own `_conveyor/` objects excepted).
pub(super) struct BucketSource {
    store: Arc<dyn ObjectStore>,
    bucket: BucketName,
    folder: String,
}

impl BucketSource {
    pub(super) fn new(store: Arc<dyn ObjectStore>, spec: &GcsSource) -> Self {
        Self {
            store,
            bucket: spec.bucket.clone(),
            folder: folder(&spec.prefix).to_owned(),
        }
    }
}

/// What an [`ObjectMeta::etag`] is, told by its shape: Cloud Storage's CRC32C (8 base64
/// characters) or MD5 (24), or the embedded store's SHA-256 (64 hex digits).
pub(crate) fn digests_of(meta: &ObjectMeta) -> Digests {
    let e = meta.etag.as_str();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut d = Digests::default();
    match e.len() {
        8 if b64.decode(e).is_ok_and(|b| b.len() == 4) => d.crc32c = Some(e.to_owned()),
        24 => {
            if let Ok(b) = b64.decode(e)
                && b.len() == 16
            {
                d.md5 = Some(hex::encode(b));
            }
        }
        64 if e.bytes().all(|c| c.is_ascii_hexdigit()) => {
            d.sha256 = Some(e.to_ascii_lowercase());
        }
        _ => {}
    }
    d
}

#[async_trait]
impl Source for BucketSource {
    fn uri(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.folder)
    }

    async fn list(&self) -> Result<Vec<SourceObject>, PortError> {
        let prefix = if self.folder.is_empty() {
            String::new()
        } else {
            format!("{}/", self.folder)
        };
        let listed = self.store.list(&self.bucket, &prefix).await?;
        let mut out = Vec::with_capacity(listed.len());
        for meta in listed {
            let name = meta.object.name.as_str();
            if name.starts_with(INTERNAL_PREFIX) {
                continue;
            }
            let Some(relative) = below(&self.folder, name) else {
                continue;
            };
            out.push(SourceObject {
                key: name.to_owned(),
                relative: relative.to_owned(),
                path: name.to_owned(),
                size: meta.object.size,
                etag: None,
                version: Some(meta.object.generation.clone()).filter(|g| !g.is_empty()),
                modified: Some(meta.updated),
                digests: digests_of(&meta),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn open(&self, object: &SourceObject) -> Result<Opened, PortError> {
        let name =
            ObjectName::parse(&object.key).map_err(|e| PortError::permanent(e.to_string()))?;
        Ok(Opened {
            body: self.store.open(&self.bucket, &name).await?,
            size: None,
            digests: Digests::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::event::ObjectRef;

    fn meta(etag: &str) -> ObjectMeta {
        ObjectMeta {
            object: ObjectRef {
                bucket: BucketName::parse("b-1").unwrap(),
                name: ObjectName::parse("x").unwrap(),
                generation: "1".to_owned(),
                size: Some(1),
            },
            etag: etag.to_owned(),
            updated: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_etag_is_read_as_the_digest_its_shape_says() {
        assert_eq!(
            digests_of(&meta("yZRlqg==")).crc32c.as_deref(),
            Some("yZRlqg==")
        );
        assert_eq!(
            digests_of(&meta("XrY7u+Ae7tCTyyK7j1rNww==")).md5.as_deref(),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        let sha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        assert_eq!(digests_of(&meta(sha)).sha256.as_deref(), Some(sha));
        assert_eq!(digests_of(&meta("\"opaque\"")), Digests::default());
    }
}
