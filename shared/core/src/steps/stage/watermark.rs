//! The stage watermark: what each pipeline has already copied, kept as one JSON object in
//! the landing bucket, `_conveyor/stage/<pipeline>.json`.
//!
//! Why an object in the landing bucket: it lives (and is deleted, and is granted) with the
//! data it describes; it needs no database; an upload is atomic, so a reader sees the old or
//! the new watermark, never half of one; and it records the source's fingerprint, which the
//! staged objects' own metadata could not give for a renamed (`{date}/…`) copy. It is written
//! after each batch of copies (at most every 30 s) and at the end of a run, so a run that is
//! stopped repeats at most one batch.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::plan::Entry;
use crate::INTERNAL_PREFIX;
use crate::names::{BucketName, ObjectName, PipelineName};
use crate::ports::{ObjectStore, PortError};

/// The watermark file format version.
const VERSION: u32 = 1;

/// A watermark larger than this is refused rather than read into memory.
const LIMIT: u64 = 512 * 1024 * 1024;

/// One pipeline's watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Watermark {
    /// The format version.
    pub(super) version: u32,
    /// The pipeline.
    pub(super) pipeline: String,
    /// The source it describes (`s3://bucket/folder`); another source starts afresh.
    pub(super) source: String,
    /// When it was written.
    pub(super) updated: DateTime<Utc>,
    /// What was copied, by source key.
    pub(super) objects: BTreeMap<String, Entry>,
}

/// Where the watermark of `pipeline` lives in its landing bucket.
pub(super) fn object_name(pipeline: &PipelineName) -> Result<ObjectName, PortError> {
    ObjectName::parse(&format!("{INTERNAL_PREFIX}stage/{pipeline}.json"))
        .map_err(|e| PortError::permanent(e.to_string()))
}

impl Watermark {
    /// An empty watermark.
    pub(super) fn new(pipeline: &PipelineName, source: &str) -> Self {
        Self {
            version: VERSION,
            pipeline: pipeline.to_string(),
            source: source.to_owned(),
            updated: Utc::now(),
            objects: BTreeMap::new(),
        }
    }

    /// Reads the watermark of `pipeline` from `bucket`: `None` when there is none.
    ///
    /// # Errors
    /// When it cannot be read, or is not a watermark (it is never silently replaced: that
    /// would copy everything again).
    pub(super) async fn read(
        store: &dyn ObjectStore,
        bucket: &BucketName,
        pipeline: &PipelineName,
    ) -> Result<Option<Self>, PortError> {
        let name = object_name(pipeline)?;
        let mut body = match store.open(bucket, &name).await {
            Ok(b) => b,
            Err(PortError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        (&mut body)
            .take(LIMIT)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| PortError::transient(format!("read gs://{bucket}/{name}: {e}")))?;
        let w: Self = serde_json::from_slice(&bytes).map_err(|e| {
            PortError::permanent(format!(
                "gs://{bucket}/{name} is not a stage watermark ({e}); delete it, or stage with --full to rewrite it"
            ))
        })?;
        if w.version != VERSION {
            return Err(PortError::permanent(format!(
                "gs://{bucket}/{name} has version {}, this Conveyor reads version {VERSION}",
                w.version
            )));
        }
        Ok(Some(w))
    }

    /// Merges what a concurrent run may have written since this one read the watermark:
    /// entries this run did not `touch` take the stored value, then entries of objects no
    /// longer `listed` are dropped (the source no longer has them; should one come back, it
    /// is new).
    pub(super) fn merge(
        &mut self,
        stored: Option<Self>,
        touched: &BTreeSet<String>,
        listed: &BTreeSet<String>,
    ) {
        if let Some(stored) = stored
            && stored.source == self.source
        {
            for (key, entry) in stored.objects {
                if !touched.contains(&key) {
                    self.objects.insert(key, entry);
                }
            }
        }
        self.objects.retain(|k, _| listed.contains(k));
    }

    /// Writes the watermark (one upload: readers see the old or the new one).
    ///
    /// # Errors
    /// When the upload fails.
    pub(super) async fn write(
        &mut self,
        store: &dyn ObjectStore,
        bucket: &BucketName,
        pipeline: &PipelineName,
    ) -> Result<(), PortError> {
        self.updated = Utc::now();
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| PortError::permanent(format!("stage watermark: {e}")))?;
        store
            .put(
                bucket,
                &object_name(pipeline)?,
                Box::pin(std::io::Cursor::new(bytes)),
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Digests;

    fn entry(target: &str) -> Entry {
        Entry {
            size: Some(1),
            etag: None,
            version: None,
            modified: None,
            digests: Digests::default(),
            target: target.to_owned(),
            generation: "1".to_owned(),
            staged_at: Utc::now(),
        }
    }

    #[test]
    fn a_merge_keeps_a_concurrent_runs_entries_and_drops_vanished_objects() {
        let p = PipelineName::parse("p").unwrap();
        let mut mine = Watermark::new(&p, "s3://b/f");
        mine.objects.insert("a".into(), entry("mine-a"));
        mine.objects.insert("b".into(), entry("old-b"));
        mine.objects.insert("gone".into(), entry("x"));
        let mut theirs = Watermark::new(&p, "s3://b/f");
        theirs.objects.insert("a".into(), entry("theirs-a"));
        theirs.objects.insert("b".into(), entry("theirs-b"));
        theirs.objects.insert("c".into(), entry("theirs-c"));
        let touched = BTreeSet::from(["a".to_owned()]);
        let listed = BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        mine.merge(Some(theirs), &touched, &listed);
        let targets: Vec<&str> = mine.objects.values().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["mine-a", "theirs-b", "theirs-c"]);
    }

    #[tokio::test]
    async fn a_watermark_round_trips_through_a_store() {
        let store = crate::testing::MemoryStore::default();
        let bucket = BucketName::parse("landing").unwrap();
        let p = PipelineName::parse("vendor").unwrap();
        assert_eq!(Watermark::read(&store, &bucket, &p).await.unwrap(), None);
        let mut w = Watermark::new(&p, "gs://src/x");
        w.objects.insert("k".into(), entry("t"));
        w.write(&store, &bucket, &p).await.unwrap();
        let back = Watermark::read(&store, &bucket, &p).await.unwrap().unwrap();
        assert_eq!(back.objects, w.objects);
        let name = ObjectName::parse("_conveyor/stage/vendor.json").unwrap();
        assert!(store.head(&bucket, &name).await.unwrap().is_some());
    }
}
