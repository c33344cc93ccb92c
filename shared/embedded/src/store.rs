//! A directory per bucket, and a watcher that notices new files in them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::warn;

use conveyor_core::event::ObjectRef;
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::{ByteStream, ObjectMeta, ObjectStore, PortError};

/// Buckets as directories under one root: object `b/x/y.csv` is the file `ROOT/b/x/y.csv`.
///
/// Writes go to a hidden temporary file first and are renamed into place, so an object
/// appears whole or not at all. The generation is the content's: its size and the first 128
/// bits of its SHA-256 ([`content_generation`]), so touching a file makes no new generation
/// and an overwrite that keeps the old modification time (`cp -p`, `rsync -t`, `tar x`)
/// does; the ETag is the whole SHA-256 of the content.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Classifies a file-system error: a missing file is "not found"; a name the file system
/// cannot hold (a segment over 255 bytes: `File name too long`) or a symbolic link met with
/// `O_NOFOLLOW` can never succeed and is permanent; anything else (I/O trouble, a full disk,
/// too many open files) may pass and is transient.
///
/// The message names no path: it reaches callers (a request's answer, a REJECTED row), and
/// the server's own directories are not theirs to know; callers name the object. The path
/// is logged here, for the operator.
fn io(e: std::io::Error, what: &Path) -> PortError {
    let symlink = e.raw_os_error() == Some(libc::ELOOP);
    match e.kind() {
        std::io::ErrorKind::NotFound => PortError::not_found("no such object"),
        std::io::ErrorKind::InvalidFilename => {
            PortError::permanent(format!("the name cannot be stored as a file: {e}"))
        }
        _ if symlink => not_followed(what),
        _ => {
            warn!(path = %what.display(), error = %e, "file-system error");
            PortError::transient(format!("file-system error: {e}"))
        }
    }
}

/// A symbolic link inside a bucket is not an object: it is never followed (it could point
/// anywhere outside the bucket).
fn not_followed(path: &Path) -> PortError {
    tracing::debug!(path = %path.display(), "symbolic link not followed");
    PortError::not_found("a symbolic link; links inside a bucket are not followed")
}

/// The generation of content of `size` bytes whose SHA-256 is `digest`: the size and the
/// first 128 bits of the digest in hex (`<size>-<32 hex digits>`, at most 53 bytes).
pub(crate) fn content_generation(size: u64, digest: &[u8]) -> String {
    let prefix = &digest[..digest.len().min(16)];
    format!("{size}-{}", hex::encode(prefix))
}

/// What is not a regular file (a folder, a FIFO, a device, a socket) is not an object. A
/// folder is simply no object (as in Cloud Storage, where `a/` holding `a/b` is no object);
/// anything else named as an object can never be read as one: permanent.
fn not_regular(md: &std::fs::Metadata, bucket: &BucketName, name: &ObjectName) -> PortError {
    if md.is_dir() {
        return PortError::not_found(format!("{bucket}/{name} is a folder, not an object"));
    }
    PortError::permanent(format!(
        "{bucket}/{name} is not a regular file (a FIFO, device or socket is not an object)"
    ))
}

/// Opens `path` for reading without following a symbolic link at its last component and
/// without blocking on a FIFO (`O_NONBLOCK`: opening a FIFO with no writer would pin the
/// thread), then refuses what is not a regular file.
fn open_regular_blocking(
    path: &Path,
    bucket: &BucketName,
    name: &ObjectName,
) -> Result<std::fs::File, PortError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let file = options.open(path).map_err(|e| io(e, path))?;
    let md = file.metadata().map_err(|e| io(e, path))?;
    if !md.is_file() {
        return Err(not_regular(&md, bucket, name));
    }
    Ok(file)
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

    /// The file of object `bucket/name`.
    pub(crate) fn path(&self, bucket: &BucketName, name: &ObjectName) -> PathBuf {
        // ObjectName has no empty, `.` or `..` segments, so this stays inside the bucket.
        self.bucket_dir(bucket).join(name.as_str())
    }

    /// Opens object `bucket/name` for reading, blocking the calling thread (for code already
    /// on a blocking thread, such as a warehouse load: no hop through the runtime per read).
    /// The same checks as [`ObjectStore::open`]: no symbolic link on the way or at the end,
    /// and a regular file (a FIFO is refused without waiting for a writer).
    ///
    /// # Errors
    /// [`PortError::NotFound`] when the object does not exist (or is a link or a folder),
    /// [`PortError::Permanent`] when it is not a regular file, else as [`ObjectStore::open`].
    pub fn open_blocking(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<std::fs::File, PortError> {
        let path = self.checked_path_blocking(bucket, name)?;
        open_regular_blocking(&path, bucket, name)
    }

    /// [`Self::checked_path`] on the calling thread.
    fn checked_path_blocking(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<PathBuf, PortError> {
        let mut path = self.bucket_dir(bucket);
        let segments: Vec<&str> = name.as_str().split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            path.push(segment);
            if i + 1 == segments.len() {
                break;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(md) if md.file_type().is_symlink() => return Err(not_followed(&path)),
                Ok(_) => {}
                // A missing folder: nothing below it exists (a write creates it).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    path = self.path(bucket, name);
                    break;
                }
                Err(e) => return Err(io(e, &path)),
            }
        }
        Ok(path)
    }

    /// The path of `bucket/name`, after checking that no folder on the way is a symbolic
    /// link (the last component is opened with `O_NOFOLLOW` or checked with `lstat`).
    async fn checked_path(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<PathBuf, PortError> {
        let (store, bucket, name) = (self.clone(), bucket.clone(), name.clone());
        // One trip to a blocking thread for every folder on the way.
        tokio::task::spawn_blocking(move || store.checked_path_blocking(&bucket, &name))
            .await
            .map_err(|e| PortError::transient(format!("object path: {e}")))?
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
            tokio::io::copy(&mut body, &mut out).await.map_err(|e| {
                warn!(path = %tmp.display(), error = %e, "cannot write an object");
                PortError::transient(format!("cannot write the object: {e}"))
            })?;
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
        let (bucket, name, path) = (bucket.clone(), name.clone(), path.to_path_buf());
        // One trip to a blocking thread, not one per system call.
        tokio::task::spawn_blocking(move || meta_blocking(&bucket, &name, &path))
            .await
            .map_err(|e| PortError::transient(format!("object metadata: {e}")))?
    }
}

/// The metadata of the object at `path` (its generation and ETag hash the content), on the
/// calling thread.
fn meta_blocking(
    bucket: &BucketName,
    name: &ObjectName,
    path: &Path,
) -> Result<ObjectMeta, PortError> {
    let md = std::fs::symlink_metadata(path).map_err(|e| io(e, path))?;
    if md.file_type().is_symlink() {
        return Err(not_followed(path));
    }
    if !md.is_file() {
        return Err(not_regular(&md, bucket, name));
    }
    let mut file = open_regular_blocking(path, bucket, name)?;
    let (size, digest) = hash_content(&mut file, md.len()).map_err(|e| io(e, path))?;
    Ok(ObjectMeta {
        object: ObjectRef {
            bucket: bucket.clone(),
            name: name.clone(),
            generation: content_generation(size, &digest),
            size: Some(size),
        },
        etag: hex::encode(digest),
        updated: DateTime::<Utc>::from(md.modified().unwrap_or(UNIX_EPOCH)),
    })
}

/// The size and SHA-256 of what `reader` holds from where it is to its end (`hint`: the size
/// expected, for the buffer).
pub(crate) fn hash_content(
    reader: &mut impl std::io::Read,
    hint: u64,
) -> std::io::Result<(u64, Vec<u8>)> {
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; usize::try_from(hint).unwrap_or(0).clamp(1, 64 * 1024)];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().to_vec()))
}

/// The generation a file had before generations were the content's: its modification time in
/// nanoseconds (for recognising files loaded by an earlier version).
pub(crate) fn legacy_generation(path: &Path) -> Option<String> {
    let md = std::fs::symlink_metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)?;
    let nanos = md
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(nanos.to_string())
}

/// What says a file has not changed since it was last looked at, without reading it: its
/// size, modification and change times and inode. The change time moves on every write and
/// cannot be set by hand, so an overwrite that keeps the old modification time (`cp -p`)
/// still changes it; a `touch` changes it too, and the content hash then tells that the
/// content (the generation) is the same.
fn stat_signature(md: &std::fs::Metadata) -> Signature {
    #[cfg(unix)]
    let stamp = {
        use std::os::unix::fs::MetadataExt as _;
        format!(
            "{}.{}:{}.{}:{}",
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec(),
            md.ino()
        )
    };
    #[cfg(not(unix))]
    let stamp = md
        .modified()
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    (md.len(), stamp)
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        let path = self.checked_path(bucket, name).await?;
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
        let path = self.checked_path(bucket, name).await?;
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
        // Never through a linked folder (a link itself is removed, not its target).
        let path = match self.checked_path(bucket, name).await {
            Ok(path) => path,
            Err(PortError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
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
        let (store, bucket, name) = (self.clone(), bucket.clone(), name.clone());
        let f = tokio::task::spawn_blocking(move || store.open_blocking(&bucket, &name))
            .await
            .map_err(|e| PortError::transient(format!("open object: {e}")))??;
        Ok(Box::pin(tokio::fs::File::from_std(f)))
    }

    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        let (store, bucket, name) = (self.clone(), bucket.clone(), name.clone());
        // The path checks and the metadata in one trip to a blocking thread.
        let meta = tokio::task::spawn_blocking(move || {
            let path = store.checked_path_blocking(&bucket, &name)?;
            meta_blocking(&bucket, &name, &path)
        })
        .await
        .map_err(|e| PortError::transient(format!("object metadata: {e}")))?;
        match meta {
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

impl LocalStore {
    /// The objects of `bucket` (visible regular files), on the calling thread.
    pub(crate) fn names_blocking(&self, bucket: &BucketName) -> Vec<ObjectName> {
        scan(&self.bucket_dir(bucket))
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

/// Every visible regular file under `dir`, with its (size, generation).
fn scan(dir: &Path) -> Vec<(ObjectName, (u64, String))> {
    scan_under(dir, dir)
}

/// Adds the visible regular files under `dir` to `out`, named relative to `root`; symbolic
/// links (to files or folders) are skipped, never followed.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(ObjectName, (u64, String))>) {
    {
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
                    Ok(n) => out.push((n, stat_signature(&md))),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "file name is not a valid object name; ignored")
                    }
                }
            }
        }
    }
}

/// Every visible regular file under `dir`, named relative to `root` (a bucket directory).
fn scan_under(root: &Path, dir: &Path) -> Vec<(ObjectName, (u64, String))> {
    let mut out = Vec::new();
    walk(root, dir, &mut out);
    out
}

/// Notices new or changed files in bucket directories.
///
/// File-system notifications (inotify on Linux, FSEvents on macOS, through the `notify`
/// crate) say which files changed, so only those are looked at; a full scan of the buckets
/// runs at start-up, whenever the notifications report lost events, and every
/// [`Watcher::RESCAN`] as a fallback (a network or container file system that sends no
/// notifications). Where notifications cannot be set up at all, the watcher scans every
/// `interval`, as before.
///
/// A file is announced once its size, modification and change times have held still for one
/// whole `interval`, so a file still being copied in is not loaded half-written; it is then
/// read once to name its content's generation, and announced only when that generation is
/// new (a `touch` announces nothing). Hidden names
/// (starting with `.`, such as the store's own temporary files) and symbolic links are
/// never announced, and links are never followed.
pub struct Watcher {
    store: LocalStore,
    buckets: Vec<BucketName>,
    /// Each bucket's directory as notifications may name it (absolute; with links resolved),
    /// where that differs from the store's (a relative state dir).
    resolved: HashMap<BucketName, Vec<PathBuf>>,
    interval: Duration,
    unsettled: Arc<AtomicUsize>,
    /// Files known to be loaded already, taken as announced at start (see
    /// [`Watcher::with_loaded`]).
    loaded: Vec<Key>,
}

type Key = (BucketName, ObjectName);
type Signature = (u64, String);

/// A file seen changing, waiting to hold still.
struct Pending {
    signature: Signature,
    since: tokio::time::Instant,
}

impl Watcher {
    /// How often the buckets are scanned in full while notifications work.
    pub const RESCAN: Duration = Duration::from_secs(30);

    /// A watcher of `buckets` in `store`.
    pub fn new(store: LocalStore, buckets: Vec<BucketName>, interval: Duration) -> Self {
        Self {
            store,
            buckets,
            resolved: HashMap::new(),
            interval,
            unsettled: Arc::new(AtomicUsize::new(0)),
            loaded: Vec::new(),
        }
    }

    /// Keeps the count of files seen but not yet announced (still changing, or waiting to
    /// hold still) in `gauge`: the runtime is not quiet while it is above zero.
    pub fn with_gauge(mut self, gauge: Arc<AtomicUsize>) -> Self {
        self.unsettled = gauge;
        self
    }

    /// Takes the files `loaded` (loaded already, under an earlier scheme of generations) as
    /// announced with their content as it is now: they are announced again only when they
    /// change.
    pub fn with_loaded(mut self, loaded: Vec<(BucketName, ObjectName)>) -> Self {
        self.loaded = loaded;
        self
    }

    /// Watches until `tx` is closed, sending each arrival once per generation.
    pub async fn run(mut self, tx: mpsc::UnboundedSender<ObjectRef>) {
        let (events_tx, mut events) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
        let _notifier = self.notifier(events_tx);
        for bucket in &self.buckets {
            let dir = self.store.bucket_dir(bucket);
            // Joined to the working directory as it is (what inotify reports for a relative
            // watch), and with links and `..` resolved (what FSEvents reports).
            let forms = [std::path::absolute(&dir), std::fs::canonicalize(&dir)];
            let mut resolved: Vec<PathBuf> = forms.into_iter().flatten().collect();
            resolved.retain(|p| p != &dir);
            resolved.dedup();
            self.resolved.insert(bucket.clone(), resolved);
        }
        let rescan_every = if _notifier.is_some() {
            Self::RESCAN.max(self.interval)
        } else {
            self.interval
        };
        let tick = (self.interval / 2).max(Duration::from_millis(5));
        let mut state = WatchState::default();
        let loaded: Vec<(Key, PathBuf)> = std::mem::take(&mut self.loaded)
            .into_iter()
            .map(|k| {
                let path = self.store.path(&k.0, &k.1);
                (k, path)
            })
            .collect();
        let seen = tokio::task::spawn_blocking(move || {
            loaded
                .into_iter()
                .filter_map(|(k, path)| {
                    let md = std::fs::symlink_metadata(&path).ok()?;
                    let meta = meta_blocking(&k.0, &k.1, &path).ok()?;
                    Some((k, stat_signature(&md), meta.object.generation))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (key, signature, generation) in seen {
            state.announced.insert(
                key,
                Announced {
                    signature,
                    generation,
                },
            );
        }
        self.rescan(&mut state).await;
        let mut next_rescan = tokio::time::Instant::now() + rescan_every;
        // One ticker (not a sleep per loop turn), so a stream of notifications cannot starve it.
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.unsettled.store(state.pending.len(), Ordering::SeqCst);
            tokio::select! {
                event = events.recv(), if _notifier.is_some() => {
                    match event {
                        Some(Ok(event)) if event.need_rescan() => self.rescan(&mut state).await,
                        // Reads (ours included: a scan opens folders) change nothing.
                        Some(Ok(event)) if is_read(&event.kind) => {}
                        Some(Ok(event)) => {
                            for path in event.paths {
                                self.noticed(&path, &mut state).await;
                            }
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "file notification error; rescanning");
                            self.rescan(&mut state).await;
                        }
                        None => {}
                    }
                }
                _ = ticker.tick() => {
                    if !self.settle(&mut state, &tx).await {
                        return;
                    }
                    if tokio::time::Instant::now() >= next_rescan {
                        self.rescan(&mut state).await;
                        next_rescan = tokio::time::Instant::now() + rescan_every;
                    }
                }
                () = tx.closed() => return,
            }
        }
    }

    /// Subscribes to notifications for every bucket directory; `None` (scan only) when the
    /// platform or its limits refuse.
    fn notifier(
        &self,
        events: mpsc::UnboundedSender<notify::Result<notify::Event>>,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let config = notify::Config::default().with_follow_symlinks(false);
        let handler = move |event: notify::Result<notify::Event>| {
            let _ = events.send(event);
        };
        let mut watcher = match notify::RecommendedWatcher::new(handler, config) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "file notifications unavailable; scanning buckets instead");
                return None;
            }
        };
        for bucket in &self.buckets {
            let dir = self.store.bucket_dir(bucket);
            let watched = std::fs::create_dir_all(&dir)
                .map_err(notify::Error::io)
                .and_then(|()| watcher.watch(&dir, notify::RecursiveMode::Recursive));
            if let Err(e) = watched {
                warn!(bucket = %bucket, error = %e, "file notifications unavailable; scanning buckets instead");
                return None;
            }
        }
        Some(watcher)
    }

    /// The bucket and object a path names, if it is a visible path inside a watched bucket.
    fn key_of(&self, path: &Path) -> Option<(BucketName, String)> {
        self.buckets.iter().find_map(|bucket| {
            let dir = self.store.bucket_dir(bucket);
            // Notifications name absolute paths; the store's root may be relative (the
            // default `--state-dir .conveyor`), so its resolved form is tried as well.
            let rel = path.strip_prefix(&dir).ok().or_else(|| {
                let resolved = self.resolved.get(bucket)?;
                resolved.iter().find_map(|r| path.strip_prefix(r).ok())
            })?;
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.is_empty() || parts.iter().any(|p| p.starts_with('.')) {
                return None;
            }
            Some((bucket.clone(), parts.join("/")))
        })
    }

    /// A notification named `path`: a file becomes pending, a new folder is scanned (its
    /// files may predate its watch), a removed file is forgotten.
    async fn noticed(&self, path: &Path, state: &mut WatchState) {
        let Some((bucket, rel)) = self.key_of(path) else {
            return;
        };
        let owned = path.to_path_buf();
        let md = tokio::task::spawn_blocking(move || std::fs::symlink_metadata(owned)).await;
        match md {
            Ok(Ok(md)) if md.is_dir() => {
                let root = self.store.bucket_dir(&bucket);
                let dir = path.to_path_buf();
                let found = tokio::task::spawn_blocking(move || scan_under(&root, &dir))
                    .await
                    .unwrap_or_default();
                for (name, sig) in found {
                    state.saw((bucket.clone(), name), sig);
                }
            }
            Ok(Ok(md)) if md.is_file() => match ObjectName::parse(&rel) {
                Ok(name) => state.saw((bucket, name), stat_signature(&md)),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "file name is not a valid object name; ignored");
                }
            },
            // A symbolic link or anything else that is not a file: not an object.
            Ok(Ok(_)) => {}
            _ => {
                if let Ok(name) = ObjectName::parse(&rel) {
                    let key = (bucket, name);
                    state.pending.remove(&key);
                    state.announced.remove(&key);
                }
            }
        }
    }

    /// Scans every bucket: new or changed files become pending; gone ones are forgotten.
    async fn rescan(&self, state: &mut WatchState) {
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
        state.announced.retain(|k, _| current.contains_key(k));
        state.pending.retain(|k, _| current.contains_key(k));
        for (key, sig) in current {
            state.saw(key, sig);
        }
    }

    /// Announces the pending files that held still for an interval. `false` when nobody
    /// listens any more.
    async fn settle(&self, state: &mut WatchState, tx: &mpsc::UnboundedSender<ObjectRef>) -> bool {
        let now = tokio::time::Instant::now();
        let due: Vec<Key> = state
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= self.interval)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return true;
        }
        let paths: Vec<(Key, PathBuf, Signature)> = due
            .into_iter()
            .filter_map(|k| {
                let path = self.store.path(&k.0, &k.1);
                let sig = state.pending.get(&k)?.signature.clone();
                Some((k, path, sig))
            })
            .collect();
        let checked = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|(k, path, held)| {
                    let seen = settled_blocking(&k, &path, &held);
                    (k, seen)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (key, seen) in checked {
            let Some(pending) = state.pending.get_mut(&key) else {
                continue;
            };
            let (sig, size, generation) = match seen {
                Seen::Gone => {
                    state.pending.remove(&key);
                    continue;
                }
                Seen::Changed(sig) => {
                    // Still changing: wait another interval.
                    pending.signature = sig;
                    pending.since = now;
                    continue;
                }
                Seen::Still {
                    signature,
                    size,
                    generation,
                } => (signature, size, generation),
            };
            state.pending.remove(&key);
            let same = state
                .announced
                .get(&key)
                .is_some_and(|a| a.generation == generation);
            state.announced.insert(
                key.clone(),
                Announced {
                    signature: sig,
                    generation: generation.clone(),
                },
            );
            if same {
                // Touched (or rewritten with the same bytes): the same generation, loaded.
                continue;
            }
            let object = ObjectRef {
                bucket: key.0,
                name: key.1,
                generation,
                size: Some(size),
            };
            if tx.send(object).is_err() {
                return false;
            }
        }
        true
    }
}

/// What a pending file is after its interval.
enum Seen {
    /// Gone, or no longer a regular file.
    Gone,
    /// Changed during the interval (its new signature).
    Changed(Signature),
    /// Held still: its content's generation.
    Still {
        signature: Signature,
        size: u64,
        generation: String,
    },
}

/// Whether the file at `path` held still at `held`, and then its content's generation (the
/// file is read to hash it; a file that changes while it is read is looked at again).
fn settled_blocking(key: &Key, path: &Path, held: &Signature) -> Seen {
    let Some(md) = std::fs::symlink_metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
    else {
        return Seen::Gone;
    };
    let signature = stat_signature(&md);
    if &signature != held {
        return Seen::Changed(signature);
    }
    let Ok(meta) = meta_blocking(&key.0, &key.1, path) else {
        return Seen::Gone;
    };
    match std::fs::symlink_metadata(path).map(|md| stat_signature(&md)) {
        Ok(after) if after == signature => Seen::Still {
            signature,
            size: meta.object.size.unwrap_or(0),
            generation: meta.object.generation,
        },
        Ok(after) => Seen::Changed(after),
        Err(_) => Seen::Gone,
    }
}

/// Whether a notification only says something was opened or read.
fn is_read(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}

/// What the watcher knows: files waiting to hold still, and what it announced.
#[derive(Default)]
struct WatchState {
    pending: HashMap<Key, Pending>,
    announced: HashMap<Key, Announced>,
}

/// A file the watcher announced: as it was on disk then, and its content's generation.
struct Announced {
    signature: Signature,
    generation: String,
}

impl WatchState {
    /// A file was seen with `sig`: pending unless already announced as it is.
    fn saw(&mut self, key: Key, sig: Signature) {
        if self.announced.get(&key).is_some_and(|a| a.signature == sig) {
            return;
        }
        let now = tokio::time::Instant::now();
        match self.pending.get_mut(&key) {
            Some(p) if p.signature == sig => {}
            Some(p) => {
                p.signature = sig;
                p.since = now;
            }
            None => {
                self.pending.insert(
                    key,
                    Pending {
                        signature: sig,
                        since: now,
                    },
                );
            }
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

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_inside_a_bucket_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret.csv"), "a\n1\n").unwrap();
        std::fs::write(outside.join("sub/inner.csv"), "a\n2\n").unwrap();
        let store = LocalStore::new(dir.path().join("buckets")).unwrap();
        let b = BucketName::parse("landing").unwrap();
        let bucket = store.bucket_dir(&b);
        std::fs::create_dir_all(&bucket).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.csv"), bucket.join("link.csv")).unwrap();
        std::os::unix::fs::symlink(outside.join("sub"), bucket.join("dir")).unwrap();
        std::fs::write(bucket.join("real.csv"), "a\n3\n").unwrap();

        for name in ["link.csv", "dir/inner.csv"] {
            let name = ObjectName::parse(name).unwrap();
            assert!(
                store.head(&b, &name).await.unwrap().is_none(),
                "head {name}"
            );
            assert!(
                matches!(store.open(&b, &name).await, Err(PortError::NotFound(_))),
                "open {name}"
            );
        }
        let written = store
            .put(
                &b,
                &ObjectName::parse("dir/new.csv").unwrap(),
                Box::pin(&b"x"[..]),
            )
            .await;
        assert!(written.is_err(), "a write through a linked folder");
        assert!(!outside.join("sub/new.csv").exists());
        let listed: Vec<String> = store
            .list(&b, "")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.object.name.to_string())
            .collect();
        assert_eq!(listed, ["real.csv"]);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(Watcher::new(store, vec![b], Duration::from_millis(20)).run(tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.name.as_str(), "real.csv");
        std::os::unix::fs::symlink(outside.join("secret.csv"), bucket.join("later.csv")).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "a symbolic link was announced"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_name_segment_too_long_for_the_file_system_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let b = BucketName::parse("landing").unwrap();
        let name = ObjectName::parse(&format!("x/{}.csv", "a".repeat(300))).unwrap();
        std::fs::create_dir_all(dir.path().join("landing/x")).unwrap();
        let head = store.head(&b, &name).await;
        assert!(matches!(head, Err(PortError::Permanent(_))), "{head:?}");
        let open = store.open(&b, &name).await;
        assert!(
            matches!(open, Err(PortError::Permanent(_))),
            "{:?}",
            open.err()
        );
        let put = store.put(&b, &name, Box::pin(&b"x"[..])).await;
        assert!(matches!(put, Err(PortError::Permanent(_))), "{put:?}");
    }

    #[tokio::test]
    async fn the_watcher_notices_files_written_later_without_waiting_for_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let b = BucketName::parse("landing").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let gauge = Arc::new(AtomicUsize::new(0));
        let w = Watcher::new(store.clone(), vec![b.clone()], Duration::from_millis(50))
            .with_gauge(gauge.clone());
        let task = tokio::spawn(w.run(tx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A new folder and files in it, after the watch started (Watcher::RESCAN is 30 s).
        std::fs::create_dir_all(dir.path().join("landing/d/e")).unwrap();
        std::fs::write(dir.path().join("landing/d/e/one.csv"), "a\n1\n").unwrap();
        store
            .put(
                &b,
                &ObjectName::parse("d/two.csv").unwrap(),
                Box::pin(&b"a\n2\n"[..]),
            )
            .await
            .unwrap();
        let mut names = Vec::new();
        for _ in 0..2 {
            let o = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("announced within 5 s")
                .unwrap();
            names.push(o.name.to_string());
        }
        names.sort();
        assert_eq!(names, ["d/e/one.csv", "d/two.csv"]);
        assert_eq!(gauge.load(Ordering::SeqCst), 0);
        // A rewrite is a new generation, announced again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::fs::write(dir.path().join("landing/d/e/one.csv"), "a\n1\n2\n").unwrap();
        let again = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.name.as_str(), again.size), ("d/e/one.csv", Some(6)));
        task.abort();
    }

    async fn next_arrival(
        rx: &mut mpsc::UnboundedReceiver<ObjectRef>,
        within: Duration,
    ) -> Option<ObjectRef> {
        tokio::time::timeout(within, rx.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn a_touched_file_is_not_announced_again_and_an_overwrite_keeping_its_mtime_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let b = BucketName::parse("landing").unwrap();
        let path = dir.path().join("landing/a.csv");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "a\n1\n").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            Watcher::new(store.clone(), vec![b.clone()], Duration::from_millis(20)).run(tx),
        );
        let first = next_arrival(&mut rx, Duration::from_secs(5))
            .await
            .expect("announced");
        let old_mtime = std::fs::metadata(&path).unwrap().modified().unwrap();

        // `touch`: a new modification time, the same bytes: the same generation.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
        drop(f);
        assert!(
            next_arrival(&mut rx, Duration::from_millis(500))
                .await
                .is_none(),
            "a touch was announced as a new generation"
        );
        let head = store
            .head(&b, &ObjectName::parse("a.csv").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            head.object.generation, first.generation,
            "touch changed the generation"
        );

        // `cp -p`: other bytes of the same size, with the old modification time.
        std::fs::write(&path, "a\n2\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(old_mtime).unwrap();
        drop(f);
        let second = next_arrival(&mut rx, Duration::from_secs(5))
            .await
            .expect("the overwrite is announced");
        assert_ne!(second.generation, first.generation);
        assert!(
            next_arrival(&mut rx, Duration::from_millis(300))
                .await
                .is_none(),
            "announced twice"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_relative_state_dir_is_watched_through_notifications() {
        let dir = tempfile::tempdir().unwrap();
        // The same directory named relative to the working directory (as `--state-dir
        // .conveyor` is), without changing the working directory of the test process.
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        let target = dir.path().canonicalize().unwrap();
        let ups = cwd.components().count() - 1;
        let mut relative = PathBuf::new();
        for _ in 0..ups {
            relative.push("..");
        }
        relative.push(target.strip_prefix("/").unwrap());
        assert!(relative.is_relative());
        let store = LocalStore::new(&relative).unwrap();
        let b = BucketName::parse("landing").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let gauge = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(
            Watcher::new(store, vec![b], Duration::from_millis(20))
                .with_gauge(gauge.clone())
                .run(tx),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(target.join("landing/late.csv"), "a\n1\n").unwrap();
        // Watcher::RESCAN is 30 s: only a notification announces it this soon.
        let o = next_arrival(&mut rx, Duration::from_secs(5))
            .await
            .expect("noticed without waiting for the rescan");
        assert_eq!(o.name.as_str(), "late.csv");
        task.abort();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_fifo_or_a_folder_named_as_an_object_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let b = BucketName::parse("landing").unwrap();
        std::fs::create_dir_all(dir.path().join("landing/folder")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join("landing/pipe"))
            .status()
            .unwrap();
        assert!(made.success());
        let within = Duration::from_secs(5);
        let fifo = ObjectName::parse("pipe").unwrap();
        let head = tokio::time::timeout(within, store.head(&b, &fifo))
            .await
            .expect("no wait");
        assert!(matches!(head, Err(PortError::Permanent(_))), "{head:?}");
        let open = tokio::time::timeout(within, store.open(&b, &fifo))
            .await
            .expect("no wait");
        assert!(
            matches!(open, Err(PortError::Permanent(_))),
            "{:?}",
            open.err()
        );
        let blocking = store.open_blocking(&b, &fifo);
        assert!(
            matches!(blocking, Err(PortError::Permanent(_))),
            "{blocking:?}"
        );
        let folder = ObjectName::parse("folder").unwrap();
        assert!(
            store.head(&b, &folder).await.unwrap().is_none(),
            "a folder is no object"
        );
        assert!(matches!(
            store.open(&b, &folder).await,
            Err(PortError::NotFound(_))
        ));
    }
}
