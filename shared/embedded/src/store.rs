//! A directory per bucket, and a watcher that notices new files in them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use conveyor_core::event::ObjectRef;
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::{ByteStream, ObjectMeta, ObjectStore, PortError};

/// Buckets as directories under one root: object `b/x/y.csv` is the file `ROOT/b/x/y.csv`.
///
/// Writes go to a hidden temporary file first and are renamed into place, so an object
/// appears whole or not at all. The generation is the file's modification time in
/// nanoseconds; the ETag is the SHA-256 of the content.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

fn io(e: std::io::Error, what: &Path) -> PortError {
    if e.kind() == std::io::ErrorKind::NotFound {
        PortError::NotFound(what.display().to_string())
    } else {
        PortError::Transient(format!("{}: {e}", what.display()))
    }
}

impl LocalStore {
    /// A store rooted at `root` (created when missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The directory of `bucket`.
    pub fn bucket_dir(&self, bucket: &BucketName) -> PathBuf {
        self.root.join(bucket.as_str())
    }

    fn path(&self, bucket: &BucketName, name: &ObjectName) -> PathBuf {
        // ObjectName has no empty, `.` or `..` segments, so this stays inside the bucket.
        self.bucket_dir(bucket).join(name.as_str())
    }

    /// Writes `body` to a hidden temporary file beside `path` (the watcher and listings skip
    /// names starting with `.`), synced to disk, and returns its path. Removed on failure.
    async fn write_hidden(
        &self,
        path: &Path,
        name: &ObjectName,
        mut body: ByteStream,
    ) -> Result<PathBuf, PortError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io(e, &dir))?;
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}.{unique}.tmp",
            name.file_name(),
            std::process::id()
        ));
        let result = async {
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io(e, &tmp))?;
            tokio::io::copy(&mut body, &mut out)
                .await
                .map_err(|e| PortError::Transient(format!("copy into {}: {e}", tmp.display())))?;
            out.flush().await.map_err(|e| io(e, &tmp))?;
            out.sync_all().await.map_err(|e| io(e, &tmp))
        }
        .await;
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn meta(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        path: &Path,
    ) -> Result<ObjectMeta, PortError> {
        let md = tokio::fs::metadata(path).await.map_err(|e| io(e, path))?;
        let mut file = tokio::fs::File::open(path).await.map_err(|e| io(e, path))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| io(e, path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let (generation, updated) = stamp(&md);
        Ok(ObjectMeta {
            object: ObjectRef {
                bucket: bucket.clone(),
                name: name.clone(),
                generation,
                size: Some(md.len()),
            },
            etag: hex::encode(h.finalize()),
            updated,
        })
    }
}

fn stamp(md: &std::fs::Metadata) -> (String, DateTime<Utc>) {
    let modified = md.modified().unwrap_or(UNIX_EPOCH);
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (nanos.to_string(), DateTime::<Utc>::from(modified))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        let path = self.path(bucket, name);
        let tmp = self.write_hidden(&path, name, body).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(e, &path));
        }
        self.meta(bucket, name, &path).await
    }

    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        let path = self.path(bucket, name);
        let tmp = self.write_hidden(&path, name, body).await?;
        // A hard link fails when the target exists: an atomic create-if-absent.
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => self.meta(bucket, name, &path).await.map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io(e, &path)),
        }
    }

    async fn delete(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError> {
        let path = self.path(bucket, name);
        if let Some(g) = generation {
            match self.meta(bucket, name, &path).await {
                Ok(m) if m.object.generation == g => {}
                Ok(_) | Err(PortError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e, &path)),
        }
    }

    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError> {
        let path = self.path(bucket, name);
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io(e, &path))?;
        Ok(Box::pin(f))
    }

    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        let path = self.path(bucket, name);
        match self.meta(bucket, name, &path).await {
            Ok(m) => Ok(Some(m)),
            Err(PortError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let mut out = Vec::new();
        for (name, _) in scan(&self.bucket_dir(bucket)) {
            if name.as_str().starts_with(prefix) {
                let path = self.path(bucket, &name);
                out.push(self.meta(bucket, &name, &path).await?);
            }
        }
        out.sort_by(|a, b| a.object.name.cmp(&b.object.name));
        Ok(out)
    }
}

/// Every visible regular file under `dir`, with its (size, generation).
fn scan(dir: &Path) -> Vec<(ObjectName, (u64, String))> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(ObjectName, (u64, String))>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue; // temporary and hidden files are not objects
            }
            let path = entry.path();
            let Ok(md) = entry.metadata() else { continue };
            if md.is_dir() {
                walk(root, &path, out);
            } else if md.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                match ObjectName::parse(&rel.join("/")) {
                    Ok(n) => out.push((n, (md.len(), stamp(&md).0))),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "file name is not a valid object name; ignored")
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Notices new or changed files in bucket directories by scanning them at an interval.
///
/// A file is announced once its size and modification time have held still for one whole
/// interval, so a file still being copied in is not loaded half-written. Scanning rather than
/// inotify also works on network and container file systems.
pub struct Watcher {
    store: LocalStore,
    buckets: Vec<BucketName>,
    interval: Duration,
    unsettled: Arc<AtomicUsize>,
}

impl Watcher {
    /// A watcher of `buckets` in `store`.
    pub fn new(store: LocalStore, buckets: Vec<BucketName>, interval: Duration) -> Self {
        Self {
            store,
            buckets,
            interval,
            unsettled: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Keeps the count of files seen but not yet announced (still changing, or waiting for
    /// the next scan) in `gauge`: the runtime is not quiet while it is above zero.
    pub fn with_gauge(mut self, gauge: Arc<AtomicUsize>) -> Self {
        self.unsettled = gauge;
        self
    }

    /// Scans until `tx` is closed, sending each arrival once per generation.
    pub async fn run(self, tx: mpsc::UnboundedSender<ObjectRef>) {
        let mut previous: HashMap<(BucketName, ObjectName), (u64, String)> = HashMap::new();
        let mut announced: HashMap<(BucketName, ObjectName), (u64, String)> = HashMap::new();
        loop {
            let mut current = HashMap::new();
            for bucket in &self.buckets {
                let dir = self.store.bucket_dir(bucket);
                let found = tokio::task::spawn_blocking(move || scan(&dir))
                    .await
                    .unwrap_or_default();
                for (name, sig) in found {
                    current.insert((bucket.clone(), name), sig);
                }
            }
            for (key, sig) in &current {
                let stable = previous.get(key) == Some(sig);
                if stable && announced.get(key) != Some(sig) {
                    announced.insert(key.clone(), sig.clone());
                    let object = ObjectRef {
                        bucket: key.0.clone(),
                        name: key.1.clone(),
                        generation: sig.1.clone(),
                        size: Some(sig.0),
                    };
                    if tx.send(object).is_err() {
                        return;
                    }
                }
            }
            announced.retain(|k, _| current.contains_key(k));
            let unsettled = current
                .iter()
                .filter(|(k, sig)| announced.get(*k) != Some(*sig))
                .count();
            self.unsettled.store(unsettled, Ordering::SeqCst);
            previous = current;
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_head_reports_size_and_a_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let b = BucketName::parse("landing").unwrap();
        let n = ObjectName::parse("a/b.csv").unwrap();
        let meta = store
            .put(&b, &n, Box::pin(&b"x,y\n1,2\n"[..]))
            .await
            .unwrap();
        assert_eq!(meta.object.size, Some(8));
        let again = store.head(&b, &n).await.unwrap().unwrap();
        assert_eq!(again.etag, meta.etag);
        assert!(
            store
                .head(&b, &ObjectName::parse("nope").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.list(&b, "a/").await.unwrap().len(), 1);
        let marker = ObjectName::parse("a/marker").unwrap();
        assert!(
            store
                .create_new(&b, &marker, Box::pin(&b"1"[..]))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .create_new(&b, &marker, Box::pin(&b"2"[..]))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.head(&b, &marker).await.unwrap().unwrap().object.size,
            Some(1)
        );
    }

    #[tokio::test]
    async fn the_watcher_announces_a_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let b = BucketName::parse("landing").unwrap();
        std::fs::create_dir_all(dir.path().join("landing/x")).unwrap();
        std::fs::write(dir.path().join("landing/x/f.csv"), "a\n1\n").unwrap();
        std::fs::write(dir.path().join("landing/x/.hidden.tmp"), "a\n1\n").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let w = Watcher::new(store, vec![b], Duration::from_millis(20));
        let task = tokio::spawn(w.run(tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.name.as_str(), "x/f.csv");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err(),
            "announced twice"
        );
        task.abort();
    }
}
